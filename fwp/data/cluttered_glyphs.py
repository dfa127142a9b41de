"""``cluttered_glyphs``: the letters of ``glyphs`` on texture, among other letters.

A harder built-in few-shot set, meant to move a small learner from the 90 % it reaches on
``glyphs`` towards the seed paper's Mini-ImageNet range (5-way 5-shot between about 50 % and
70 %). The classes and the script splits are those of :mod:`fwp.data.glyphs` (685 / 128 / 268
classes; train, val and test share no script and no look-alike letter). Sample ``s`` of class
``c`` is a pure function of (code point of ``c``, ``s``, ``seed``, ``distractors``, ``colour``),
drawn at twice ``image_size`` and averaged down:

1. background: two dark greys (with ``colour``: two random colours) mixed by a smooth random
   field plus stripes of random direction, frequency and contrast;
2. clutter: 1 … ``distractors`` smaller letters of the same split (30–50 % of the side, any
   rotation) anywhere in the image, partly cut off at the border, in a random grey (colour) at
   least 0.2 brighter (away in luminance) than the background's mean;
3. the class's letter as in ``glyphs`` (a face that covers it, stroke thickening or thinning) with
   a stronger random affine (rotation ±25°, shear ±0.3, fill 55–85 % of the side), near the centre
   and drawn last, in a grey (colour) at least 0.35 brighter (away in luminance) than the
   background's mean;
4. a brightness (colour) cast and pixel noise.

Nothing in brightness, colour, texture or position tells the class: only the letter's shape does,
and the learner must tell it from the distractors (smaller and off-centre). Images are
``image_size``² x 3 (grey in all three channels unless ``colour``). Rendering the whole set
(1,081 classes x 32 samples) costs about 4 ms of CPU per image, once, into the cache.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from fwp.data.cache import ImageStore, cache_key, cached_store
from fwp.data.dataset import FewShotDataset
from fwp.data.glyphs import (
    SCRIPTS,
    GlyphClass,
    glyph_classes,
    inked,
    placed,
    render_store,
    renderer_fingerprint,
)
from fwp.errors import UserError

VERSION = 2  # bump when the rendering changes
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@cache
def _split_classes(split: str) -> tuple[GlyphClass, ...]:
    return tuple(g for g in glyph_classes() if g.split == split)


def _letter_mask(
    glyph: GlyphClass, rng: np.random.Generator, out: int, fill: float, centre: np.ndarray,
    max_angle: float, max_shear: float,
) -> np.ndarray:
    """float32 ``[out, out]`` in [0, 1]: ``glyph`` in a random face and stroke, scaled so its
    longer side is ``fill · out``, rotated, sheared and centred at ``centre`` (pixels)."""
    image = inked(glyph, rng)
    scale = fill * out / max(*image.size, 1)
    image = placed(image, out, scale, 0.2, max_angle, max_shear, centre, rng)
    return np.asarray(image, np.float32) / 255


def _background(rng: np.random.Generator, out: int, colour: bool) -> np.ndarray:
    """float32 ``[out, out, 3]``: two colours (dark greys, at most 0.25, when not ``colour``)
    mixed by a smooth random field and stripes."""
    from PIL import Image

    if colour:
        colours = rng.uniform(0, 1, size=(2, 3)).astype(np.float32)
    else:
        colours = np.repeat(rng.uniform(0, 0.25, size=(2, 1)), 3, axis=1).astype(np.float32)
    coarse = rng.uniform(0, 255, size=(4, 4)).astype(np.uint8)
    field = np.asarray(
        Image.fromarray(coarse).resize((out, out), Image.Resampling.BICUBIC), np.float32
    ) / 255
    direction = rng.uniform(0, np.pi)
    period = rng.uniform(4, 16)
    y, x = np.mgrid[0:out, 0:out].astype(np.float32)
    stripes = np.sin(2 * np.pi * (x * np.cos(direction) + y * np.sin(direction)) / period
                     + rng.uniform(0, 2 * np.pi))
    mix = np.clip(field + rng.uniform(0, 0.35) * stripes, 0, 1)[..., None]
    return colours[0] * (1 - mix) + colours[1] * mix


def _contrasting(rng: np.random.Generator, luma: float, margin: float, colour: bool) -> np.ndarray:
    """A random colour whose luminance is at least ``margin`` away from ``luma`` (when not
    ``colour``: a grey at least ``margin`` brighter, ink lighter than the background)."""
    if not colour:
        return np.full(3, rng.uniform(min(luma + margin, 1.0), 1.0), np.float32)
    for _ in range(100):
        value = rng.uniform(0, 1, size=3).astype(np.float32)
        if abs(float(value @ LUMA) - luma) >= margin:
            return value
    return np.full(3, 0.0 if luma > 0.5 else 1.0, np.float32)


def render_sample(
    glyph: GlyphClass, index: int, seed: int, image_size: int = 28, distractors: int = 1,
    colour: bool = False,
) -> np.ndarray:
    """Sample ``index`` of ``glyph``: uint8 ``[image_size, image_size, 3]``, a pure function of
    its arguments (the distractors come from ``glyph``'s own split)."""
    rng = np.random.default_rng([seed, glyph.codepoint, index, 1])
    out = 2 * image_size
    canvas = _background(rng, out, colour)
    luma = float(canvas.reshape(-1, 3).mean(0) @ LUMA)
    pool = _split_classes(glyph.split)
    for _ in range(int(rng.integers(1, distractors + 1)) if distractors else 0):
        other = pool[rng.integers(len(pool))]
        mask = _letter_mask(other, rng, out, rng.uniform(0.3, 0.5), rng.uniform(0, out, size=2),
                            max_angle=180, max_shear=0.3)[..., None]
        canvas = canvas * (1 - mask) + _contrasting(rng, luma, 0.2, colour) * mask
    centre = out / 2 + rng.uniform(-0.08, 0.08, size=2) * out
    mask = _letter_mask(glyph, rng, out, rng.uniform(0.55, 0.85), centre,
                        max_angle=25, max_shear=0.3)[..., None]
    canvas = canvas * (1 - mask) + _contrasting(rng, luma, 0.35, colour) * mask
    canvas = canvas.reshape(image_size, 2, image_size, 2, 3).mean((1, 3))
    cast = rng.uniform(0.8, 1.2, size=3) if colour else rng.uniform(0.8, 1.2)
    canvas = canvas * cast + rng.normal(0, rng.uniform(0, 0.06), size=canvas.shape)
    return np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)


