"""``glyphs``: a built-in few-shot data set of letters of many writing systems, rendered from fonts.

The DejaVu fonts that ship with matplotlib (Sans, Serif and Mono, each regular / bold / oblique /
bold-oblique) cover about 15 scripts with real letters. A class is one letter (Unicode categories
Lu, Ll, Lt, Lo) that is not an accent variant of another: letters with a decomposition (é = e + ´,
ﬁ = f + i, ...) or named "... WITH ..." (ø, ƀ, ...) are dropped, and so is every letter whose
glyph, scaled to fill a box, looks like one already kept (Latin A, Greek Alpha and Cyrillic A are
one class, so are o and O). Splits go by script, like Omniglot's alphabets, so train, val and test
share no script and no look-alike letter.

Sample ``s`` of class ``c`` is a pure function of (code point of ``c``, ``s``, ``seed``): a face
among those that cover the letter, stroke thickening or thinning, a random affine (scale, aspect,
shear, rotation, shift), ink intensity and pixel noise. Images are ``image_size``² x 1, ink as
foreground. The whole set is rendered once (about 1,000 classes x 20 samples, seconds on two
cores) into the cache. Exact pixels depend on the FreeType that Pillow bundles; the cache key
records its version.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from fwp.data.cache import ImageStore, cache_key, cached_store
from fwp.data.dataset import FewShotDataset
from fwp.data.images import process_pool
from fwp.errors import UserError

# Script -> (split, Unicode blocks). The order is the priority when two letters look alike.
SCRIPTS: dict[str, tuple[str, tuple[tuple[int, int], ...]]] = {
    "Latin": (
        "train",
        (
            (0x0041, 0x02AF),
            (0x1D00, 0x1DBF),
            (0x1E00, 0x1EFF),
            (0x2100, 0x214F),
            (0x2C60, 0x2C7F),
            (0xA720, 0xA7FF),
            (0xAB30, 0xAB6F),
        ),
    ),
    "Greek": ("train", ((0x0370, 0x03E1), (0x03F0, 0x03FF), (0x1F00, 0x1FFF))),
    "Cyrillic": ("train", ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0xA640, 0xA69F))),
    "Canadian Syllabics": ("train", ((0x1400, 0x167F), (0x18B0, 0x18FF))),
    "Arabic": ("train", ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF))),
    "Hebrew": ("train", ((0x0590, 0x05FF),)),
    "Tifinagh": ("val", ((0x2D30, 0x2D7F),)),
    "Old Italic": ("val", ((0x10300, 0x1032F),)),
    "Ogham": ("val", ((0x1680, 0x169F),)),
    "Coptic": ("val", ((0x03E2, 0x03EF), (0x2C80, 0x2CFF))),
    "Lisu": ("val", ((0xA4D0, 0xA4FF),)),
    "Georgian": ("test", ((0x10A0, 0x10FF), (0x1C90, 0x1CBF), (0x2D00, 0x2D2F))),
    "Armenian": ("test", ((0x0530, 0x058F),)),
    "Lao": ("test", ((0x0E80, 0x0EFF),)),
    "NKo": ("val", ((0x07C0, 0x07FF),)),
    "Braille": ("test", ((0x2800, 0x28FF),)),
}
FACES = tuple(
    f"DejaVu{family}{style}.ttf"
    for family in ("Sans", "Serif", "SansMono")
    for style in (
        "",
        "-Bold",
        "-Oblique" if family != "Serif" else "-Italic",
        "-BoldOblique" if family != "Serif" else "-BoldItalic",
    )
)
LETTERS = ("Lu", "Ll", "Lt", "Lo")
RENDER_PX = 64  # font size of the high-resolution drawing every sample is cut from
DEDUP_PX = 32
# Root-mean-square difference of two normalised glyphs below which they are one class; looser
# for two cases of one letter (or a small capital): once scaled they differ mostly in weight.
DEDUP_RMS, DEDUP_RMS_CASE = 0.125, 0.25
FAMILY_RMS = 0.25  # a font family whose letter differs more than this from the first is left out
VERSION = 2  # bump when the rendering changes


@dataclass(frozen=True)
class GlyphClass:
    """One class: a letter, its script, and the font faces that draw it."""

    codepoint: int
    script: str
    faces: tuple[str, ...]

    @property
    def name(self) -> str:
        ch = chr(self.codepoint)
        return f"U+{self.codepoint:04X} {ch} {unicodedata.name(ch, '')}"

    @property
    def split(self) -> str:
        return SCRIPTS[self.script][0]


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@cache
def _font(face: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_dir() / face), size)


def _script_of(codepoint: int) -> str | None:
    for script, (_, blocks) in SCRIPTS.items():
        if any(lo <= codepoint <= hi for lo, hi in blocks):
            return script
    return None


def _draw(ch: str, face: str, stroke: int = 0) -> np.ndarray:
    """The letter in white on black, cropped to its ink (uint8 [h, w]); empty if no ink."""
    from PIL import Image, ImageDraw

    font = _font(face, RENDER_PX)
    left, top, right, bottom = font.getbbox(ch, stroke_width=stroke)
    pad = 4
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(image).text(
        (pad - left, pad - top), ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255
    )
    box = image.getbbox()
    return np.asarray(image.crop(box)) if box else np.zeros((0, 0), np.uint8)


def _has_ink(ch: str, face: str) -> bool:
    left, top, right, bottom = _font(face, RENDER_PX).getbbox(ch)
    return right > left and bottom > top


def _normalised(glyph: np.ndarray) -> np.ndarray:
    """The glyph scaled to fill a DEDUP_PX box (aspect kept), blurred, float in [0, 1]."""
    from PIL import Image, ImageFilter

    h, w = glyph.shape
    scale = (DEDUP_PX - 4) / max(h, w)
    small = Image.fromarray(glyph).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
    )
    box = Image.new("L", (DEDUP_PX, DEDUP_PX), 0)
    box.paste(small, ((DEDUP_PX - small.width) // 2, (DEDUP_PX - small.height) // 2))
    return np.asarray(box.filter(ImageFilter.GaussianBlur(1)), np.float32).reshape(-1) / 255


@cache
def glyph_classes() -> tuple[GlyphClass, ...]:
    """All classes, in script priority order then code point order (deterministic)."""
    from fontTools.ttLib import TTFont

    coverage = {face: set(TTFont(font_dir() / face, lazy=True).getBestCmap()) for face in FACES}
    candidates: list[GlyphClass] = []
    for cp in sorted(set().union(*coverage.values())):
        ch = chr(cp)
        script = _script_of(cp)
        if (
            script is None
            or unicodedata.category(ch) not in (("So",) if script == "Braille" else LETTERS)
            or unicodedata.decomposition(ch)
            or " WITH " in unicodedata.name(ch, "")
        ):
            continue
        faces = _consistent_faces(ch, [f for f in FACES if cp in coverage[f] and _has_ink(ch, f)])
        if faces:
            candidates.append(GlyphClass(cp, script, faces))
    priority = list(SCRIPTS)
    candidates.sort(key=lambda g: (priority.index(g.script), g.codepoint))
    vectors = np.stack([_normalised(_draw(chr(g.codepoint), g.faces[0])) for g in candidates])
    names = [_case_free_name(g.codepoint) for g in candidates]
    letter = np.unique(names, return_inverse=True)[1]
    kept: list[int] = []
    kept_vectors = np.empty_like(vectors)
    for i, v in enumerate(vectors):
        n = len(kept)
        rms = np.sqrt(((kept_vectors[:n] - v) ** 2).mean(1))
        if (rms < np.where(letter[kept] == letter[i], DEDUP_RMS_CASE, DEDUP_RMS)).any():
            continue
        kept_vectors[n] = v
        kept.append(i)
    return tuple(candidates[i] for i in kept)


def _consistent_faces(ch: str, faces: list[str]) -> tuple[str, ...]:
    """The faces whose family draws ``ch`` like the first family does: some families draw a few
    letters in another style altogether (e.g. Georgian Nuskhuri), which would split one class."""
    families = {_family(face): face for face in reversed(faces)}  # family -> its first face
    if not families:
        return ()
    first = _normalised(_draw(ch, faces[0]))
    alike = {
        family
        for family, face in families.items()
        if np.sqrt(((_normalised(_draw(ch, face)) - first) ** 2).mean()) < FAMILY_RMS
    }
    return tuple(face for face in faces if _family(face) in alike)


def _family(face: str) -> str:
    return face.removesuffix(".ttf").split("-")[0]


def _case_free_name(codepoint: int) -> str:
    """The Unicode name without case words: "LATIN SMALL LETTER A" -> "LATIN LETTER A"."""
    words = unicodedata.name(chr(codepoint), "").split()
    return " ".join(w for w in words if w not in ("SMALL", "CAPITAL"))


def inked(glyph: GlyphClass, rng: np.random.Generator) -> Any:
    """``glyph`` drawn in a random face of its class and a random stroke (a PIL image, white
    ink on black, cropped to the ink): thinned by erosion, or thickened by 1 to 3 pixels."""
    from PIL import Image, ImageFilter

    face = glyph.faces[rng.integers(len(glyph.faces))]
    thickness = int(rng.integers(-1, 4))  # -1 thins by erosion, 1..3 thickens by a stroke
    image = Image.fromarray(_draw(chr(glyph.codepoint), face, stroke=max(thickness, 0)))
    if thickness < 0:
        thinner = image.filter(ImageFilter.MinFilter(3))
        if thinner.getbbox():
            image = thinner
    return image


def placed(image: Any, out: int, scale: float, max_aspect: float, max_angle: float,
           max_shear: float, centre: Any, rng: np.random.Generator) -> Any:
    """``image`` scaled by ``scale`` (times a random aspect ratio e^±max_aspect), rotated by up
    to ``max_angle`` degrees, sheared by up to ``max_shear``, its centre at ``centre`` (pixels,
    or a function of ``rng`` giving them, drawn after the other draws) on an ``out``² canvas."""
    from PIL import Image

    w, h = image.size
    aspect = np.exp(rng.uniform(-max_aspect, max_aspect))
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle))
    shear = rng.uniform(-max_shear, max_shear)
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotate @ np.array([[1, shear], [0, 1]]) @ np.diag([scale * aspect, scale / aspect])
    centre = centre(rng) if callable(centre) else centre
    inverse = np.linalg.inv(forward)
    offset = np.array([w / 2, h / 2]) - inverse @ centre
    return image.transform(
        (out, out),
        Image.Transform.AFFINE,
        (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1]),
        resample=Image.Resampling.BILINEAR,
    )


def render_sample(glyph: GlyphClass, index: int, seed: int, image_size: int = 28) -> np.ndarray:
    """Sample ``index`` of ``glyph``: uint8 ``[image_size, image_size]``, a pure function of its
    arguments."""
    rng = np.random.default_rng([seed, glyph.codepoint, index])
    image = inked(glyph, rng)
    out = 2 * image_size  # drawn at twice the size, then averaged down: anti-aliasing
    scale = rng.uniform(0.6, 0.85) * out / max(image.size)
    image = placed(image, out, scale, 0.15, 12, 0.2,
                   lambda r: out / 2 + r.uniform(-0.07, 0.07, size=2) * out, rng).reduce(2)
    pixels = np.asarray(image, np.float32) * rng.uniform(0.75, 1.0)
    pixels += rng.normal(0, rng.uniform(0, 18), size=pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _render_classes(
    glyphs: tuple[GlyphClass, ...], samples: int, seed: int, image_size: int
) -> np.ndarray:
    return np.stack(
        [render_sample(g, s, seed, image_size)[:, :, None] for g in glyphs for s in range(samples)]
    )


def renderer_fingerprint() -> dict[str, object]:
    """What changes the rendered pixels besides the arguments: the fonts, Pillow and FreeType."""
    import PIL
    from PIL import features

    fonts = font_dir()
    return {
        "fonts": [(f, (fonts / f).stat().st_size) for f in FACES],
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
    }


def render_store(
    render_classes: Callable[..., np.ndarray], samples: int, *args: object
) -> ImageStore:
    """Every glyph class rendered by ``render_classes(glyphs, samples, *args)`` into one store,
    in chunks over the CPU's processes when there is enough to draw."""
    glyphs = glyph_classes()
    workers = os.cpu_count() or 1
    if workers == 1 or len(glyphs) * samples < 2000:
        images = render_classes(glyphs, samples, *args)
    else:
        step = max(1, len(glyphs) // (8 * workers))
        chunks = [glyphs[i : i + step] for i in range(0, len(glyphs), step)]
        with process_pool(workers) as pool:
            parts = pool.starmap(render_classes, [(c, samples, *args) for c in chunks])
        images = np.concatenate(parts)
    return ImageStore(
        images,
        [g.name for g in glyphs],
        [g.script for g in glyphs],
        np.full(len(glyphs), samples),
        {"codepoints": [g.codepoint for g in glyphs]},
    )


def _build(samples: int, seed: int, image_size: int) -> ImageStore:
    return render_store(_render_classes, samples, seed, image_size)


def load_glyphs(
    root: str | Path | None = None,
    split: str = "train",
    *,
    samples_per_class: int = 20,
    image_size: int = 28,
    seed: int = 0,
) -> FewShotDataset:
    """Split ``split`` of the built-in glyph set (rendered into the cache on first use)."""

    if root is not None:
        raise UserError("the glyphs data set is built in and takes no --data-root; drop it")
    if samples_per_class < 1 or image_size < 8:
        raise UserError(
            f"glyphs needs samples_per_class >= 1 and image_size >= 8, got {samples_per_class} "
            f"and {image_size}"
        )
    key = cache_key(
        version=VERSION,
        samples=samples_per_class,
        seed=seed,
        image_size=image_size,
        **renderer_fingerprint(),
    )
    store = cached_store("glyphs", key, lambda: _build(samples_per_class, seed, image_size))
    classes = [c for c, script in enumerate(store.class_groups) if SCRIPTS[script][0] == split]
    return FewShotDataset.from_store(store, classes, name="glyphs", split=split)
