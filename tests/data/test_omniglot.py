import numpy as np
import pytest

from fwp.data import load_dataset
from fwp.errors import UserError
from tests.data.trees import ink_png, make_omniglot, zip_folder

BACKGROUND = {"Alpha": 2, "Beta": 3, "Gamma": 2, "Delta": 3}
EVALUATION = {"Omega": 2, "Psi": 1}


@pytest.fixture
def omniglot(tmp_path):
    make_omniglot(tmp_path, "images_background", BACKGROUND)
    make_omniglot(tmp_path, "images_evaluation", EVALUATION)
    return tmp_path


def test_lake_split_counts_and_seeded_val_carve_out(omniglot):
    splits = {
        s: load_dataset("omniglot", omniglot, s, val_fraction=0.2) for s in ("train", "val", "test")
    }
    assert splits["test"].num_classes == 3 and splits["test"].num_images == 9
    assert splits["train"].num_classes + splits["val"].num_classes == 10
    assert splits["val"].num_classes >= 2  # at least 20 % of 10 characters, whole alphabets
    train_alphabets = set(splits["train"].class_groups)
    val_alphabets = set(splits["val"].class_groups)
    assert train_alphabets.isdisjoint(val_alphabets)
    assert all(g.startswith("images_background/") for g in train_alphabets | val_alphabets)
    assert all(n.startswith("images_evaluation/") for n in splits["test"].class_names)
    again = load_dataset("omniglot", omniglot, "val", val_fraction=0.2)
    assert again.class_names == splits["val"].class_names
    carve_outs = {
        tuple(load_dataset("omniglot", omniglot, "val", val_fraction=0.2, seed=s).class_names)
        for s in range(8)
    }
    assert len(carve_outs) > 1  # the seed picks the alphabets


def test_images_are_resized_with_ink_as_foreground(omniglot):
    dataset = load_dataset("omniglot", omniglot, "test")
    assert dataset.image_shape == (1, 28, 28)
    image = dataset.class_images(0)[0, 0]  # mark 0: ink in the top-left quarter-cell
    assert image[1:6, 1:6].mean() > 0.8 and image[14:, 14:].mean() < 0.1


def test_zip_files_read_without_unpacking(omniglot, tmp_path_factory):
    zipped = tmp_path_factory.mktemp("zipped")
    for source in ("images_background", "images_evaluation"):
        zip_folder(omniglot / source, zipped / f"{source}.zip")
    for split in ("train", "test"):
        a = load_dataset("omniglot", omniglot, split)
        b = load_dataset("omniglot", zipped, split)
        assert a.class_names == b.class_names
        assert np.array_equal(np.asarray(a.images), np.asarray(b.images))


def test_small_background_sets_and_a_set_folder_as_root(tmp_path):
    make_omniglot(tmp_path, "images_background_small1", {"Alpha": 2, "Beta": 1})
    make_omniglot(tmp_path, "images_background_small2", {"Gamma": 2})
    train = load_dataset("omniglot", tmp_path, "train", val_fraction=0.0)
    assert train.num_classes == 5
    one_set = load_dataset("omniglot", tmp_path / "images_background_small1", val_fraction=0.0)
    assert one_set.num_classes == 3
    with pytest.raises(UserError, match="images_evaluation"):
        load_dataset("omniglot", tmp_path, "test")
    with pytest.raises(UserError, match="whole alphabets.*only 1"):
        load_dataset("omniglot", tmp_path / "images_background_small2", "val")


def test_rotations_are_new_classes(omniglot):
    plain = load_dataset("omniglot", omniglot, "test")
    turned = load_dataset("omniglot", omniglot, "test", rotations=True)
    assert turned.num_classes == 4 * plain.num_classes
    assert turned.class_names[plain.num_classes] == plain.class_names[0] + "/rot090"
    base = plain.class_images(0).numpy()
    for k in (1, 2, 3):
        rotated = turned.class_images(k * plain.num_classes).numpy()
        assert np.array_equal(rotated, np.rot90(base, k, axes=(2, 3)))


