"""Omniglot from local files (Lake et al. 2015), for few-shot classification.

Omniglot cannot be downloaded here; point :func:`load_omniglot` at an unpacked copy laid out as the
original release: ``ROOT/images_background/<alphabet>/<character>/<image>.png`` (the 964 meta-training
characters) and ``ROOT/images_evaluation/<alphabet>/<character>/<image>.png`` (the 659 meta-test
characters). Each character is one class; images are read with matplotlib (PNG), turned to
grayscale in [0, 1] with ink = 1, and resized to ``size x size`` by area averaging (28 as in MAML).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

SPLITS = {"background": "images_background", "evaluation": "images_evaluation"}


class OmniglotNotFoundError(FileNotFoundError):
    """The directory does not hold Omniglot's images in the expected layout."""


def _read_png(path: Path, size: int) -> torch.Tensor:
    from matplotlib import image as mpimg

    try:
        array = np.asarray(mpimg.imread(str(path)), dtype=np.float32)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if array.ndim == 3:
        array = array[..., :3].mean(-1)
    if array.max() > 1.0:
        array = array / 255.0
    ink = torch.from_numpy(1.0 - array)  # Omniglot draws black strokes on white
    return torch.nn.functional.interpolate(ink[None, None], size=(size, size), mode="area")[0, 0]


def load_omniglot(root: str | os.PathLike | None = None, split: str = "background", size: int = 28,
                  rotations: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """The characters of one split: a list of ``[n_images, size, size]`` float tensors and their names
    (``alphabet/character``), sorted by name.

    Args:
        root: the unpacked Omniglot directory (default ``$L2O_OMNIGLOT_DIR``).
        split: ``"background"`` (meta-training) or ``"evaluation"`` (meta-test).
        size: side of the resized square images.
        rotations: also return each character rotated by 90, 180 and 270 degrees as new classes
            (the augmentation of MAML's Omniglot experiments).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    root = root or os.environ.get("L2O_OMNIGLOT_DIR")
    if root is None:
        raise OmniglotNotFoundError("no Omniglot directory given (pass root or set L2O_OMNIGLOT_DIR)")
    base = Path(root) / SPLITS[split]
    if not base.is_dir():
        raise OmniglotNotFoundError(f"{base} does not exist: expected ROOT/{SPLITS[split]}/<alphabet>/<character>/*.png")
    classes, names = [], []
    for alphabet in sorted(p for p in base.iterdir() if p.is_dir()):
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            files = sorted(character.glob("*.png"))
            if not files:
                continue
            images = torch.stack([_read_png(f, size) for f in files])
            classes.append(images)
            names.append(f"{alphabet.name}/{character.name}")
            if rotations:
                for k in (1, 2, 3):
                    classes.append(torch.rot90(images, k, dims=(1, 2)).contiguous())
                    names.append(f"{alphabet.name}/{character.name}/rot{90 * k}")
    if not classes:
        raise OmniglotNotFoundError(f"no character folders with PNG images under {base}")
    return classes, names


def omniglot_families(root: str | os.PathLike | None = None, n_way: int = 5, k_shot: int = 1, k_query: int = 15,
                      size: int = 28, rotations: bool = True):
    """Meta-training (background characters) and meta-test (evaluation characters) N-way K-shot
    families: :class:`l2o.hyper.fewshot.ClassFewShotFamily` over flattened images. The two splits
    hold different alphabets, so their classes are disjoint."""
    from l2o.hyper.fewshot import ClassFewShotFamily

    train, _ = load_omniglot(root, "background", size, rotations)
    test, _ = load_omniglot(root, "evaluation", size, rotations=False)
    return (ClassFewShotFamily(train, n_way, k_shot, k_query, name="omniglot-train"),
            ClassFewShotFamily(test, n_way, k_shot, k_query, name="omniglot-test"))
