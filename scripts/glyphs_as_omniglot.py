"""The built-in glyphs written in Omniglot's folder layout, to try the `omniglot` loader and the
few-shot defaults without Omniglot itself: ``DIR/images_background`` (the glyphs' train and val
classes) and ``DIR/images_evaluation`` (test classes), 20 characters per "alphabet", each image a
105×105 black-on-white PNG as in the Omniglot release.

    python scripts/glyphs_as_omniglot.py DIR
    fwp fewshot train --dataset omniglot --data-root DIR --out RUN
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fwp.data import load_dataset


def write(root: Path) -> None:
    for source, splits in (("images_background", ("train", "val")),
                           ("images_evaluation", ("test",))):
        c = 0
        for split in splits:
            glyphs = load_dataset("glyphs", split=split)
            for k in range(glyphs.num_classes):
                folder = root / source / f"Alphabet{c // 20:03d}" / f"character{c % 20 + 1:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                for i, image in enumerate(np.asarray(glyphs.class_images(k))[:, 0]):
                    ink = Image.fromarray(((1 - image) * 255).astype(np.uint8)).resize((105, 105))
                    ink.point(lambda v: 255 if v > 127 else 0).convert("1").save(
                        folder / f"{c:04d}_{i + 1:02d}.png")
                c += 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/glyphs_as_omniglot.py DIR")
    write(Path(sys.argv[1]))
    print(f"wrote {sys.argv[1]}")
