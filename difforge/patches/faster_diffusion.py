"""Faster Diffusion (Li et al., 2023): the U-Net's encoder only at key steps.

What the authors' ``register_faster_forward`` and ``register_parallel_pipeline``
(``utils_sd.py``) compute: at a key step the U-Net runs whole, and its encoder's results
(``conv_in``'s output and every down block's residuals: the skip tensors; the mid block's
output) are kept; at the other steps only the decoder (up blocks, ``conv_out``) runs, from
those kept tensors with the step's own time embedding and conditioning. Key steps are the
authors' ``50ls`` list (0, 1, 2, 3, 5, 10, 15, 25, 35) or every ``interval``-th step. Their
sampler also adds ``0.003`` times the initial noise to the latents before each step whose
timestep is below 500 ("prior noise injection").

So the method is two graphs sharing one weight file:

- ``full(x, t, c) -> (eps, skips..., mid)``: the U-Net, also emitting the encoder's tensors;
- ``decoder(t, c, skips..., mid) -> eps``: no ``sample`` input; the encoder's modules return
  the given tensors and the exporter's dead-code elimination drops them.

A decoder step does not read its latents, so the runtime runs the non-key steps after a key
step as one batched call (each step's rows with its own timestep), as the authors batch them;
the authors also put the key step's own decoder in that batch, which here runs inside
``full`` (the same arithmetic). ``parallel`` bounds how many steps one call covers; the
decoder graph's batch range is the denoiser's times that.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from difforge.artifact.interval_rule import IntervalRule
from difforge.artifact.step_plan import PriorNoise, Rule
from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import PatchOption, PatchReport
from difforge.patches.stepped import StateTensor, SteppedPatch

VARIANTS = ("full", "decoder")
#: the authors' key steps of 50 (their ``mod='50ls'``, the default)
KEY_STEPS_50 = (0, 1, 2, 3, 5, 10, 15, 25, 35)
#: their prior noise injection applies below this timestep (``t / 1000 < 0.5``)
NOISE_BELOW = 500.0
MID = "fd_mid"


def encoder_states(unet: nn.Module) -> list[tuple[str, StateTensor]]:
    """(module, state) for what the decoder reads from the encoder, in the U-Net's order:
    ``conv_in``'s output, each down block's residuals, then the mid block's output."""
    conv_in: Any = unet.conv_in
    d = 1
    out = [("conv_in", StateTensor("fd_skip_0", int(conv_in.out_channels), d))]
    downs: Any = unet.down_blocks
    for b, block in enumerate(downs):
        channels = [int(r.out_channels) for r in block.resnets]
        levels = [d] * len(channels)
        for sampler in getattr(block, "downsamplers", None) or ():
            d *= 2
            channels.append(int(sampler.out_channels))
            levels.append(d)
        for c, level in zip(channels, levels, strict=True):
            out.append((f"down_blocks.{b}", StateTensor(f"fd_skip_{len(out)}", c, level)))
    mid: Any = getattr(unet, "mid_block", None)
    if mid is not None:
        out.append(("mid_block", StateTensor(MID, int(mid.resnets[-1].out_channels), d)))
    return out


