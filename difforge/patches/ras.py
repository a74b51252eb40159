"""RAS, region-adaptive sampling (Liu et al., 2025; microsoft/RAS): on most steps a DiT or
FLUX transformer recomputes only the image tokens whose latents are changing least (the
authors cache the highest-scoring ones), reusing the rest from earlier steps.

What the authors' code computes (``utils/ras_manager.py``, ``schedulers/ras_*``,
``modules/attention_processor.py``, ``modules/flux/transformer_forward.py``), per step i of N:

- steps ``i < start`` and the reset steps are dense; every other step is a RAS step;
- after the sampler's step, when the next step is a RAS step, the tokens it recomputes are
  chosen from the change Δ the step made (:mod:`difforge.artifact.token_selection`);
- a RAS step gathers the active tokens after the patch embedding (with their own RoPE
  positions), lets every self-attention attend from them to per-layer K/V caches refreshed
  by the dense step before and by each RAS step's active rows (:mod:`.ras_attention`), and
  scatters its output into the previous step's model output, which keeps the cached tokens'
  (the authors' scheduler fills ``model_output[:, cached_index]`` with the previous step's).

So the method is two graphs sharing one weight file: ``dense(x, t, c) -> (eps, *next)`` and
``ras(x, t, c, ras_active, ras_out, ras_k*, ras_v*) -> (eps, *next)``, where ``ras_out`` is the
final projection's output per token (the filled model output), the caches are one per
self-attention layer, all kept as token-grid feature maps, and ``next`` is each of them as
this step leaves it (``ras_out_next``, ``ras_k0_next``, ...). The step plan runs ``dense`` on
steps before ``start`` and on reset steps, carries the tensors from call to call, and names
the token selection the runtime computes.

In a PyTorch loop the patch keeps the state itself and chooses the tokens from its own
consecutive inputs (the latents the sampler hands it); call :meth:`RasPatch.reset` between
images. Its starvation counters start at 0, not at the authors' ``-(steps + 1)``: a common
offset scales every score alike, so the same tokens are chosen.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from difforge.artifact.interval_rule import IntervalRule
from difforge.artifact.step_plan import Rule
from difforge.artifact.token_selection import METRICS, TokenSelection
from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import PatchOption, PatchReport
from difforge.patches.ras_attention import (
    RasAttnProcessor,
    RasFluxAttnProcessor,
    RasForward,
    gather_rows,
    scatter_rows,
)
from difforge.patches.stepped import StateTensor, SteppedPatch

VARIANTS = ("dense", "ras")
ACTIVE = "ras_active"
OUT = "ras_out"
GRID_KWARG = "ras_grid"
NEXT = "_next"


def parse_resets(text: str) -> tuple[int, ...]:
    """The ``resets`` option: step indices joined by ``+`` (``12+22``; a comma separates the
    patch's options), or "none"."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        steps = tuple(sorted({int(part) for part in text.split("+")}))
    except ValueError:
        raise DifforgeError(
            f"patch 'ras' option 'resets': expected step indices like 12+22, or none; got {text!r}"
        ) from None
    if any(not 0 <= s <= 1000 for s in steps):
        raise DifforgeError("patch 'ras' option 'resets': steps must be in [0, 1000]")
    return steps


def _to_tokens(feature: torch.Tensor) -> torch.Tensor:
    """A state map [B, D, h, w] -> token rows [B, h*w, D]."""
    return feature.flatten(2).transpose(1, 2)


def _to_map(rows: torch.Tensor, grid: tuple[Any, Any]) -> torch.Tensor:
    return rows.transpose(1, 2).reshape(rows.shape[0], rows.shape[2], grid[0], grid[1])


@register_patch
class RasPatch(SteppedPatch):
    """RAS: a DiT or FLUX transformer recomputes a share of its image tokens per step."""

    name = "ras"
    summary = "RAS: DiT/FLUX steps recompute the tokens the previous step chose, reuse the rest"
    targets = ("DiTTransformer2DModel", "FluxTransformer2DModel")
    main_option = "ratio"
    option_specs = (
        PatchOption("ratio", "float", 0.5, "share of image tokens a RAS step recomputes",
                    0.01, 1.0),
        PatchOption("start", "int", 4, "steps before this one are dense (at least 1)", 1, 1000),
        PatchOption("resets", "str", "12+22", "dense steps after start (12+22, or none)"),
        PatchOption("starvation", "float", 0.1, "starvation_scale on the drop counter", 0.0, 10.0),
        PatchOption("high_ratio", "float", 1.0, "share of cached tokens taken from the top",
                    0.0, 1.0),
        PatchOption("metric", "str", "std", "per-pixel score of the change", choices=METRICS),
    )

    def _validate(self) -> None:
        self._resets = parse_resets(self.options["resets"])
        self._variant = VARIANTS[0]
        self._forward = RasForward()
        self._layers: list[int] = []
        self._out_channels = 0
        self._patch_size = 2
        self._grid: tuple[Any, Any] | None = None
        self._is_flux = False
        self._bound: dict[str, torch.Tensor] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget what earlier steps left (a PyTorch loop calls it between images)."""
        self._kept: dict[str, torch.Tensor] = {}
        self._last_input: np.ndarray | None = None
        self._drops: np.ndarray | None = None

    # ------------------------------------------------------------------ apply

    def _apply(self, denoiser: nn.Module) -> PatchReport:
        model: Any = denoiser
        self._is_flux = type(denoiser).__name__ == "FluxTransformer2DModel"
        attentions = self._attentions(denoiser)
        cls = RasFluxAttnProcessor if self._is_flux else RasAttnProcessor
        widths = []
        for layer, (_name, attn) in enumerate(attentions.items()):
            original = attn.processor
            attn.set_processor(cls(self._forward, layer))
            self._on_undo(functools.partial(attn.set_processor, original))
            widths.append(int(attn.to_k.out_features))
        self._layers = widths
        if self._is_flux:
            self._patch_size = 2  # FLUX packs 2x2 latent patches into one token
            proj: nn.Module = model.proj_out
            hooks = [model.register_forward_pre_hook(self._flux_begin, with_kwargs=True)]
        else:
            self._patch_size = int(model.config.patch_size)
            proj = model.proj_out_2
            hooks = [
                model.pos_embed.register_forward_pre_hook(self._dit_begin),
                model.pos_embed.register_forward_hook(self._gather),
            ]
        self._out_channels = int(cast(Any, proj).out_features)
        channels = int(model.config.in_channels) // (4 if self._is_flux else 1)
        if channels < 2 and self.options["metric"] == "std":
            raise DifforgeError(
                f"patch 'ras': metric=std scores a token by the std over the latent's channels, "
                f"and this model's latent has {channels}; use metric=l2norm"
            )
        hooks.append(proj.register_forward_hook(self._fill))
        for hook in hooks:
            self._on_undo(hook.remove)
        self._on_undo(self.reset)
        resets = ", ".join(map(str, self._resets)) or "none"
        notes = [
            f"{len(attentions)} self-attentions keep K/V caches; RAS steps recompute "
            f"{self.options['ratio']:g} of the image tokens from step {self.options['start']} "
            f"(dense again at {resets})"
        ]
        return PatchReport(self.name, dict(self.options), list(attentions), notes)

    def _attentions(self, denoiser: nn.Module) -> dict[str, Any]:
        if self._is_flux:
            from diffusers.models.transformers.transformer_flux import FluxAttention

            return {n: m for n, m in denoiser.named_modules() if isinstance(m, FluxAttention)}
        from diffusers.models.attention_processor import Attention

        return {
            n: m
            for n, m in denoiser.named_modules()
            if isinstance(m, Attention) and n.endswith("attn1") and not m.is_cross_attention
        }

    # ------------------------------------------------------------------ forward hooks

    def _begin(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Start a forward on ``latents`` [B, C, H, W]: the active tokens (None: dense) and the
        caches it reads, from the bound state or, in a PyTorch loop, the patch's own."""
        forward = self._forward
        forward.written = {}
        forward.active, forward.caches = None, {}
        eager = self._bound is None
        tracing = torch.compiler.is_exporting() or torch.compiler.is_compiling()
        if eager and not tracing:  # a PyTorch loop: remember the latents for the next choice
            current = latents.detach().float().cpu().numpy()
            previous, self._last_input = self._last_input, current
        if self._variant == "dense":
            return None
        if not eager:
            state = cast(dict[str, torch.Tensor], self._bound)
            forward.active = state[ACTIVE]
            forward.caches = {k: _to_tokens(v) for k, v in state.items() if k != ACTIVE}
            return forward.active
        if tracing:
            raise DifforgeError("ras: a RAS graph is exported with its state bound")
        if previous is None or not self._kept:
            raise DifforgeError("ras: a RAS step ran before any dense step")
        rule = self.token_selection()
        if self._drops is None:
            self._drops = np.zeros((len(current), rule.tokens(current.shape)))
        active = rule.select(current - previous, self._drops)
        forward.active = torch.from_numpy(active).to(latents.device)
        forward.caches = dict(self._kept)
        return forward.active

    def _dit_begin(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        latents = args[0]
        p = self._patch_size
        self._grid = (latents.shape[-2] // p, latents.shape[-1] // p)
        self._begin(latents)

    def _gather(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> Any:
        active = self._forward.active
        return None if active is None else gather_rows(output, active)

    def _flux_begin(
        self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args:
            raise DifforgeError("ras: call FluxTransformer2DModel with keyword arguments")
        packed = kwargs["hidden_states"]
        extra = kwargs.get("joint_attention_kwargs")
        if isinstance(extra, dict) and GRID_KWARG in extra:
            extra = dict(extra)
            self._grid = extra.pop(GRID_KWARG)
            kwargs = {**kwargs, "joint_attention_kwargs": extra or None}
        else:
            ids = kwargs["img_ids"]
            ids = ids[0] if ids.dim() == 3 else ids
            height = int(ids[:, 1].max().item()) + 1
            self._grid = (height, packed.shape[1] // height)
        from difforge.sources.tiny_flux import unpack_latents  # diffusers, on first use

        self._forward.text_len = kwargs["encoder_hidden_states"].shape[1]
        active = self._begin(unpack_latents(packed, *self._grid))
        if active is not None:
            kwargs = {**kwargs, "hidden_states": gather_rows(packed, active)}
        return args, kwargs

    def _fill(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        """The final projection's rows of this call -> every token's, the others from the
        previous step's output."""
        forward = self._forward
        if forward.active is not None:
            output = scatter_rows(forward.caches[OUT], forward.active, output)
        forward.written[OUT] = output
        if self._bound is None:
            self._kept = dict(forward.written)
        return output

    # ------------------------------------------------------------------ variants

    def variants(self) -> list[str]:
        return list(VARIANTS)

    def set_variant(self, name: str) -> None:
        if name not in VARIANTS:
            raise DifforgeError(f"patch 'ras' has no variant {name!r} (it has dense, ras)")
        self._variant = name

    def step_rules(self) -> list[Rule]:
        keys = tuple(sorted(set(range(self.options["start"])) | set(self._resets)))
        return [IntervalRule("ras", 1, spacing="keys", keys=keys)]

    def token_selection(self) -> TokenSelection:
        o = self.options
        return TokenSelection(
            ACTIVE, "ras", self._patch_size, o["ratio"], o["starvation"], o["high_ratio"],
            o["metric"],
        )

    # ------------------------------------------------------------------ state

    def _states(self) -> list[StateTensor]:
        if not self._layers:
            raise DifforgeError("patch 'ras' is not applied")
        p = self._patch_size
        out = [StateTensor(OUT, self._out_channels, p)]
        for layer, width in enumerate(self._layers):
            out += [StateTensor(f"ras_k{layer}", width, p), StateTensor(f"ras_v{layer}", width, p)]
        return out

    def state_inputs(self, variant: str) -> list[StateTensor]:
        return self._states() if variant == "ras" else []

    def state_outputs(self, variant: str) -> list[StateTensor]:
        return [replace(s, name=s.name + NEXT) for s in self._states()]

    def carry(self) -> dict[str, str]:
        return {s.name: s.name + NEXT for s in self._states()}

    def wrapper_options(self) -> dict[str, Any]:
        """FLUX's transformer sees packed tokens: the wrapper hands it the token grid."""
        return {"grid_kwarg": GRID_KWARG} if self._is_flux else {}

    def bind_state(self, inputs: dict[str, torch.Tensor] | None) -> None:
        self._bound = dict(inputs) if inputs else None

    def take_state(self) -> dict[str, torch.Tensor]:
        written, grid = self._forward.written, self._grid
        if OUT not in written or grid is None:
            raise DifforgeError("ras: no forward has run")
        return {name + NEXT: _to_map(rows, grid) for name, rows in written.items()}
