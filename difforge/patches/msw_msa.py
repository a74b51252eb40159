"""HiDiffusion MSW-MSA: shifted 2x2-window self-attention in the highest-resolution UNet blocks.

Follows ``make_diffusers_transformer_block`` of megvii-research/HiDiffusion (the version
with a generator): the self-attention ``attn1`` of each chosen ``BasicTransformerBlock``
runs on 2 x 2 windows of (ceil(H/2), ceil(W/2)) tokens after a cyclic shift of
``(window_h // 4 * k, window_w // 4 * k)`` with ``k`` in 0..3, and no mask, so tokens wrap
around the border. An odd H or W is bicubic-resized to twice the window before the
partition and back after it, as the authors do. Cross-attention and the feed-forward stay
global.

The authors draw ``k`` with ``torch.rand`` on every call of every block. Here ``k`` is an
explicit input: an int64 tensor (one element, taken modulo 4) passed as
``cross_attention_kwargs={"msw_msa_shift": k}`` to the UNet; without it ``k`` = 0. One
``k`` per call is shared by all patched blocks (the authors' blocks draw independently).
:func:`shift_table` gives the seeded per-step values the manifest stores.

The shift is applied as a gather with index arithmetic on ``arange`` (no ``torch.roll``
with a tensor shift, which does not export), so the graph keeps dynamic H and W. Whether
H, W are odd is decided while tracing: declare the exported latent dims so that the grids
of the windowed blocks are even (latent = 2*h for blocks at full resolution, 4*h for
SDXL's ``down_blocks.1``), or torch.export stops on the parity guard.

The hooks sit on ``attn1`` itself (pre: partition, post: reverse) and on the block's
``Transformer2DModel`` (records H, W from its (B, C, H, W) input), so MSW-MSA composes
with LinFusion in either order (a module swap keeps the slot's hooks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from difforge.artifact.step_tables import step_table
from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import ExtraInputSpec, Patch, PatchOption, PatchReport

__all__ = [
    "SHIFT_INPUT",
    "MswMsaPatch",
    "default_blocks",
    "shift_table",
    "window_partition",
]

SHIFT_INPUT = "msw_msa_shift"
#: k = number of thresholds below a uniform draw: each quarter with probability 1/4
SHIFT_TABLE = {"thresholds": [0.25, 0.5, 0.75]}


def shift_table(num_steps: int, seed: int) -> list[int]:
    """Quarter indices ``k`` (0..3) for steps ``0 .. num_steps-1``.

    The authors draw ``torch.rand(1)`` on every call and threshold it at ¼, ½, ¾; difforge
    draws the same distribution as an explicit seeded table, computed by the torch-free
    runtime's generator so that export, runtime and PyTorch use one definition.
    """
    return step_table("categorical", num_steps, seed, SHIFT_TABLE)


def _shift_index(
    height: Any, width: Any, quarter: torch.Tensor | int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
    """Gather indices for the partition and for its inverse on an even (height, width) grid.

    Position p of the partitioned sequence, ordered (window_y, window_x, y, x), reads token
    ``((wy*wh + y + sy) % height) * width + (wx*ww + x + sx) % width`` -- a roll by
    (-sy, -sx) followed by the Swin partition.
    """
    wh, ww = height // 2, width // 2
    if isinstance(quarter, torch.Tensor):
        k = quarter.reshape(-1)[:1].to(device=device, dtype=torch.long) % 4
    else:
        k = torch.full((1,), int(quarter) % 4, dtype=torch.long, device=device)
    # Sizes as tensors: the ONNX translation of `tensor % SymInt` needs a concrete int.
    h_t, w_t = (torch.full((1,), size, dtype=torch.long, device=device) for size in (height, width))
    wh_t, ww_t = h_t // 2, w_t // 2
    sy, sx = (wh_t // 4) * k, (ww_t // 4) * k
    rows = (torch.arange(height, device=device) + sy) % h_t  # (height,)
    cols = (torch.arange(width, device=device) + sx) % w_t
    gather = (rows.reshape(2, 1, wh, 1) * w_t + cols.reshape(1, 2, 1, ww)).reshape(-1)
    # Inverse: where token (r, c) landed, from the rolled coordinates (r - sy, c - sx).
    rr = (torch.arange(height, device=device) - sy + h_t) % h_t
    cc = (torch.arange(width, device=device) - sx + w_t) % w_t
    row_part = (rr // wh_t) * (2 * wh_t * ww_t) + (rr % wh_t) * ww_t
    col_part = (cc // ww_t) * (wh_t * ww_t) + cc % ww_t
    scatter = (row_part.reshape(height, 1) + col_part.reshape(1, width)).reshape(-1)
    return gather, scatter, wh, ww


def window_partition(
    x: torch.Tensor, height: Any, width: Any, quarter: torch.Tensor | int
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Split ``x`` (B, height*width, C) into (4B, wh*ww, C) shifted windows.

    Returns the windows and the function that maps the windows' outputs back to
    (B, height*width, C).
    """
    batch, _, channels = x.shape
    odd = height % 2 != 0 or width % 2 != 0
    grid_h, grid_w = height, width
    if odd:
        grid_h, grid_w = 2 * ((height + 1) // 2), 2 * ((width + 1) // 2)
        x = _resize(x, height, width, grid_h, grid_w)
    gather, scatter, wh, ww = _shift_index(grid_h, grid_w, quarter, x.device)
    windows = x.index_select(1, gather).reshape(batch * 4, wh * ww, channels)

    def reverse(out: torch.Tensor) -> torch.Tensor:
        y = out.reshape(batch, 4 * wh * ww, out.shape[-1]).index_select(1, scatter)
        if odd:
            y = _resize(y, grid_h, grid_w, height, width)
        return y

    return windows, reverse


def _resize(x: torch.Tensor, h: Any, w: Any, new_h: Any, new_w: Any) -> torch.Tensor:
    batch, _, channels = x.shape
    img = x.reshape(batch, h, w, channels).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(new_h, new_w), mode="bicubic")
    return img.permute(0, 2, 3, 1).reshape(batch, new_h * new_w, channels)


