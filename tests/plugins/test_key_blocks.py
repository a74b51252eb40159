"""The kernel's per-tile key-block lists against the dense visibility mask, block by block."""

import pytest
import torch

from difforge.plugins.kernels.key_blocks import KeyBlockLists, key_block_lists, unpack
from difforge.plugins.reference import dense_mask


def _expected(
    h: int, w: int, r: int, window: str, tile: tuple[int, int], block: tuple[int, int]
) -> list[tuple[set[tuple[int, int]], ...]]:
    """Brute force, per tile: (full, partial, edge) sets of block origins (ky0, kx0)."""
    mask = dense_mask(h, w, 0, r, window, 0).view(h, w, h, w)
    (qy, qx), (ky, kx) = tile, block
    found: list[tuple[set[tuple[int, int]], ...]] = []
    for ty in range(0, h, qy):
        for tx in range(0, w, qx):
            full: set[tuple[int, int]] = set()
            partial: set[tuple[int, int]] = set()
            edge: set[tuple[int, int]] = set()
            for by in range(0, h, ky):
                for bx in range(0, w, kx):
                    sub = mask[ty : ty + qy, tx : tx + qx, by : by + ky, bx : bx + kx]
                    inside = by + ky <= h and bx + kx <= w
                    if not bool(sub.any()):
                        continue
                    if not inside:
                        edge.add((by, bx))
                    elif bool(sub.all()):
                        full.add((by, bx))
                    else:
                        partial.add((by, bx))
            found.append((full, partial, edge))
    return found


def _listed(lists: KeyBlockLists, tile: int) -> tuple[list[tuple[int, int]], ...]:
    out = []
    for count, index in zip(lists.kernel_args()[::2], lists.kernel_args()[1::2], strict=True):
        ky0, kx0 = unpack(index[tile, : int(count[tile])])
        out.append(list(zip(ky0.tolist(), kx0.tolist(), strict=True)))
    return tuple(out)


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
    expected = _expected(h, w, r, window, tile, block)
    assert lists.full_count.shape[0] == len(expected)
    for t, want in enumerate(expected):
        got = _listed(lists, t)
        for got_kind, want_kind in zip(got, want, strict=True):
            assert len(set(got_kind)) == len(got_kind) and set(got_kind) == want_kind
    assert lists.full_index.dtype == torch.int32 and lists.full_index.is_contiguous()
    assert lists.widths() == tuple(t.shape[1] for t in lists.kernel_args()[1::2])


def test_lists_chunked_build_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import difforge.plugins.kernels.key_blocks as kb

    one = kb._build_cpu.__wrapped__(24, 20, 4, "disc", 4, 4, 4, 4)
    monkeypatch.setattr(kb, "_CHUNK_PAIRS", 7)  # one tile row per chunk
    chunked = kb._build_cpu.__wrapped__(24, 20, 4, "disc", 4, 4, 4, 4)
    for a, b in zip(one, chunked, strict=True):
        assert torch.equal(a, b)


def test_disc_interior_has_full_and_partial_blocks() -> None:
    # An 8x8 tile deep inside a radius-16 disc: its own block and neighbours are full.
    lists = key_block_lists(64, 64, 16, "disc", (8, 8), (8, 8))
    tile = 3 * 8 + 3
    assert int(lists.full_count[tile]) >= 1
    assert int(lists.full_count[tile]) + int(lists.partial_count[tile]) < 64
    assert int(lists.edge_count.sum()) == 0  # 8 divides 64: no block is cut by the grid
    assert lists.blocks_visited() == int(lists.full_count.sum() + lists.partial_count.sum())
