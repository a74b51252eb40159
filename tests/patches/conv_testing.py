"""Shared helpers for the conv-patch tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import Dim

DATA = Path("/work/shared/data/scalecrafter")


def tiny_unet(seed: int = 0) -> Any:
    """The tiny-sd preset's U-Net (random seeded weights, eval)."""
    from difforge.sources.presets import tiny_sd_unet

    return tiny_sd_unet(seed)


def unet_inputs(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(1, 4, h, w, generator=g),
        torch.tensor([10.0]),
        torch.randn(1, 7, 64, generator=g),
    )


def run(unet: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return unet(*args, return_dict=False)[0]


def rel_err(a: Any, b: Any) -> float:
    """max|a - b| / max|b| (b is the reference)."""
    a_t = torch.as_tensor(a).detach().double()
    b_t = torch.as_tensor(b).detach().double()
    return float((a_t - b_t).abs().max() / b_t.abs().max())


class Wrapper(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, ehs: torch.Tensor
    ) -> torch.Tensor:
        return self.unet(sample, timestep, ehs, return_dict=False)[0]


def export_and_compare(
    unet: torch.nn.Module, path: Path, sizes: list[tuple[int, int]], multiple: int = 8
) -> list[float]:
    """Export with dynamic H, W (dynamo), run ONNX Runtime CPU at ``sizes``: errors."""
    import onnxruntime as ort

    wrapper = Wrapper(unet).eval()
    args = unet_inputs(*sizes[0])
    h, w = multiple * Dim("h", min=2, max=16), multiple * Dim("w", min=2, max=16)
    dynamic = ({2: h, 3: w}, None, None)
    from difforge.plugins.onnx_ops import CUSTOM_TRANSLATION_TABLE, attach_fallback_functions

    program = torch.onnx.export(
        wrapper,
        args,
        dynamic_shapes=dynamic,
        dynamo=True,
        custom_translation_table=CUSTOM_TRANSLATION_TABLE,
    )
    assert program is not None
    import onnx

    onnx.save(attach_fallback_functions(program.model_proto), str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    errors = []
    for size in sizes:
        case = unet_inputs(*size, seed=1)
        ref = run(unet, case)
        feed = {n: t.numpy() for n, t in zip(names, case, strict=True)}
        out = np.asarray(session.run(None, feed)[0])
        errors.append(rel_err(out, ref))
    return errors
