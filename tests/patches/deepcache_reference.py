"""Independent reference of DeepCache for a diffusers ``UNet2DConditionModel``.

Reproduces the authors' ``DeepCacheSDHelper`` from ``DeepCache/extension/deepcache.py``
(github.com/horseee/DeepCache; Ma et al., "DeepCache: Accelerating Diffusion Models for
Free") by the same mechanism: the ``forward`` of every down/mid/up block and of their
attentions, resnets, down- and upsamplers is replaced by a wrapper that, on a "skip" step,
returns the output cached under its key at the last full step, and otherwise runs the
original forward and caches its result.

Keys are the authors' ``(blocktype, block_name, block_i, layer_i)``:

- down block ``b``: ``("down", "attentions", b, i)``, ``("down", "resnet", b, i)``,
  ``("down", "downsampler", b, len(resnets))`` and ``("down", "block", b, 0)``;
- mid block: ``("mid", "mid_block", 0, 0)``;
- up block at position ``j`` of ``unet.up_blocks`` has ``b = len(up_blocks) - j - 1`` and
  ``("up", "attentions", b, n - i - 1)``, ``("up", "resnet", b, n - i - 1)`` (``n`` =
  ``len(resnets)``), ``("up", "upsampler", b, 0)`` and ``("up", "block", b, 0)``.

Differences from the authors, as asked for: the caller gives the denoising step index with
:meth:`DeepCacheReference.set_step` (the authors look the timestep up in
``scheduler.timesteps``), the uniform rule counts from step 0 (the authors count from the
first step index they see), a U-Net with ``mid_block = None`` is accepted (nothing to wrap),
and a block without a ``downsamplers``/``upsamplers`` attribute is treated as having none.

:func:`quad_center_full_steps` reproduces the non-uniform schedule of
``DeepCache/sd/pipeline_stable_diffusion.py`` (``sample_from_quad_center``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

CacheKey = tuple[str, str, int, int]


class DeepCacheReference:
    """DeepCache on a ``UNet2DConditionModel``, after the authors' ``DeepCacheSDHelper``.

    ``branch`` is the authors' ``cache_branch_id``: ``cache_layer_id = branch % 3`` and
    ``cache_block_id = branch // 3``. ``full_steps`` optionally says which step indices are
    full steps (for a non-uniform schedule); by default a step ``i`` is full when
    ``i % interval == 0``.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        interval: int,
        branch: int,
        full_steps: Callable[[int], bool] | None = None,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if branch < 0:
            raise ValueError(f"branch must be >= 0, got {branch}")
        self.unet = unet
        self.interval = interval
        self.branch = branch
        self.cache_layer_id = branch % 3
        self.cache_block_id = branch // 3
        self.full_steps = full_steps
        self.cur_step = 0
        self._originals: dict[CacheKey, tuple[torch.nn.Module, Any, bool]] = {}
        self._cache: dict[CacheKey, Any] = {}
        self._enabled = False

    # -- the authors' rule -------------------------------------------------------------

    def is_full_step(self, index: int) -> bool:
        """Whether step ``index`` recomputes everything."""
        if self.full_steps is not None:
            return bool(self.full_steps(index))
        return index % self.interval == 0

    def is_skip_step(self, block_i: int, layer_i: int, blocktype: str = "down") -> bool:
        """The authors' ``is_skip_step`` for the current step."""
        if self.is_full_step(self.cur_step):
            return False
        if block_i > self.cache_block_id or blocktype == "mid":
            return True
        if block_i < self.cache_block_id:
            return False
        if blocktype == "down":
            return layer_i >= self.cache_layer_id
        return layer_i > self.cache_layer_id

    # -- public API --------------------------------------------------------------------

    def set_step(self, index: int) -> None:
        """Set the index of the denoising step about to run."""
        self.cur_step = index

    def enable(self) -> None:
        """Wrap the forwards (the originals are kept); clears the cache."""
        if self._enabled:
            raise RuntimeError("DeepCacheReference is already enabled")
        self._cache = {}
        self.cur_step = 0
        unet: Any = self.unet  # diffusers' U-Net attributes are untyped ModuleLists
        for block_i, block in enumerate(unet.down_blocks):
            for layer_i, attention in enumerate(getattr(block, "attentions", None) or []):
                self._wrap(attention, ("down", "attentions", block_i, layer_i))
            resnets = getattr(block, "resnets", None) or []
            for layer_i, resnet in enumerate(resnets):
                self._wrap(resnet, ("down", "resnet", block_i, layer_i))
            # The authors key every downsampler of a block alike (there is at most one).
            for downsampler in getattr(block, "downsamplers", None) or []:
                self._wrap(downsampler, ("down", "downsampler", block_i, len(resnets)))
            self._wrap(block, ("down", "block", block_i, 0))
        mid_block = getattr(unet, "mid_block", None)
        if mid_block is not None:
            self._wrap(mid_block, ("mid", "mid_block", 0, 0))
        block_num = len(unet.up_blocks)
        for pos, block in enumerate(unet.up_blocks):
            block_i = block_num - pos - 1
            resnets = getattr(block, "resnets", None) or []
            layer_num = len(resnets)
            for layer_i, attention in enumerate(getattr(block, "attentions", None) or []):
                self._wrap(attention, ("up", "attentions", block_i, layer_num - layer_i - 1))
            for layer_i, resnet in enumerate(resnets):
                self._wrap(resnet, ("up", "resnet", block_i, layer_num - layer_i - 1))
            for upsampler in getattr(block, "upsamplers", None) or []:
                self._wrap(upsampler, ("up", "upsampler", block_i, 0))
            self._wrap(block, ("up", "block", block_i, 0))
        self._enabled = True

    def disable(self) -> None:
        """Restore every wrapped forward and clear the cache."""
        # Restore in reverse order, so a module wrapped twice would get its true original.
        for module, original, had_own in reversed(list(self._originals.values())):
            if had_own:
                module.forward = original
            else:
                del module.forward
        self._originals = {}
        self._cache = {}
        self.cur_step = 0
        self._enabled = False

    def cached(self, key: CacheKey) -> torch.Tensor | tuple:
        """The output cached under ``key`` (raises ``KeyError`` when none is)."""
        return self._cache[key]

    @property
    def cache_keys(self) -> list[CacheKey]:
        """The keys wrapped, in wrapping order."""
        return list(self._originals)

    # -- wrapping ----------------------------------------------------------------------

    def _wrap(self, module: torch.nn.Module, key: CacheKey) -> None:
        if key in self._originals:
            raise RuntimeError(f"two modules share the DeepCache key {key}")
        had_own = "forward" in module.__dict__
        original = module.forward
        self._originals[key] = (module, original, had_own)
        blocktype, _, block_i, layer_i = key

        def wrapped_forward(*args: Any, **kwargs: Any) -> Any:
            if self.is_skip_step(block_i, layer_i, blocktype):
                return self._cache[key]
            result = original(*args, **kwargs)
            self._cache[key] = result
            return result

        module.forward = wrapped_forward


