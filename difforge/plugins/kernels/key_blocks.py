"""Per-tile lists of the key blocks a tile of image queries needs (a block-sparse schedule).

The image-query kernel's ``list`` schedule walks, for each tile of ``QY x QX`` queries, a flat
list of ``KY x KX`` key blocks built here once per (grid, radius, window, tile shape), the way
``flex_attention`` walks its block mask: one loop with a known trip count that the compiler
can software-pipeline, instead of a loop nest whose bounds are recomputed per tile.

Blocks come in three lists, each walked by its own loop with only the masking it needs:

* **full**: every (query, key) pair of the tile and block is visible and the block lies inside
  the grid, so the kernel runs it without any mask;
* **partial**: some pair is visible and the block lies inside the grid; the kernel evaluates
  the window predicate per pair;
* **edge**: some pair is visible and the block is cut by the grid's bottom or right edge; the
  kernel also masks the keys outside the grid.

Blocks no query of the tile can see are left out. Entries are the block's first key row and
column packed as ``ky0 << 16 | kx0`` (decoded with a shift and a mask, where a block number
would cost an integer division per block). Both predicates are decided per axis from
rectangle distances (the disc) or window unions and intersections (the square), so the lists
are exact, not conservative: tests compare them with the dense mask.

Pure torch (no triton): built on the CPU, then copied to the kernel's device and cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from difforge.plugins.neighbourhood import check_window, square_start

# Tiles x blocks decided at once: bounds the builder's memory on large grids.
_CHUNK_PAIRS = 1 << 22


@dataclass(frozen=True)
class KeyBlockLists:
    """Block lists of one (grid, radius, window, tile shape), on one device.

    Each ``*_index`` is ``[tiles, max(1, widest row)]`` int32, rows left-packed with the
    entries of :func:`pack` and padded with 0 past ``*_count``.
    """

    full_count: torch.Tensor
    full_index: torch.Tensor
    partial_count: torch.Tensor
    partial_index: torch.Tensor
    edge_count: torch.Tensor
    edge_index: torch.Tensor

    def kernel_args(self) -> tuple[torch.Tensor, ...]:
        """The six tensors in the kernel's argument order."""
        return (self.full_count, self.full_index, self.partial_count, self.partial_index,
                self.edge_count, self.edge_index)  # fmt: skip

    def widths(self) -> tuple[int, int, int]:
        """Row lengths of the three index tensors (the kernel's row strides)."""
        return (self.full_index.shape[1], self.partial_index.shape[1], self.edge_index.shape[1])

    def blocks_visited(self) -> int:
        """Key blocks all tiles visit together (per batch and head)."""
        return sum(int(c.sum()) for c in (self.full_count, self.partial_count, self.edge_count))


def pack(ky0: torch.Tensor, kx0: torch.Tensor) -> torch.Tensor:
    """A block's entry: its first key row and column in one int32 (both below 2**15)."""
    return ((ky0 << 16) | kx0).to(torch.int32)


