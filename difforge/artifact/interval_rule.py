"""Periodic step rules: a variant that runs on every step but the refresh steps.

DeepCache runs the full U-Net on refresh steps and its shallow branch (from the features the
last full step left) on the others. Which steps refresh depends on the step count, so the rule
stores the method's parameters and computes the set for any ``--steps``:

- ``uniform`` (the authors' default, ``DeepCacheSDHelper``): steps ``i < start`` and every
  ``interval``-th step from ``start`` refresh;
- ``quad`` (the authors' non-uniform schedule, ``sample_from_quad_center`` in their SD
  pipeline): ``ceil(N / interval)`` refresh steps spaced quadratically around ``center``,
  searched as they do, lowering the power from ``power`` by 0.02 until the count fits;
- ``keys``: a listed set of step indices (Faster Diffusion's key steps), those below ``N``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from difforge.artifact.fields import Fields
from difforge.errors import DifforgeError

SPACINGS = ("uniform", "quad", "keys")


def quad_center_steps(num_steps: int, count: int, center: int, power: float) -> list[int]:
    """The authors' ``sample_from_quad_center(num_steps, count, center, pow)`` indices."""
    pw = power
    while pw > 1:
        # (-center) ** (1 / pw) is complex in Python; the authors' int32 cast keeps the real
        # part of the powered points, which np.real says explicitly.
        x = np.linspace((-center) ** (1 / pw), (num_steps - center) ** (1 / pw), count + 1)
        points = np.unique(np.real(x**pw).astype(np.int32))
        indices = [0] + [int(v) + center for v in points[1:-1]]
        if len(indices) == count:
            return sorted(indices)
        pw -= 0.02
    raise DifforgeError(
        f"deepcache: no quadratic schedule of {count} refresh steps in {num_steps} steps around "
        f"step {center} (power {power}); use another --steps, interval or center, or "
        "spacing=uniform"
    )


@dataclass(frozen=True)
class IntervalRule:
    """``variant`` runs on every step that is not a refresh step."""

    variant: str
    interval: int
    start: int = 0
    spacing: str = "uniform"
    center: int = 15
    power: float = 1.4
    #: spacing "keys": the refresh steps themselves
    keys: tuple[int, ...] = ()

    def refresh_steps(self, num_steps: int) -> list[int]:
        return list(_refresh_steps(self, num_steps))

    def _compute(self, num_steps: int) -> tuple[int, ...]:
        if self.spacing == "keys":
            return tuple(k for k in sorted(set(self.keys)) if k < num_steps)
        if self.interval == 1:
            return tuple(range(num_steps))
        if self.spacing == "quad":
            count = -(-num_steps // self.interval)
            return tuple(quad_center_steps(num_steps, count, self.center, self.power))
        return tuple(
            i for i in range(num_steps) if i < self.start or (i - self.start) % self.interval == 0
        )

    def describe(self) -> str:
        if self.spacing == "keys":
            return "refresh steps " + ", ".join(map(str, self.keys))
        if self.interval == 1:
            return "every step refreshes"
        if self.spacing == "quad":
            return (
                f"1 in {self.interval}, spaced quadratically around step {self.center}, "
                f"power {self.power:g}"
            )
        return f"every {self.interval} steps from step {self.start}"

    def covers(self, index: int, num_steps: int) -> bool:
        return index not in _refresh_steps(self, num_steps)

    def to_dict(self) -> dict[str, Any]:
        keys = {"keys": list(self.keys)} if self.spacing == "keys" else {}
        return keys | {
            "kind": "interval",
            "variant": self.variant,
            "interval": self.interval,
            "start": self.start,
            "spacing": self.spacing,
            "center": self.center,
            "power": self.power,
        }

    @classmethod
    def read(cls, f: Fields) -> IntervalRule:
        spacing = f.text("spacing", "uniform", choices=SPACINGS)
        keys = tuple(f.items("keys", []))
        if spacing != "keys" and keys:
            raise f.fail("keys", f"applies to spacing 'keys' only, not {spacing!r}")
        if spacing == "keys" and not (
            keys
            and all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= 1000 for k in keys)
            and list(keys) == sorted(set(keys))
        ):
            raise f.fail("keys", "expected a non-empty ascending list of step indices (0 to 1000)")
        return cls(
            variant=f.text("variant"),
            interval=f.integer("interval", minimum=1, maximum=1000),
            start=f.integer("start", 0, minimum=0, maximum=1000),
            spacing=spacing,
            keys=keys,
            center=f.integer("center", 15, minimum=0, maximum=1000),
            power=f.number("power", 1.4, minimum=1.0, maximum=4.0),
        )


@functools.lru_cache(maxsize=64)
def _refresh_steps(rule: IntervalRule, num_steps: int) -> tuple[int, ...]:
    """The refresh steps, computed once per rule and step count (the loop asks every step)."""
    return rule._compute(num_steps)