def _sample_from_quad_center(
    total_numbers: int, n_samples: int, center: int, pow: float
) -> list[int]:
    """The authors' ``sample_from_quad_center`` (``DeepCache/sd/pipeline_stable_diffusion.py``).

    Same arithmetic, Python scalars included: ``(-center) ** (1 / pow)`` is a Python complex
    number when ``center > 0``, and ``np.int32`` keeps the real part (the authors get a
    ``ComplexWarning`` there; it is silenced here).
    """
    indices: list[Any] = []
    while pow > 1:
        x_values = np.linspace(
            (-center) ** (1 / pow), (total_numbers - center) ** (1 / pow), n_samples + 1
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            truncated = np.int32(x_values**pow)
        indices = [0] + [x + center for x in np.unique(truncated)[1:-1]]
        if len(indices) == n_samples:
            break
        pow -= 0.02
    if pow <= 1:
        raise ValueError("Cannot find suitable pow. Please adjust n_samples or decrease center.")
    return [int(i) for i in indices]


def quad_center_full_steps(num_steps: int, interval: int, center: int, power: float) -> list[int]:
    """The full-step indices of the authors' non-uniform schedule (``uniform=False``).

    As in ``DeepCache/sd/pipeline_stable_diffusion.py``: with ``interval == 1`` every step
    is full; otherwise ``ceil(num_steps / interval)`` steps are drawn by
    ``sample_from_quad_center(num_steps, n, center=center, pow=power)`` and sorted. Raises
    ``ValueError`` when the authors' search for an exponent fails.
    """
    if interval == 1:
        return list(range(num_steps))
    num_slow_step = num_steps // interval
    if num_steps % interval != 0:
        num_slow_step += 1
    return sorted(_sample_from_quad_center(num_steps, num_slow_step, int(center), float(power)))
