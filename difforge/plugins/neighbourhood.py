"""Which image keys an image query sees: the window predicate and its index tables.

Two windows exist (see METHODS.md §2 and §9):

* ``disc`` (CLEAR): key (ky, kx) is visible from query (qy, qx) iff
  ``(qy-ky)**2 + (qx-kx)**2 < radius**2`` (strict), cut at the border, never shifted.
* ``square`` (NATTEN): kernel ``K = 2*radius + 1``; along each axis of length ``L`` the window
  starts at ``clamp(q - radius, 0, max(L - K, 0))`` and spans ``min(K, L)`` keys, so a window
  near a border is shifted inwards and every query sees exactly ``K*K`` keys when ``L >= K``.
  (For ``L >= K`` this equals NATTEN's ``centre = clamp(q, K//2, L-1-K//2)``; for ``L < K``
  the window is the whole axis.)

The reference op gathers each query's neighbours through an index table padded to the
largest window, so memory stays linear in the number of tokens.
"""

from __future__ import annotations

import functools

import torch

from difforge.errors import DifforgeError

WINDOWS = ("disc", "square")


def check_window(window: str, radius: int) -> None:
    """Reject window settings the op does not define."""
    if window not in WINDOWS:
        raise DifforgeError(f"local attention window must be one of {WINDOWS}, got {window!r}")
    if radius < 1:
        raise DifforgeError(f"local attention radius must be >= 1, got {radius}")


def square_start(q: torch.Tensor, length: int, radius: int) -> torch.Tensor:
    """First key of a square (NATTEN) window along one axis, for query coordinates ``q``."""
    kernel = 2 * radius + 1
    return (q - radius).clamp(min=0, max=max(length - kernel, 0))


def disc_offsets(radius: int, height: int, width: int) -> torch.Tensor:
    """All (dy, dx) with ``dy**2 + dx**2 < radius**2`` that can land inside an H x W grid.

    Offsets with ``|dy| >= H`` or ``|dx| >= W`` are never valid, so dropping them keeps the
    table small when the radius exceeds the grid.
    """
    ry = min(radius - 1, height - 1)
    rx = min(radius - 1, width - 1)
    dy = torch.arange(-ry, ry + 1).view(-1, 1)
    dx = torch.arange(-rx, rx + 1).view(1, -1)
    keep = dy * dy + dx * dx < radius * radius
    dy, dx = torch.broadcast_tensors(dy, dx)
    return torch.stack([dy[keep], dx[keep]], dim=1)


@functools.lru_cache(maxsize=64)
def _table_cpu(
    height: int, width: int, radius: int, window: str
) -> tuple[torch.Tensor, torch.Tensor]:
    qy = torch.arange(height).view(-1, 1).expand(height, width).reshape(-1, 1)
    qx = torch.arange(width).view(1, -1).expand(height, width).reshape(-1, 1)
    if window == "disc":
        off = disc_offsets(radius, height, width)
        ky = qy + off[:, 0].view(1, -1)
        kx = qx + off[:, 1].view(1, -1)
    else:
        ny = min(2 * radius + 1, height)
        nx = min(2 * radius + 1, width)
        jy = torch.arange(ny).view(-1, 1).expand(ny, nx).reshape(1, -1)
        jx = torch.arange(nx).view(1, -1).expand(ny, nx).reshape(1, -1)
        ky = square_start(qy, height, radius) + jy
        kx = square_start(qx, width, radius) + jx
    valid = (ky >= 0) & (ky < height) & (kx >= 0) & (kx < width)
    # Invalid slots point at key 0; the mask removes them from the softmax.
    index = torch.where(valid, ky * width + kx, torch.zeros_like(ky))
    return index.contiguous(), valid.contiguous()


_DEVICE_TABLES: dict[tuple[int, int, int, str, str], tuple[torch.Tensor, torch.Tensor]] = {}


def neighbour_table(
    height: int, width: int, radius: int, window: str, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index table ``[H*W, M]`` (int64, image-token indices) and validity mask ``[H*W, M]``.

    Row ``i`` lists the image keys of image query ``i`` (row-major), padded to the widest
    window ``M``. Cached per (H, W, radius, window) and per device.
    """
    check_window(window, radius)
    if height < 1 or width < 1:
        raise DifforgeError(f"local attention grid must be at least 1x1, got {height}x{width}")
    dev = torch.device(device)
    if dev.type == "cpu":
        return _table_cpu(height, width, radius, window)
    key = (height, width, radius, window, str(dev))
    if key not in _DEVICE_TABLES:
        index, valid = _table_cpu(height, width, radius, window)
        _DEVICE_TABLES[key] = (index.to(dev), valid.to(dev))
    return _DEVICE_TABLES[key]


def count_visible_pairs(
    height: int, width: int, num_global: int, radius: int, window: str, num_pooled: int
) -> int:
    """Number of visible (query, key) pairs of one head: the work a perfect kernel does."""
    check_window(window, radius)
    t, hw, p = num_global, height * width, num_pooled
    if window == "disc":
        # Each offset (dy, dx) is realised by (H - |dy|) * (W - |dx|) query positions.
        local = sum(
            (height - abs(dy)) * (width - abs(dx))
            for dy, dx in disc_offsets(radius, height, width).tolist()
        )
    else:
        kernel = 2 * radius + 1
        local = hw * min(kernel, height) * min(kernel, width)
    return local + hw * (t + p) + t * (t + hw)
