"""The kernel's per-tile key-block lists against the dense visibility mask, block by block."""

import pytest
import torch

from difforge.plugins.kernels.key_blocks import key_block_lists
from difforge.plugins.reference import dense_mask


def _expected(
    h: int, w: int, r: int, window: str, tile: tuple[int, int], block: tuple[int, int]
) -> tuple[list[set[int]], list[set[int]]]:
    """Brute force: for each tile, the blocks with every / some pair visible."""
    mask = dense_mask(h, w, 0, r, window, 0).view(h, w, h, w)
    (qy, qx), (ky, kx) = tile, block
    blocks_x = -(-w // kx)
    full: list[set[int]] = []
    some: list[set[int]] = []
    for ty in range(0, h, qy):
        for tx in range(0, w, qx):
            full.append(set())
            some.append(set())
            for by in range(0, h, ky):
                for bx in range(0, w, kx):
                    sub = mask[ty : ty + qy, tx : tx + qx, by : by + ky, bx : bx + kx]
                    number = (by // ky) * blocks_x + bx // kx
                    inside = by + ky <= h and bx + kx <= w
                    if bool(sub.any()):
                        some[-1].add(number)
                    if inside and bool(sub.all()):
                        full[-1].add(number)
    return full, some


@pytest.mark.parametrize("window", ["disc", "square"])
@pytest.mark.parametrize(
    ("h", "w", "r", "tile", "block"),
    [
        (13, 11, 3, (4, 4), (4, 4)),
        (17, 9, 5, (8, 4), (4, 8)),
        (6, 7, 9, (4, 4), (2, 4)),  # window larger than the grid: everything in grid is full
        (20, 20, 6, (4, 8), (4, 4)),
        (9, 12, 1, (2, 2), (2, 2)),
    ],
)
def test_lists_match_dense_mask(
    window: str, h: int, w: int, r: int, tile: tuple[int, int], block: tuple[int, int]
) -> None:
    lists = key_block_lists(h, w, r, window, tile, block)
    full, some = _expected(h, w, r, window, tile, block)
    assert lists.full_count.shape[0] == len(full)
    for t, (want_full, want_some) in enumerate(zip(full, some, strict=True)):
        got_full = lists.full_index[t, : int(lists.full_count[t])].tolist()
        got_partial = lists.partial_index[t, : int(lists.partial_count[t])].tolist()
        assert len(set(got_full)) == len(got_full) and set(got_full) == want_full
        assert set(got_partial) == want_some - want_full
    assert lists.full_index.dtype == torch.int32 and lists.full_index.is_contiguous()


def test_lists_chunked_build_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import difforge.plugins.kernels.key_blocks as kb

    one = kb._build_cpu.__wrapped__(24, 20, 4, "disc", 4, 4, 4, 4)
    monkeypatch.setattr(kb, "_CHUNK_PAIRS", 7)  # one tile row per chunk
    chunked = kb._build_cpu.__wrapped__(24, 20, 4, "disc", 4, 4, 4, 4)
    for a, b in zip(one, chunked, strict=True):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_disc_interior_has_full_and_partial_blocks() -> None:
    # An 8x8 tile deep inside a radius-16 disc: its own block and neighbours are full.
    lists = key_block_lists(64, 64, 16, "disc", (8, 8), (8, 8))
    tile = 3 * 8 + 3
    assert int(lists.full_count[tile]) >= 1
    assert int(lists.full_count[tile]) + int(lists.partial_count[tile]) < 64
    assert lists.blocks_visited() == int(lists.full_count.sum() + lists.partial_count.sum())