# Omniglot's real alphabets and their character counts (Lake et al. 2015: 964 + 659).
FULL_BACKGROUND = {
    "Alphabet_of_the_Magi": 20,
    "Anglo-Saxon_Futhorc": 29,
    "Arcadian": 26,
    "Armenian": 41,
    "Asomtavruli_(Georgian)": 40,
    "Balinese": 24,
    "Bengali": 46,
    "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14,
    "Braille": 26,
    "Burmese_(Myanmar)": 34,
    "Cyrillic": 33,
    "Early_Aramaic": 22,
    "Futurama": 26,
    "Grantha": 43,
    "Greek": 24,
    "Gujarati": 48,
    "Hebrew": 22,
    "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16,
    "Japanese_(hiragana)": 52,
    "Japanese_(katakana)": 47,
    "Korean": 40,
    "Latin": 26,
    "Malay_(Jawi_-_Arabic)": 40,
    "Mkhedruli_(Georgian)": 41,
    "N_Ko": 33,
    "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14,
    "Sanskrit": 42,
    "Syriac_(Estrangelo)": 23,
    "Tagalog": 17,
    "Tifinagh": 55,
}
FULL_EVALUATION = {
    "Angelic": 20,
    "Atemayar_Qelisayer": 26,
    "Atlantean": 26,
    "Aurek-Besh": 26,
    "Avesta": 26,
    "Ge_ez": 26,
    "Glagolitic": 45,
    "Gurmukhi": 45,
    "Kannada": 41,
    "Keble": 26,
    "Malayalam": 47,
    "Manipuri": 40,
    "Mongolian": 30,
    "Old_Church_Slavonic_(Cyrillic)": 45,
    "Oriya": 46,
    "Sylheti": 28,
    "Syriac_(Serto)": 23,
    "Tengwar": 25,
    "Tibetan": 42,
    "ULOG": 26,
}


def test_vinyals_split_on_a_full_size_tree(tmp_path):
    assert sum(FULL_BACKGROUND.values()) == 964 and sum(FULL_EVALUATION.values()) == 659
    make_omniglot(tmp_path, "images_background", FULL_BACKGROUND, drawers=1, size=4)
    make_omniglot(tmp_path, "images_evaluation", FULL_EVALUATION, drawers=1, size=4)
    splits = {
        s: load_dataset("omniglot", tmp_path, s, split_scheme="vinyals", image_size=4)
        for s in ("train", "val", "test")
    }
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [1028, 172, 423]
    names = {s: set(d.class_names) for s, d in splits.items()}
    assert not (
        names["train"] & names["val"]
        or names["train"] & names["test"]
        or names["val"] & names["test"]
    )
    assert {g.split("/")[1] for g in splits["val"].class_groups} == {
        "Armenian",
        "Bengali",
        "Early_Aramaic",
        "Hebrew",
        "Mkhedruli_(Georgian)",
    }
    # As in the split files of Prototypical Networks, Gurmukhi is cut after character41.
    assert "images_evaluation/Gurmukhi/character41" in names["train"]
    assert "images_evaluation/Gurmukhi/character42" in names["test"]
    rotated = load_dataset(
        "omniglot", tmp_path, "val", split_scheme="vinyals", image_size=4, rotations=True
    )
    assert rotated.num_classes == 4 * 172


def test_vinyals_split_needs_the_full_set(omniglot):
    with pytest.raises(UserError, match="full Omniglot set.*split_scheme='lake'"):
        load_dataset("omniglot", omniglot, "train", split_scheme="vinyals")


def test_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(UserError, match="does not exist.*images_background"):
        load_dataset("omniglot", tmp_path / "nowhere")
    (tmp_path / "pictures").mkdir()
    with pytest.raises(UserError, match=r"expected images_background.*found \['pictures'\]"):
        load_dataset("omniglot", tmp_path)


def test_empty_class_is_named(omniglot):
    (omniglot / "images_background" / "Alpha" / "character09").mkdir()
    with pytest.raises(UserError, match="Alpha/character09 has no images"):
        load_dataset("omniglot", omniglot)


def test_unreadable_image_is_named(omniglot):
    bad = omniglot / "images_evaluation" / "Psi" / "character01" / "0001_09.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image .*0001_09.png"):
        load_dataset("omniglot", omniglot, "test")


def test_cache_is_reused_and_refreshed(omniglot, private_cache):
    load_dataset("omniglot", omniglot, "test")
    entries = set((private_cache / "omniglot").iterdir())
    load_dataset("omniglot", omniglot, "test")
    assert set((private_cache / "omniglot").iterdir()) == entries
    ink_png(omniglot / "images_evaluation" / "Psi" / "character02" / "x.png", 8, 3)
    assert load_dataset("omniglot", omniglot, "test").num_classes == 4


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_zip_is_one_line_naming_it(omniglot, tmp_path_factory, damage):
    """A download cut short (no central directory) or bytes flipped inside a member (bad CRC):
    one UserError naming the zip and the fix, not zipfile.BadZipFile."""
    zipped = tmp_path_factory.mktemp("damaged")
    path = zipped / "images_background.zip"
    zip_folder(omniglot / "images_background", path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        first_png = data.index(b"IDAT")  # inside the first image's data: the CRC no longer fits
        data[first_png + 8 : first_png + 24] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"images_background\.zip.*truncated or corrupt; "
                                        r"download it again"):
        load_dataset("omniglot", zipped, "train", val_fraction=0.0)
