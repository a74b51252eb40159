"""Index tables vs the definition: key counts, borders, text rows."""

import pytest
import torch

from difforge.errors import DifforgeError
from difforge.plugins.neighbourhood import count_visible_pairs, disc_offsets, neighbour_table
from difforge.plugins.reference import dense_mask


@pytest.mark.parametrize(("radius", "count"), [(8, 193), (16, 793), (32, 3205)])
def test_interior_disc_counts(radius: int, count: int) -> None:
    # METHODS.md §2: CLEAR's interior image-key counts.
    assert disc_offsets(radius, 4 * radius, 4 * radius).shape[0] == count


@pytest.mark.parametrize(("radius", "count"), [(8, 193), (16, 793)])
def test_table_interior_and_corner_counts(radius: int, count: int) -> None:
    side = 2 * radius + 8
    index, valid = neighbour_table(side, side, radius, "disc")
    per_query = valid.sum(1).view(side, side)
    assert int(per_query[side // 2, side // 2]) == count
    assert int(per_query.max()) == count
    # Corner: the quarter disc including its two half-axes.
    span = range(radius)
    quarter = sum(1 for dy in span for dx in span if dy * dy + dx * dx < radius**2)
    assert int(per_query[0, 0]) == quarter
    assert int(index.max()) < side * side


@pytest.mark.parametrize("window", ["disc", "square"])
@pytest.mark.parametrize(("h", "w", "r"), [(7, 9, 2), (13, 5, 3), (4, 3, 8), (6, 6, 1)])
def test_table_matches_dense_mask(window: str, h: int, w: int, r: int) -> None:
    index, valid = neighbour_table(h, w, r, window)
    table = torch.zeros(h * w, h * w, dtype=torch.bool)
    rows = torch.arange(h * w).view(-1, 1).expand_as(index)
    table[rows[valid], index[valid]] = True
    assert torch.equal(table, dense_mask(h, w, 0, r, window, 0))
    # Every slot of a row points at a distinct key.
    assert int(valid.sum()) == int(table.sum())


def test_square_counts_are_exact_where_the_window_fits() -> None:
    _, valid = neighbour_table(9, 11, 2, "square")
    assert bool((valid.sum(1) == 25).all())  # K = 5, shifted at borders, never cut
    _, valid = neighbour_table(3, 11, 2, "square")
    assert bool((valid.sum(1) == 15).all())  # H < K: whole columns


def test_text_rows_dense_and_pooled_only_for_image() -> None:
    h, w, t, p = 5, 4, 3, 2
    mask = dense_mask(h, w, t, 2, "disc", p)
    assert bool(mask[:t, : t + h * w].all()) and not bool(mask[:t, t + h * w :].any())
    assert bool(mask[:, :t].all())
    assert bool(mask[t:, t + h * w :].all())


def test_bad_window_is_a_user_error() -> None:
    with pytest.raises(DifforgeError):
        neighbour_table(4, 4, 2, "circle")
    with pytest.raises(DifforgeError):
        neighbour_table(4, 4, 0, "disc")


def test_tables_are_cached() -> None:
    assert neighbour_table(6, 7, 3, "disc")[0] is neighbour_table(6, 7, 3, "disc")[0]


@pytest.mark.parametrize("window", ["disc", "square"])
@pytest.mark.parametrize(
    ("h", "w", "t", "r", "p"), [(7, 9, 3, 2, 0), (13, 5, 0, 3, 4), (4, 3, 2, 8, 1)]
)
def test_count_visible_pairs(window: str, h: int, w: int, t: int, r: int, p: int) -> None:
    expected = int(dense_mask(h, w, t, r, window, p).sum())
    assert count_visible_pairs(h, w, t, r, window, p) == expected