def unpack(entry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First key row and column of packed entries."""
    return entry >> 16, entry & 0xFFFF


def _axis_ranges(length: int, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First and last in-grid index of each block along an axis, and whether it is cut short."""
    start = torch.arange(0, length, block)
    end = (start + block).clamp(max=length) - 1
    return start, end, start + block > length


def _disc_axis(
    q0: torch.Tensor, q1: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest |q - k| between query ranges (rows) and key ranges (columns)."""
    q0, q1 = q0[:, None], q1[:, None]
    k0, k1 = k0[None, :], k1[None, :]
    nearest = torch.maximum(k0 - q1, q0 - k1).clamp(min=0)
    farthest = torch.maximum((q1 - k0).abs(), (k1 - q0).abs())
    return nearest, farthest


def _square_axis(
    q0: torch.Tensor,
    q1: torch.Tensor,
    k0: torch.Tensor,
    k1: torch.Tensor,
    length: int,
    radius: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per axis: does some query see some key of the block, and does every query see all?

    The window start is monotone in the query, so over a query range the windows' union is
    [start(q0), end(q1)] and their intersection [start(q1), end(q0)].
    """
    kernel = 2 * radius + 1
    s0, s1 = square_start(q0, length, radius), square_start(q1, length, radius)
    e0, e1 = (s0 + kernel).clamp(max=length) - 1, (s1 + kernel).clamp(max=length) - 1
    k0, k1 = k0[None, :], k1[None, :]
    some = (k0 <= e1[:, None]) & (k1 >= s0[:, None])
    every = (k0 >= s1[:, None]) & (k1 <= e0[:, None])
    return some, every


def _rows_to_lists(mask: torch.Tensor, entries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a bool [rows, blocks] matrix: how many are set, and their entries, packed left."""
    count = mask.sum(1)
    rows, cols = mask.nonzero(as_tuple=True)
    width = max(1, int(count.max()) if count.numel() else 1)
    first = torch.cumsum(count, 0) - count
    slot = torch.arange(rows.numel()) - first[rows]
    index = torch.zeros(mask.shape[0], width, dtype=torch.int32)
    index[rows, slot] = entries[cols]
    return count.to(torch.int32), index


def _pad(index: list[torch.Tensor]) -> torch.Tensor:
    width = max(t.shape[1] for t in index)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in index])


@functools.lru_cache(maxsize=64)
def _build_cpu(
    height: int, width: int, radius: int, window: str, qy: int, qx: int, ky: int, kx: int
) -> tuple[torch.Tensor, ...]:
    qy0, qy1, _ = _axis_ranges(height, qy)
    qx0, qx1, _ = _axis_ranges(width, qx)
    ky0, ky1, ky_cut = _axis_ranges(height, ky)
    kx0, kx1, kx_cut = _axis_ranges(width, kx)
    inside = ~ky_cut[:, None] & ~kx_cut[None, :]  # [blocks_y, blocks_x]
    entries = pack(ky0[:, None], kx0[None, :]).reshape(-1)
    if window == "disc":
        r2 = radius * radius
        near_y, far_y = _disc_axis(qy0, qy1, ky0, ky1)
        near_x, far_x = _disc_axis(qx0, qx1, kx0, kx1)
    else:
        some_y, every_y = _square_axis(qy0, qy1, ky0, ky1, height, radius)
        some_x, every_x = _square_axis(qx0, qx1, kx0, kx1, width, radius)
    tiles_y, tiles_x, blocks = qy0.numel(), qx0.numel(), ky0.numel() * kx0.numel()
    step = max(1, _CHUNK_PAIRS // (tiles_x * blocks))
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], [], []]
    for ty in range(0, tiles_y, step):
        rows = slice(ty, ty + step)
        # [tile rows, tiles_x, blocks_y, blocks_x]
        if window == "disc":
            near = near_y[rows, None, :, None] ** 2 + near_x[None, :, None, :] ** 2
            far = far_y[rows, None, :, None] ** 2 + far_x[None, :, None, :] ** 2
            some, every = near < r2, far < r2
        else:
            some = some_y[rows, None, :, None] & some_x[None, :, None, :]
            every = every_y[rows, None, :, None] & every_x[None, :, None, :]
        full = every & inside
        for kind, mask in enumerate((full, some & inside & ~full, some & ~inside)):
            parts[kind].append(_rows_to_lists(mask.reshape(-1, blocks), entries))
    out: list[torch.Tensor] = []
    for lists in parts:
        out += [torch.cat([c for c, _ in lists]), _pad([i for _, i in lists]).contiguous()]
    return tuple(out)


_DEVICE_LISTS: dict[tuple[object, ...], KeyBlockLists] = {}


def key_block_lists(
    height: int,
    width: int,
    radius: int,
    window: str,
    tile: tuple[int, int],
    block: tuple[int, int],
    device: torch.device | str = "cpu",
) -> KeyBlockLists:
    """The key-block lists of every ``tile`` (QY, QX) over blocks of ``block`` (KY, KX) keys.

    Tiles are numbered row-major over the ``ceil(H/QY) x ceil(W/QX)`` tile grid, as the
    kernel's program ids are. Cached per arguments and device.
    """
    check_window(window, radius)
    dev = torch.device(device)
    key = (height, width, radius, window, tile, block, str(dev))
    if key not in _DEVICE_LISTS:
        lists = _build_cpu(height, width, radius, window, *tile, *block)
        _DEVICE_LISTS[key] = KeyBlockLists(*(t.to(dev) for t in lists))
    return _DEVICE_LISTS[key]
