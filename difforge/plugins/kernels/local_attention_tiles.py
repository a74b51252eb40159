"""Tile shapes of the ``difforge::local_attention_2d`` image-query program.

:class:`AttentionTiles` (query tile, key block, warps, stages, schedule), the autotuning
candidates tried on CUDA, and the tuning results kept per input shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from difforge.errors import DifforgeError

SCHEDULES = ("nested", "list")


@dataclass(frozen=True)
class AttentionTiles:
    """Tile shape of the image-query program: QY x QX queries, KY x KX key blocks.

    ``schedule`` is how a tile finds its key blocks: ``nested`` computes the halo's rows and
    column spans in the kernel (blocks placed relative to the tile); ``list`` walks the
    host-built per-tile lists of :mod:`.key_blocks` (blocks on a fixed grid; fully visible
    ones run unmasked) in one flat loop the compiler can software-pipeline.
    """

    qy: int = 8
    qx: int = 8
    ky: int = 8
    kx: int = 8
    block_g: int = 64
    num_warps: int = 4
    num_stages: int = 2
    schedule: str = "nested"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise DifforgeError(f"attention tile schedule must be one of {SCHEDULES}, "
                                f"got {self.schedule!r}")  # fmt: skip


# Candidate tiles tried by autotuning on CUDA (kept small: each one is a compile).
# 8x8 query tiles waste least: computed / visible pairs at 128^2, r=16 is 1.87 with 8x8 key
# blocks placed per tile (2.11 with 4x16, 2.24 for 16x8 queries; 4x8 queries gain nothing,
# 1.80, as the key blocks dominate) and 1.92 with grid-aligned blocks (the list schedule).
# The nested 8x8 tiles are the fastest measured (docs/perf.md); the list variants are the
# candidates still to be timed on a GPU. None of them spills registers on sm_90 for head dim 64.
TILE_CANDIDATES: tuple[AttentionTiles, ...] = (
    AttentionTiles(8, 8, 8, 8),
    AttentionTiles(8, 8, 8, 8, num_stages=3),
    AttentionTiles(8, 8, 4, 16),
    AttentionTiles(8, 8, 8, 8, num_warps=8),
    AttentionTiles(8, 8, 8, 8, schedule="list"),
    AttentionTiles(8, 8, 8, 8, num_stages=3, schedule="list"),
    AttentionTiles(8, 16, 8, 8, num_warps=8, num_stages=3, schedule="list"),
)

# Autotuning results (CUDA): the tiles picked per input shape, in the order tuned, and what
# every candidate took (ms; inf: failed to compile).
TUNED: dict[tuple[Any, ...], AttentionTiles] = {}
TIMINGS: dict[tuple[Any, ...], dict[AttentionTiles, float]] = {}
