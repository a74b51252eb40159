"""Writing images: PNG files and class/prompt grids, always via a temporary file and rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from difforge.errors import DifforgeError


def grid(
    images: np.ndarray, columns: int | None = None, gap: int = 0, fill: int = 0
) -> np.ndarray:
    """Tile (N, H, W, C) images into one image, ``gap`` pixels of ``fill`` between tiles."""
    n, h, w, c = images.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full(
        (rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, c), fill, dtype=images.dtype
    )
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        y, x = r * (h + gap), col * (w + gap)
        out[y : y + h, x : x + w] = img
    return out


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Save a (H, W, 3) or grayscale (H, W, 1) uint8 image; a half-written file never
    appears at ``path``."""
    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]

    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise DifforgeError(f"cannot write {target}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DifforgeError(f"cannot write {target}: folder {parent} is not writable")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(image).save(fh, format="PNG")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
