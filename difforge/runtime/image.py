"""Writing images (PNG, JPEG, WebP, ... by suffix) and class/prompt grids, always via a
temporary file and rename."""

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


def image_format(path: str | Path) -> str:
    """The image format ``path`` will be written in (from its suffix), after checking that
    its folder exists and is writable: call it before generating, so that a bad ``--out``
    fails in a second rather than after the whole generation."""
    from PIL import Image

    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise DifforgeError(f"cannot write {target}: it is a folder (name an image file)")
    if not parent.is_dir():
        raise DifforgeError(f"cannot write {target}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DifforgeError(f"cannot write {target}: folder {parent} is not writable")
    formats = Image.registered_extensions()
    suffix = target.suffix.lower()
    if suffix not in formats or formats[suffix] not in WRITABLE:
        raise DifforgeError(
            f"cannot write {target}: unknown image suffix {suffix or '(none)'!r} "
            "(use .png, .jpg, .webp, .bmp or .tiff)"
        )
    return formats[suffix]


#: Formats an RGB or grayscale uint8 image is written in losslessly or as users expect.
WRITABLE = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF"})


def encode_image(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """A (H, W, 3) or grayscale (H, W, 1) uint8 image as the bytes of a ``fmt`` file, exactly
    what :func:`save_image` writes (a server's response equals ``difforge run``'s file)."""
    import io

    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def save_image(image: np.ndarray, path: str | Path) -> Path:
    """Save a (H, W, 3) or grayscale (H, W, 1) uint8 image in the format its suffix names
    (``.png``, ``.jpg``, ``.webp``, ...); a half-written file never appears at ``path``."""
    target = Path(path)
    fmt = image_format(target)
    data = encode_image(image, fmt)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; an image is not
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
