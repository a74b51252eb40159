"""TensorRT optimization profiles from a component's manifest entry: one per resolution bucket.

A TensorRT engine picks its kernels per optimization profile, for the shapes between the
profile's min and max, tuned at its opt. One profile over a wide range (SDXL's 512 to 1536
px) tunes for one size and runs the others on kernels chosen for it; one profile per bucket
keeps each range narrow. The buckets split the spatial axes (the latent's height and width,
and every input whose dims derive from them, ``height/2``) into ranges no wider than
``ratio`` (2x by default), on the axes' multiples; every other axis (batch, with classifier-free
guidance's doubled batch already in it; tokens; RAS's active count) keeps its whole range in
every profile. The runtime picks the profile whose bucket holds the request's size.

This is difforge's own code because the buckets come from difforge's manifest axes; the
profiles are handed to Polygraphy's ``Profile().add(name, min, opt, max)`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from difforge.artifact.dims import shape_of
from difforge.artifact.manifest import ComponentEntry
from difforge.errors import DifforgeError

SPATIAL = ("height", "width")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile: the spatial bucket it serves and each input's shapes."""

    bucket: tuple[int, int]
    shapes: dict[str, tuple[Shape, Shape, Shape]]

    def to_dict(self) -> dict[str, object]:
        return {
            "bucket": list(self.bucket),
            "shapes": {k: [list(s) for s in v] for k, v in self.shapes.items()},
        }


def buckets(low: int, opt: int, high: int, multiple: int = 1, ratio: float = 2.0) -> list[
    tuple[int, int, int]
]:
    """(min, opt, max) windows covering [low, high] on ``multiple``, each max <= ratio * min;
    a window's opt is the axis's opt where the window holds it, else the window's max."""
    if not 1 <= low <= opt <= high or ratio < 1.0:
        raise DifforgeError(f"bad axis range for TensorRT profiles: {low}/{opt}/{high}")
    out: list[tuple[int, int, int]] = []
    start = low
    while start <= high:
        end = max(start, min(high, int(start * ratio) // multiple * multiple))
        out.append((start, opt if start <= opt <= end else end, end))
        start = end + multiple
    return out


def profiles_for(entry: ComponentEntry, ratio: float = 2.0) -> list[ShapeProfile]:
    """One profile per bucket of the spatial axes (one profile when there are none)."""
    axes = entry.axes
    spatial = [a for a in SPATIAL if a in axes]
    if not spatial:
        return [_profile(entry, {}, (0, 0))]
    if len(spatial) != 2:
        raise DifforgeError(f"{entry.file}: a spatial axis without the other: {spatial}")
    lo, opt, hi = axes["height"]
    lo_w, opt_w, hi_w = axes["width"]
    if (lo, opt, hi) != (lo_w, opt_w, hi_w):
        raise DifforgeError(f"{entry.file}: height and width ranges differ; TensorRT profiles "
                            "are built for square ranges")
    step = entry.multiples.get("height", 1)
    out = []
    for b_lo, b_opt, b_hi in buckets(lo, opt, hi, step, ratio):
        window = {"height": (b_lo, b_opt, b_hi), "width": (b_lo, b_opt, b_hi)}
        out.append(_profile(entry, window, (b_lo, b_hi)))
    return out


def _profile(
    entry: ComponentEntry, window: dict[str, tuple[int, int, int]], bucket: tuple[int, int]
) -> ShapeProfile:
    shapes: dict[str, tuple[Shape, Shape, Shape]] = {}
    for tensor in entry.inputs:
        sizes = [
            {name: window.get(name, tuple(rng))[i] for name, rng in entry.axes.items()}
            for i in range(3)
        ]
        low, opt, high = (tuple(shape_of(tensor.shape, s)) for s in sizes)
        shapes[tensor.name] = (low, opt, high)
    return ShapeProfile(bucket, shapes)


def profile_for(profiles: list[ShapeProfile], height: int) -> int:
    """The index of the profile whose bucket holds latent ``height``."""
    for index, profile in enumerate(profiles):
        lo, hi = profile.bucket
        if lo <= height <= hi or profile.bucket == (0, 0):
            return index
    raise DifforgeError(f"no TensorRT profile covers a latent of {height} (built for "
                        + ", ".join(f"{p.bucket[0]}-{p.bucket[1]}" for p in profiles) + ")")
