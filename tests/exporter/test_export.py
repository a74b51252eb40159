"""Export: parity at three shapes per component, shape-specialised traces caught, folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from difforge.artifact.manifest import read_manifest
from difforge.config import ResolutionRange
from difforge.errors import DifforgeError
from difforge.exporter.components import Component
from difforge.exporter.onnx_export import export_component
from difforge.exporter.prepare import resolve_resolution
from difforge.exporter.specs import Axis, ComponentSpec, Tensor
from difforge.exporter.verify import verify_component
from difforge.exporter.wrappers import DiTDenoiser
from difforge.sources.base import Resolution


def test_every_component_verified_at_three_shapes(tiny_sd_export: Path) -> None:
    manifest = read_manifest(tiny_sd_export)
    assert set(manifest.components) == {"text_encoder", "denoiser", "vae_decoder"}
    for role, entry in manifest.components.items():
        by_shape = {v["shape"]: v for v in entry.verification}
        assert set(by_shape) == {"min", "opt", "max"}, role
        sizes = [tuple(v["sizes"].values()) for v in by_shape.values()]
        assert len(set(sizes)) == 3, f"{role} verified at fewer than three distinct shapes"
        for check in entry.verification:
            assert check["max_rel"] <= 1e-4, (role, check)
    assert manifest.source["random_weights"] is True
    assert "random" in manifest.source["weights"]


def test_shape_specialised_trace_is_caught(tmp_path: Path) -> None:
    from difforge.sources.presets import tiny_dit

    # diffusers' DiT reads its grid as sqrt(tokens) and picks its position table by input
    # size: exported with a dynamic spatial range, the graph only works at the trace size.
    source = tiny_dit(0)
    axis = Axis(min=16, opt=16, max=32, multiple=2)
    spec = ComponentSpec(
        role="denoiser",
        inputs=(
            Tensor("sample", "float32", ("batch", 4, "height", "width")),
            Tensor("timestep", "float32", ("batch",), "timestep"),
            Tensor("class_labels", "int64", ("batch",), ("int", 1000)),
        ),
        outputs=(Tensor("noise_pred", "float32", ("batch", 4, "height", "width")),),
        axes={"batch": Axis(1, 1, 2), "height": axis, "width": axis},
    )
    component = Component(spec, DiTDenoiser(source.denoiser))
    path = tmp_path / "dit.onnx"
    export_component(component, path)
    with pytest.raises(DifforgeError, match=r"denoiser.* (does not run|differs)"):
        verify_component(component, path)


def test_verification_reports_a_numerical_mismatch(tmp_path: Path) -> None:
    class Drifting(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    spec = ComponentSpec(
        role="toy",
        inputs=(Tensor("x", "float32", ("batch", 8)),),
        outputs=(Tensor("y", "float32", ("batch", 8)),),
        axes={"batch": Axis(1, 2, 4)},
    )
    component = Component(spec, Drifting())
    path = tmp_path / "toy.onnx"
    export_component(component, path)
    component.module = torch.nn.Identity()  # the reference no longer matches the graph
    with pytest.raises(DifforgeError, match=r"toy\.y at min shape .* differs from PyTorch"):
        verify_component(component, path)


def test_resolution_ranges() -> None:
    base = Resolution(min=128, default=256, max=512, multiple=16)
    assert resolve_resolution(base, ResolutionRange.parse("1024")) == Resolution(
        128, 1024, 1024, 16
    )
    assert resolve_resolution(base, ResolutionRange.parse("256:384")) == Resolution(
        256, 256, 384, 16
    )
    assert resolve_resolution(base, ResolutionRange.parse("64:96:128")) == Resolution(
        64, 96, 128, 16
    )
    with pytest.raises(DifforgeError, match="not a multiple of 16"):
        resolve_resolution(base, ResolutionRange.parse("200"))
    for bad in ("0", "a", "512:256", "1:2:3:4", "256:128:512"):
        with pytest.raises(DifforgeError, match="--resolution"):
            ResolutionRange.parse(bad)


@pytest.mark.slow
def test_diffusers_folder_source(tmp_path: Path) -> None:
    """A pipeline saved with save_pretrained exports through --model like a preset. Its
    tokenizer pads with "!", as SD 2.x and SD-Turbo do: the manifest records it, and the
    runtime's token ids and images are diffusers' own for the folder."""
    import json

    import diffusers
    import numpy as np
    from transformers import CLIPTokenizer as HFTokenizer

    from difforge import ExportConfig, export
    from difforge.runtime import GenerateRequest, load
    from difforge.sources.presets import tiny_sd
    from tests.reference_pipelines import sd_pipeline

    # SD 1.x folders ship PNDM; "!" is SD 2.x's pad token
    pipe = sd_pipeline(tiny_sd(1), diffusers.PNDMScheduler, pad_token="!")
    folder = tmp_path / "sd"
    pipe.save_pretrained(str(folder))
    out = export(
        ExportConfig(
            output=tmp_path / "export", model=folder, resolution=ResolutionRange(128, 128, 128)
        )
    )
    manifest = read_manifest(out)
    assert manifest.source["type"] == "diffusers"
    assert manifest.source["random_weights"] is False
    assert manifest.scheduler.name == "ddim"
    assert manifest.scheduler.note is not None and "PNDMScheduler" in manifest.scheduler.note
    assert manifest.pipeline.resolution.multiple == 16
    assert manifest.tokenizer is not None
    assert (manifest.tokenizer.pad_token, manifest.tokenizer.max_length) == ("!", 77)

    prompts = ["a red boat on a lake!", "wow!! ?!"]
    theirs = HFTokenizer.from_pretrained(str(folder / "tokenizer"))
    ours = load(out)
    assert ours.tokenizer is not None
    expected = theirs(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    np.testing.assert_array_equal(ours.tokenizer(prompts), np.asarray(expected))

    # the image, against diffusers' pipeline loaded from the folder and sampled with DDIM
    latents = np.random.default_rng(5).standard_normal((1, 4, 16, 16), dtype=np.float32)
    request = GenerateRequest(
        prompt=prompts[0], steps=4, guidance_scale=7.0, height=128, width=128, latents=latents
    )
    ref_pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(folder))
    ref_pipe.scheduler = diffusers.DDIMScheduler.from_config(manifest.scheduler.config)
    with torch.no_grad():
        ref = ref_pipe(
            prompts[0], num_inference_steps=4, guidance_scale=7.0, height=128, width=128,
            latents=torch.from_numpy(latents), output_type="np",
        ).images[0]
    ref_u8 = (ref * 255).round().astype(np.uint8).astype(int)
    diff = np.abs(ours(request).images[0].astype(int) - ref_u8).max()
    assert diff <= 2, f"max pixel difference {diff}/255"
    # Not vacuous: padded with end-of-text (a manifest without the field), the image differs.
    data = json.loads((out / "manifest.json").read_text())
    del data["tokenizer"]["pad_token"]
    (out / "manifest.json").write_text(json.dumps(data))
    eos_padded = np.abs(load(out)(request).images[0].astype(int) - ref_u8).max()
    assert eos_padded > 2 * max(diff, 1), f"end-of-text padding differs by only {eos_padded}"


def test_verification_out_of_memory_names_the_shape(tmp_path: Path) -> None:
    class Hungry(torch.nn.Module):
        """Runs out of memory above batch 2 once exported (as a large model would)."""

        exported = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.exported and x.shape[0] > 2:
                raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate")
            return x * 2

    spec = ComponentSpec(
        role="toy",
        inputs=(Tensor("x", "float32", ("batch", 8)),),
        outputs=(Tensor("y", "float32", ("batch", 8)),),
        axes={"batch": Axis(1, 2, 4)},
    )
    module = Hungry()
    component = Component(spec, module)
    path = export_component(component, tmp_path / "toy.onnx")
    module.exported = True
    with pytest.raises(DifforgeError, match=r"verifying toy at its max shape \{'batch': 4\} ran "
                       r"out of memory in PyTorch; build a smaller range \(--resolution"):
        verify_component(component, path)


def test_the_max_check_keeps_the_batch_at_its_min() -> None:
    """The largest spatial shape is what catches a specialised trace and what costs memory;
    the batch's range is left to the min and opt checks."""
    from difforge.exporter.verify import verification_sizes

    axis = Axis(min=16, opt=32, max=64, multiple=8)
    spec = ComponentSpec(
        role="denoiser",
        inputs=(Tensor("sample", "float32", ("batch", 4, "height", "width")),),
        outputs=(Tensor("noise_pred", "float32", ("batch", 4, "height", "width")),),
        axes={"batch": Axis(1, 2, 4), "height": axis, "width": axis},
    )
    assert verification_sizes(spec, "min") == {"batch": 1, "height": 16, "width": 16}
    assert verification_sizes(spec, "opt") == {"batch": 2, "height": 32, "width": 32}
    assert verification_sizes(spec, "max") == {"batch": 1, "height": 64, "width": 64}
    text = ComponentSpec(
        role="text_encoder",
        inputs=(Tensor("input_ids", "int64", ("batch", 77)),),
        outputs=(Tensor("last_hidden_state", "float32", ("batch", 77, 8)),),
        axes={"batch": Axis(1, 2, 4)},
    )
    assert verification_sizes(text, "max") == {"batch": 4}  # no spatial axis to grow


def test_weights_are_released_before_onnx_runtime_checks(tmp_path: Path) -> None:
    """PyTorch's references come first; the module's weights can then go (to the meta
    device) and the check still compares against them, so the two copies of a real-size
    component's weights never sit side by side."""
    from difforge.exporter.verify import check_outputs, reference_outputs, release_weights

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    spec = ComponentSpec(
        role="toy",
        inputs=(Tensor("x", "float32", ("batch", 8)),),
        outputs=(Tensor("y", "float32", ("batch", 8)),),
        axes={"batch": Axis(1, 2, 4)},
    )
    component = Component(spec, module)
    path = export_component(component, tmp_path / "toy.onnx")
    refs = reference_outputs(component)
    release_weights(module)
    assert all(p.device.type == "meta" for p in module.parameters())
    checks = check_outputs(spec, path, refs)
    assert [c["shape"] for c in checks] == ["min", "opt", "max"]
    assert max(c["max_rel"] for c in checks) <= 1e-5
    refs[0].outputs[0] = refs[0].outputs[0] + 1.0  # a wrong reference is still caught
    with pytest.raises(DifforgeError, match=r"toy\.y at min shape .* differs from PyTorch"):
        check_outputs(spec, path, refs)
