"""Symbolic tensor dimensions: an int, an axis name, or ``axis/k`` (the axis divided by k).

``axis/k`` is how a tensor taken or given at a coarser level of a U-Net (a feature cache kept
between steps, at half or a quarter of the latent's size) shares the latent's axis: the graph,
the runner's input checks and the sample feeds all derive its size from the one axis.
"""

from __future__ import annotations

from collections.abc import Mapping

from difforge.errors import DifforgeError


def split_dim(dim: str) -> tuple[str, int]:
    """``"height/2"`` -> ``("height", 2)``; ``"height"`` -> ``("height", 1)``."""
    axis, sep, divisor = dim.partition("/")
    if not sep:
        return axis, 1
    if not divisor.isdigit() or int(divisor) < 1 or not axis:
        raise DifforgeError(f"dimension {dim!r}: expected an axis name or 'axis/k' with k >= 1")
    return axis, int(divisor)


def dim_size(dim: int | str, sizes: Mapping[str, int]) -> int:
    """The size of ``dim`` when the axes have ``sizes``."""
    if isinstance(dim, int):
        return dim
    axis, divisor = split_dim(dim)
    return sizes[axis] // divisor


def shape_of(dims: list[int | str] | tuple[int | str, ...], sizes: Mapping[str, int]) -> list[int]:
    return [dim_size(d, sizes) for d in dims]