@register_patch
class FasterDiffusionPatch(SteppedPatch):
    """Faster Diffusion: the whole U-Net at key steps, its decoder alone in between."""

    name = "faster-diffusion"
    summary = "Faster Diffusion: the U-Net encoder at key steps only, decoder steps batched"
    targets = ("UNet2DConditionModel",)
    main_option = "interval"
    option_specs = (
        PatchOption(
            "interval", "int", 0,
            "key steps: 0 = the authors' list for 50 steps (0,1,2,3,5,10,15,25,35); "
            "N = every N-th step", 0, 1000,
        ),
        PatchOption(
            "noise", "float", 0.003,
            "prior noise injection: x += noise * x_T before steps with t < 500 (0: off)", 0.0, 0.1,
        ),
        PatchOption(
            "parallel", "int", 4,
            "decoder steps one batched call serves at most (the decoder graph is built and "
            "checked for this many times the denoiser's batch)", 1, 64,
        ),
    )

    def _validate(self) -> None:
        self._variant = VARIANTS[0]
        self._states: list[tuple[str, StateTensor]] = []
        self._cache: dict[str, torch.Tensor] = {}
        self._bound: dict[str, torch.Tensor] | None = None

    def _apply(self, denoiser: nn.Module) -> PatchReport:
        self._states = encoder_states(denoiser)
        modules = list(dict.fromkeys(module for module, _ in self._states))
        handles = [
            denoiser.get_submodule(m).register_forward_hook(self._hook(m)) for m in modules
        ]

        def undo() -> None:
            for handle in handles:
                handle.remove()
            self._states, self._cache, self._bound = [], {}, None
            self._variant = VARIANTS[0]

        self._on_undo(undo)
        o = self.options
        keys = (
            f"key steps {', '.join(map(str, KEY_STEPS_50))} (the authors' list for 50 steps; "
            "at more steps the later ones all reuse step 35's encoder)"
            if o["interval"] == 0
            else f"a key step every {o['interval']} steps"
        )
        noise = (
            f"prior noise {o['noise']:g} x_T below t={NOISE_BELOW:g}" if o["noise"] else
            "no prior noise"
        )
        notes = [
            f"{keys}; {len(self._states)} encoder tensors kept between steps; {noise}; "
            f"decoder steps batched {o['parallel']} at most per call"
        ]
        return PatchReport(self.name, dict(self.options), modules, notes)

    def _hook(self, module: str) -> Any:
        names = [s.name for m, s in self._states if m == module]

        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            """Full: keep the module's tensors. Decoder: return the bound state (the graph's
            inputs) or, in a plain PyTorch sampling loop, what the last key step kept."""
            values = output[1] if module.startswith("down_blocks") else (output,)
            if self._variant == "full":
                self._cache.update(zip(names, values, strict=True))
                return None
            state = self._bound if self._bound is not None else self._cache
            if not all(n in state for n in names):
                raise DifforgeError("faster-diffusion: a decoder step ran before any key step")
            kept = tuple(state[n] for n in names)
            # a down block's hidden state is its last residual; the next block reads it
            return (kept[-1], kept) if module.startswith("down_blocks") else kept[0]

        return hook

    # ------------------------------------------------------------------ variants

    def variants(self) -> list[str]:
        return list(VARIANTS)

    def set_variant(self, name: str) -> None:
        if name not in VARIANTS:
            raise DifforgeError(
                f"patch 'faster-diffusion' has no variant {name!r} (it has full, decoder)"
            )
        self._variant = name

    def step_rules(self) -> list[Rule]:
        interval = self.options["interval"]
        if interval == 0:
            return [IntervalRule("decoder", 1, spacing="keys", keys=KEY_STEPS_50)]
        return [IntervalRule("decoder", interval)]

    def prior_noise(self) -> PriorNoise | None:
        scale = self.options["noise"]
        return PriorNoise(scale, NOISE_BELOW) if scale else None

    def takes_sample(self, variant: str) -> bool:
        return variant != "decoder"

    def batch_steps(self, variant: str) -> int:
        return int(self.options["parallel"]) if variant == "decoder" else 1

    # ------------------------------------------------------------------ state

    def _tensors(self) -> list[StateTensor]:
        if not self._states:
            raise DifforgeError("patch 'faster-diffusion' is not applied")
        return [s for _, s in self._states]

    def state_inputs(self, variant: str) -> list[StateTensor]:
        return self._tensors() if variant == "decoder" else []

    def state_outputs(self, variant: str) -> list[StateTensor]:
        return self._tensors() if variant == "full" else []

    def carry(self) -> dict[str, str]:
        return {s.name: s.name for s in self._tensors()}

    def bind_state(self, inputs: dict[str, torch.Tensor] | None) -> None:
        self._bound = inputs or None

    def take_state(self) -> dict[str, torch.Tensor]:
        if not self._cache:
            raise DifforgeError("faster-diffusion: no key step has run")
        return dict(self._cache)