def _render_classes(
    glyphs: tuple[GlyphClass, ...], samples: int, seed: int, image_size: int, distractors: int,
    colour: bool,
) -> np.ndarray:
    return np.stack([
        render_sample(g, s, seed, image_size, distractors, colour)
        for g in glyphs for s in range(samples)
    ])


def _build(samples: int, seed: int, image_size: int, distractors: int, colour: bool
           ) -> ImageStore:
    return render_store(_render_classes, samples, seed, image_size, distractors, colour)


def load_cluttered_glyphs(
    root: str | Path | None = None,
    split: str = "train",
    *,
    samples_per_class: int = 32,
    image_size: int = 28,
    seed: int = 0,
    distractors: int = 1,
    colour: bool = False,
) -> FewShotDataset:
    """Split ``split`` of the built-in cluttered glyph set (rendered into the cache on first use).

    ``distractors``: at most this many other letters behind each sample (0: none); ``colour``:
    random colours for background, letter and distractors instead of light-grey letters on a
    dark-grey texture. Both are difficulty knobs; docs/bootstrapping.md has what was measured.
    """

    if root is not None:
        raise UserError("the cluttered_glyphs data set is built in and takes no --data-root; "
                        "drop it")
    if samples_per_class < 1 or image_size < 8 or distractors < 0:
        raise UserError(
            f"cluttered_glyphs needs samples_per_class >= 1, image_size >= 8 and distractors >= 0,"
            f" got {samples_per_class}, {image_size} and {distractors}"
        )
    key = cache_key(
        version=VERSION,
        samples=samples_per_class,
        seed=seed,
        image_size=image_size,
        distractors=distractors,
        colour=colour,
        **renderer_fingerprint(),
    )
    store = cached_store(
        "cluttered_glyphs", key,
        lambda: _build(samples_per_class, seed, image_size, distractors, colour),
    )
    classes = [c for c, script in enumerate(store.class_groups) if SCRIPTS[script][0] == split]
    return FewShotDataset.from_store(store, classes, name="cluttered_glyphs", split=split)
