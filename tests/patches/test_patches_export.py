"""Each patched tiny denoiser through torch.onnx.export(dynamo=True) with dynamic H, W,
run on ONNX Runtime CPU at three spatial shapes against the patched PyTorch model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from patch_testing import (
    DiTExportWrapper,
    FluxExportWrapper,
    UNetExportWrapper,
    ort_session,
    rel_err,
    run_ort,
    spatial_dims,
    tiny_dit,
    tiny_unet,
    unet_inputs,
)

from difforge.patches import create_patch
from difforge.sources.tiny_flux import build_tiny_flux_transformer

pytestmark = pytest.mark.slow

TOL = 1e-4


def _check(
    session: Any, module: torch.nn.Module, cases: list[tuple[torch.Tensor, ...]]
) -> list[float]:
    errors = []
    for args in cases:
        with torch.no_grad():
            ref = module(*args)
        errors.append(rel_err(run_ort(session, args), ref))
    print(f"{type(module).__name__}: ONNX Runtime vs PyTorch, relative {errors}")
    assert max(errors) <= TOL, errors
    return errors


def _export(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    dynamic: dict[str, Any],
    path: Path,
    custom_ops: bool = False,
) -> Any:
    kwargs: dict[str, Any] = {}
    if custom_ops:
        from difforge.plugins.onnx_ops import CUSTOM_TRANSLATION_TABLE

        kwargs["custom_translation_table"] = CUSTOM_TRANSLATION_TABLE
    program = torch.onnx.export(module, args, dynamic_shapes=dynamic, dynamo=True, **kwargs)
    assert program is not None
    model = program.model_proto
    if custom_ops:
        from difforge.plugins.onnx_ops import attach_fallback_functions

        assert any(n.domain == "difforge" for n in model.graph.node)
        model = attach_fallback_functions(model)
    onnx.save(model, str(path))
    return ort_session(path)


def test_linfusion_unet(tmp_path: Path) -> None:
    unet = tiny_unet()
    create_patch("linfusion").apply(unet)
    with torch.no_grad():  # non-zero MLPs, so the exported graph exercises them
        for name, param in unet.named_parameters():
            if ".to_q_." in name or ".to_k_." in name:
                param.normal_(0, 0.1)
    wrapper = UNetExportWrapper(unet).eval()
    h, w = spatial_dims("h", "w", multiple=2)
    dynamic = {"sample": {2: h, 3: w}, "timestep": None, "encoder_hidden_states": None}
    session = _export(wrapper, unet_inputs(12, 16), dynamic, tmp_path / "linfusion.onnx")
    assert session.get_inputs()[0].shape == [1, 4, "2*h", "2*w"]
    _check(session, wrapper, [unet_inputs(12, 16, 1), unet_inputs(8, 8, 2), unet_inputs(20, 12, 3)])


def test_msw_msa_unet_with_shift_input(tmp_path: Path) -> None:
    unet = tiny_unet()
    create_patch("msw-msa").apply(unet)
    wrapper = UNetExportWrapper(unet).eval()
    h, w = spatial_dims("h", "w", multiple=2)
    dynamic = {
        "sample": {2: h, 3: w},
        "timestep": None,
        "encoder_hidden_states": None,
        "msw_msa_shift": None,
    }
    args = (*unet_inputs(16, 16), torch.tensor([1]))
    session = _export(wrapper, args, dynamic, tmp_path / "msw.onnx")
    shift = session.get_inputs()[3]
    assert (shift.name, shift.type, shift.shape) == ("msw_msa_shift", "tensor(int64)", [1])
    cases = [
        (*unet_inputs(hh, ww, k), torch.tensor([k]))
        for k, (hh, ww) in enumerate([(16, 16), (8, 24), (20, 12), (16, 8)])
    ]
    _check(session, wrapper, cases)


def test_clear_dit(tmp_path: Path) -> None:
    dit = tiny_dit()
    create_patch("clear:radius=2").apply(dit)
    wrapper = DiTExportWrapper(dit).eval()
    (side,) = spatial_dims("s", multiple=2, lo=1, hi=32)  # DiT is square: one Dim for both
    dynamic = {"sample": {2: side, 3: side}, "timestep": None, "class_labels": None}
    label, t = torch.tensor([3]), torch.tensor([10])
    session = _export(
        wrapper,
        (torch.randn(1, 4, 12, 12), t, label),
        dynamic,
        tmp_path / "dit.onnx",
        custom_ops=True,
    )
    cases = [(torch.randn(1, 4, n, n), t, label) for n in (12, 8, 16)]
    with torch.no_grad():  # the wrapper is diffusers' forward for square inputs
        assert torch.equal(wrapper(*cases[0]), dit(*cases[0]).sample)
    _check(session, wrapper, cases)


def test_clear_flux_down_proportional(tmp_path: Path) -> None:
    flux = build_tiny_flux_transformer()
    create_patch("clear:radius=2,down=2,proportional=true").apply(flux)
    wrapper = FluxExportWrapper(flux).eval()
    # Latent = 2 (packing) * 2 (down) * n, so the token grid divides by down.
    h, w = spatial_dims("h", "w", multiple=4, lo=1, hi=32)
    dynamic = {
        "latents": {2: h, 3: w},
        "encoder_hidden_states": None,
        "pooled_projections": None,
        "timestep": None,
    }
    g = torch.Generator().manual_seed(0)
    text, pooled, t = (
        torch.randn(1, 5, 32, generator=g),
        torch.randn(1, 32, generator=g),
        torch.tensor([0.5]),
    )
    session = _export(
        wrapper,
        (torch.randn(1, 4, 8, 12), text, pooled, t),
        dynamic,
        tmp_path / "flux.onnx",
        custom_ops=True,
    )
    cases = [
        (torch.randn(1, 4, hh, ww, generator=g), text, pooled, t)
        for hh, ww in [(8, 12), (4, 4), (12, 8)]
    ]
    _check(session, wrapper, cases)


def test_flux_export_without_grid_names_the_fix() -> None:
    from difforge.errors import DifforgeError
    from difforge.plugins.onnx_ops import CUSTOM_TRANSLATION_TABLE

    flux = build_tiny_flux_transformer()
    create_patch("clear:radius=2").apply(flux)
    wrapper = FluxExportWrapper(flux, pass_grid=False).eval()
    h, w = spatial_dims("h", "w", multiple=2, lo=1, hi=32)
    dynamic = {
        "latents": {2: h, 3: w},
        "encoder_hidden_states": None,
        "pooled_projections": None,
        "timestep": None,
    }
    args = (torch.randn(1, 4, 4, 6), torch.randn(1, 5, 32), torch.randn(1, 32), torch.tensor([0.5]))
    with pytest.raises(Exception) as info:  # torch.onnx wraps it in TorchExportError
        torch.onnx.export(
            wrapper,
            args,
            dynamic_shapes=dynamic,
            dynamo=True,
            custom_translation_table=CUSTOM_TRANSLATION_TABLE,
        )
    causes = []
    error: BaseException | None = info.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    assert any(isinstance(c, DifforgeError) and "clear_grid" in str(c) for c in causes)
