"""A tiny image-folder data set (16×16 class patterns plus noise), a private image cache, and a
tiny run config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fwp.config import to_dict
from fwp.fewshot.config import RunConfig, from_dict

CLASSES = {"train": 8, "val": 4, "test": 4}
IMAGES_PER_CLASS = 8


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fwp-cache")


@pytest.fixture(autouse=True)
def private_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded images go to a temporary cache, never ``~/.cache/fwp``."""
    monkeypatch.setenv("FWP_CACHE", str(session_cache))
    return session_cache


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/{train,val,test}/<class>/<i>.png``: each class a random 4×4 pattern scaled to
    16×16, each image the pattern shifted by a pixel and noised — learnable in a few steps."""
    root = tmp_path_factory.mktemp("tiny_images")
    rng = np.random.default_rng(0)
    for split, n in CLASSES.items():
        for c in range(n):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True)
            pattern = np.kron(rng.random((4, 4)) > 0.5, np.ones((4, 4)))
            for i in range(IMAGES_PER_CLASS):
                image = np.roll(pattern, rng.integers(-1, 2, 2), axis=(0, 1))
                image = np.clip(image + 0.2 * rng.standard_normal(image.shape), 0, 1)
                Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def tiny_config(root: Path, **changes: object) -> RunConfig:
    """A config that trains in well under a second per step on one CPU thread."""
    data = to_dict(RunConfig())
    data["data"].update(dataset="folder", data_root=str(root), n_way=3, k_shot=2, k_extra=1)
    data["network"].update(conv_channels=8, layers=1, d_model=16, heads=2, d_ff=32)
    data["optim"].update(schedule="cosine", lr=3e-3, warmup=2, batch_size=4)
    data.update(steps=6, eval_every=2, val_episodes=6, log_every=1, threads=1)
    for key, value in changes.items():
        for section in ("data", "network", "loss", "optim"):
            if key in data[section]:
                data[section][key] = value
                break
        else:
            data[key] = value
    config = from_dict(data)
    config.validate()
    return config