class _Shared:
    """Per-call state: the shift popped from the UNet's kwargs."""

    def __init__(self) -> None:
        self.quarter: torch.Tensor | int = 0


class _BlockWindowing:
    """Hooks around one block's ``attn1``: partition its input, reverse its output."""

    def __init__(self, shared: _Shared) -> None:
        self.shared = shared
        self.grid: tuple[Any, Any] | None = None
        self.reverse: list[Callable[[torch.Tensor], torch.Tensor]] = []

    def record_grid(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        self.grid = (hidden.shape[-2], hidden.shape[-1])

    def before_attn(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.grid is None:
            raise DifforgeError("msw-msa: attention called outside its Transformer2DModel")
        height, width = self.grid
        if args:
            windows, reverse = window_partition(args[0], height, width, self.shared.quarter)
            args = (windows, *args[1:])
        else:
            windows, reverse = window_partition(
                kwargs["hidden_states"], height, width, self.shared.quarter
            )
            kwargs = {**kwargs, "hidden_states": windows}
        self.reverse.append(reverse)
        return args, kwargs

    def after_attn(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        return self.reverse.pop()(output)


def default_blocks(unet: torch.nn.Module) -> list[str]:
    """The highest-resolution attention blocks: HiDiffusion's choice for SD1.5 and SDXL.

    The first down block with attentions and its mirror among the up blocks, e.g. SD1.5
    ``down_blocks.0.attentions`` + ``up_blocks.3.attentions``; SDXL ``down_blocks.1`` +
    ``up_blocks.1``; a 2-level UNet ``down_blocks.0`` + ``up_blocks.1``.
    """
    down_blocks = getattr(unet, "down_blocks", None)
    up_blocks = getattr(unet, "up_blocks", None)
    if down_blocks is None or up_blocks is None:
        return []
    for i, block in enumerate(down_blocks):
        if getattr(block, "attentions", None):
            j = len(up_blocks) - 1 - i
            names = [f"down_blocks.{i}.attentions"]
            if 0 <= j < len(up_blocks) and getattr(up_blocks[j], "attentions", None):
                names.append(f"up_blocks.{j}.attentions")
            return names
    return []


def _pop_shift(shared: _Shared) -> Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]:
    def hook(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        shared.quarter = 0
        extra = kwargs.get("cross_attention_kwargs")
        if isinstance(extra, dict) and SHIFT_INPUT in extra:
            # Popped here so that no attention processor sees (and warns about) the key.
            extra = dict(extra)
            shared.quarter = extra.pop(SHIFT_INPUT)
            kwargs = {**kwargs, "cross_attention_kwargs": extra}
        return args, kwargs

    return hook


def _reset_shift(shared: _Shared) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        shared.quarter = 0

    return hook


@register_patch
class MswMsaPatch(Patch):
    """HiDiffusion's MSW-MSA on the chosen UNet transformer blocks."""

    name = "msw-msa"
    summary = "HiDiffusion shifted-window self-attention in the highest-resolution UNet blocks"
    targets = ("UNet2DConditionModel",)
    option_specs = (
        PatchOption(
            "blocks",
            "str",
            "",
            "'+'-separated module names (or prefixes) of the transformer blocks to window, "
            "e.g. down_blocks.0.attentions+up_blocks.3.attentions; empty = the "
            "highest-resolution attention blocks",
        ),
    )

    def _apply(self, denoiser: torch.nn.Module) -> PatchReport:
        from diffusers.models.attention import BasicTransformerBlock

        requested = [p.strip() for p in self.options["blocks"].split("+") if p.strip()]
        prefixes = requested or default_blocks(denoiser)
        if not prefixes:
            raise DifforgeError(
                f"patch 'msw-msa' found no attention blocks in {type(denoiser).__name__}"
            )
        modules = dict(denoiser.named_modules())
        selected: list[str] = []
        for prefix in prefixes:
            found = [
                name
                for name, module in modules.items()
                if isinstance(module, BasicTransformerBlock)
                and (name == prefix or name.startswith(prefix + "."))
            ]
            if not found:
                raise DifforgeError(
                    f"patch 'msw-msa' option 'blocks': {prefix!r} names no transformer block "
                    f"of {type(denoiser).__name__}"
                )
            selected.extend(n for n in found if n not in selected)

        shared = _Shared()
        self._shared = shared
        handles = [
            denoiser.register_forward_pre_hook(_pop_shift(shared), with_kwargs=True),
            denoiser.register_forward_hook(_reset_shift(shared), always_call=True),
        ]
        for name in selected:
            # The block's parent Transformer2DModel sees the (B, C, H, W) feature map.
            parent_name = name.rsplit(".transformer_blocks.", 1)[0]
            parent = modules.get(parent_name)
            if parent is None or parent_name == name:
                raise DifforgeError(f"patch 'msw-msa': {name} is not inside a Transformer2DModel")
            windowing = _BlockWindowing(shared)
            attn = modules[name].attn1
            handles += [
                parent.register_forward_pre_hook(windowing.record_grid, with_kwargs=True),
                attn.register_forward_pre_hook(windowing.before_attn, with_kwargs=True),
                attn.register_forward_hook(windowing.after_attn, with_kwargs=True),
            ]
        for handle in handles:
            self._on_undo(handle.remove)
        return PatchReport(
            patch=self.name,
            options={**self.options, "blocks": "+".join(prefixes)},
            replaced=[f"{name}.attn1" for name in selected],
            notes=[
                f"shift input {SHIFT_INPUT!r}: quarter index k (0-3) per call, window shift "
                "(window_h//4*k, window_w//4*k); absent = 0; one k for all patched blocks",
            ],
        )

    def extra_inputs(self) -> dict[str, ExtraInputSpec]:
        return {
            SHIFT_INPUT: ExtraInputSpec(
                name=SHIFT_INPUT,
                dtype="int64",
                shape=(1,),
                kwargs_key="cross_attention_kwargs",
                default=[0],
                description="MSW-MSA window shift: quarter index k in 0..3 (taken modulo 4)",
                table_kind="categorical",
                table_params=dict(SHIFT_TABLE),
            )
        }
