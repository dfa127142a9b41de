import numpy as np
import pytest

from fwp.data import load_dataset
from fwp.errors import UserError
from tests.data.trees import (
    make_csv_layout,
    make_folder,
    make_miniimagenet_hdf5,
    make_miniimagenet_pickle,
)


def test_pickle_layout(tmp_path):
    make_miniimagenet_pickle(tmp_path, "train", classes=4, per_class=3)
    make_miniimagenet_pickle(tmp_path, "test", classes=2, per_class=5)
    train = load_dataset("miniimagenet", tmp_path, "train")
    assert (train.num_classes, train.num_images, train.image_shape) == (4, 12, (3, 84, 84))
    assert load_dataset("miniimagenet", tmp_path, "test").num_classes == 2
    # Class c owns the pickle's images c, c + 4, c + 8 (class_dict), in that order.
    import pickle

    with open(tmp_path / "mini-imagenet-cache-train.pkl", "rb") as f:
        raw = pickle.load(f)["image_data"]
    assert np.array_equal(train.gather_uint8(np.array([1, 1]), np.array([0, 2])), raw[[1, 9]])
    with pytest.raises(UserError, match="no Mini-ImageNet 'val' split.*mini-imagenet-cache-val"):
        load_dataset("miniimagenet", tmp_path, "val")


@pytest.mark.parametrize("nested", [False, True])
def test_hdf5_layout_of_the_public_code(tmp_path, nested):
    pytest.importorskip("h5py")
    folder = tmp_path / "miniimagenet" if nested else tmp_path
    images = make_miniimagenet_hdf5(folder, "test", classes=3, per_class=4)
    test = load_dataset("miniimagenet", tmp_path, "test")
    assert (test.num_classes, test.num_images, test.image_shape) == (3, 12, (3, 84, 84))
    assert test.class_names == ["n00000000", "n00000001", "n00000002"]
    assert np.array_equal(test.gather_uint8(np.array([2, 0]), np.array([3, 1])),
                          images[[2, 0], [3, 1]])
    small = load_dataset("miniimagenet", tmp_path, "test", image_size=20)
    assert small.image_shape == (3, 20, 20)
    with pytest.raises(UserError, match="expected .*val_data.hdf5"):
        load_dataset("miniimagenet", tmp_path, "val")


def test_bad_hdf5_is_named(tmp_path):
    pytest.importorskip("h5py")
    make_miniimagenet_hdf5(tmp_path, "train", classes=2, per_class=2, size=8)
    (tmp_path / "train_labels.json").write_text('["n00000000", "n99999999"]')
    with pytest.raises(UserError, match="lists classes that .* does not hold: n99999999"):
        load_dataset("miniimagenet", tmp_path, "train")
    (tmp_path / "train_data.hdf5").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read .*train_data.hdf5 as a Mini-ImageNet HDF5"):
        load_dataset("miniimagenet", tmp_path, "train")


def test_bad_pickle_is_named(tmp_path):
    (tmp_path / "mini-imagenet-cache-train.pkl").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read .*mini-imagenet-cache-train.pkl"):
        load_dataset("miniimagenet", tmp_path, "train")


def test_csv_layout(tmp_path):
    make_csv_layout(tmp_path, "val", classes=3, per_class=4)
    val = load_dataset("miniimagenet", tmp_path, "val", image_size=12)
    assert (val.num_classes, val.num_images, val.image_shape) == (3, 12, (3, 12, 12))
    assert val.class_names == ["nval0000", "nval0001", "nval0002"]


def test_csv_missing_image_is_named(tmp_path):
    make_csv_layout(tmp_path, "test", classes=2, per_class=2)
    (tmp_path / "images" / "test01001.jpg").unlink()
    with pytest.raises(UserError, match="test01001.jpg.*does not exist"):
        load_dataset("miniimagenet", tmp_path, "test")


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match="not a folder.*--data-root"):
        load_dataset("miniimagenet", tmp_path / "nowhere")


def test_folder_with_split_folders(tmp_path):
    make_folder(tmp_path / "train", classes=3, per_class=2)
    make_folder(tmp_path / "test", classes=2, per_class=4, size=6)
    train = load_dataset("folder", tmp_path, "train")
    assert (train.num_classes, train.num_images, train.image_shape) == (3, 6, (1, 10, 10))
    assert load_dataset("folder", tmp_path, "test", image_size=10).image_shape == (1, 10, 10)
    with pytest.raises(UserError, match="no 'val/'"):
        load_dataset("folder", tmp_path, "val")


def test_folder_seeded_split_is_disjoint_and_complete(tmp_path):
    make_folder(tmp_path, classes=10, per_class=2)
    names = [set(load_dataset("folder", tmp_path, s).class_names) for s in ("train", "val", "test")]
    assert sum(map(len, names)) == 10 and len(set.union(*names)) == 10
    other_seed = set(load_dataset("folder", tmp_path, "train", seed=1).class_names)
    assert len(names[0]) == len(other_seed)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("folder", tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match=r"no class folders.*found \['notes.txt'\]"):
        load_dataset("folder", tmp_path)
    make_folder(tmp_path, classes=3, per_class=2)
    (tmp_path / "class09").mkdir()
    with pytest.raises(UserError, match="class09 has no images"):
        load_dataset("folder", tmp_path)
    (tmp_path / "class09" / "broken.png").write_bytes(b"\x89PNG nope")
    with pytest.raises(UserError, match="cannot read image .*broken.png"):
        load_dataset("folder", tmp_path)


def test_load_dataset_checks_its_arguments(tmp_path):
    with pytest.raises(UserError, match="unknown data set 'imagenet'.*glyphs"):
        load_dataset("imagenet")
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load_dataset("glyphs", split="dev")
    with pytest.raises(UserError, match="no option rotation.*rotations"):
        load_dataset("omniglot", tmp_path, rotation=True)
    with pytest.raises(UserError, match="pass --data-root"):
        load_dataset("omniglot")
    with pytest.raises(UserError, match="built in"):
        load_dataset("glyphs", tmp_path)
