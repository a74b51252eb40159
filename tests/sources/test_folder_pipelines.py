"""Each pipeline class difforge compiles, as a tiny random-weight folder written with
diffusers' ``save_pretrained``: compiled, run torch-free, and held to diffusers' own pipeline
on the same initial latents (and the same per-step noise for stochastic samplers) within
2/255. The folders' tokenizers pad as the real models' do (SD 2.x and Turbo with "!")."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from difforge.runtime import GenerateRequest, load
from tests import folder_models as fm

pytestmark = pytest.mark.slow

PROMPT = "a photo of a red boat on the sea"
NOISE_MODULES = ("scheduling_lcm", "scheduling_tcd", "scheduling_euler_ancestral_discrete")


@dataclass
class Case:
    """A folder (``build(tmp)`` -> the diffusers pipeline to save), the request, and the
    reference call's extra arguments."""

    build: Callable[[Path], Any]
    steps: int
    guidance: float
    sampler: str
    kind: str = "text-to-image"
    reference: dict[str, Any] = field(default_factory=dict)
    model_index: dict[str, Any] = field(default_factory=dict)
    negative_prompt: str = ""


def _sched(cls: str, **config: Any) -> Any:
    import diffusers

    return getattr(diffusers, cls).from_config({**fm.SD_SCHEDULER, **config})


CASES = {
    # SD 2.x: v-prediction, DDIM, padded with "!"
    "sd2-v": Case(
        lambda tmp: fm.sd_pipeline(_sched("DDIMScheduler", prediction_type="v_prediction"), "!"),
        steps=4, guidance=7.0, sampler="ddim", negative_prompt="blurry",
    ),
    # SD-Turbo: one step of Euler-ancestral on trailing timesteps, no guidance
    "sd-turbo": Case(
        lambda tmp: fm.sd_pipeline(
            _sched("EulerAncestralDiscreteScheduler", timestep_spacing="trailing"), "!"
        ),
        steps=1, guidance=0.0, sampler="euler-ancestral",
    ),
    # LatentConsistencyModelPipeline: a U-Net with a guidance embedding, LCM sampling
    "lcm": Case(
        lambda tmp: fm.sd_pipeline(_sched("LCMScheduler"), time_cond=32, lcm=True),
        steps=3, guidance=8.5, sampler="lcm",
    ),
    # TCD weights fused into an SD folder: TCD sampling with gamma (diffusers' eta) 0.3
    "tcd": Case(
        lambda tmp: fm.sd_pipeline(_sched("TCDScheduler")),
        steps=3, guidance=0.0, sampler="tcd", reference={"eta": 0.3},
    ),
    # InstaFlow: one Euler step on a rectified flow from t = 1000
    "instaflow": Case(
        lambda tmp: fm.sd_pipeline(_sched("DDIMScheduler")),
        steps=1, guidance=0.0, sampler="rectified-flow",
        model_index={"_class_name": "RectifiedFlowPipeline"},
    ),
    "sdxl": Case(
        lambda tmp: fm.sdxl_pipeline(_sched("EulerDiscreteScheduler")),
        steps=3, guidance=5.0, sampler="euler", kind="sdxl",
    ),
    "sdxl-turbo": Case(
        lambda tmp: fm.sdxl_pipeline(
            _sched("EulerAncestralDiscreteScheduler", timestep_spacing="trailing")
        ),
        steps=1, guidance=0.0, sampler="euler-ancestral", kind="sdxl",
    ),
    "flux-schnell": Case(
        lambda tmp: fm.flux_pipeline(_flow(False), tmp, guided=False),
        steps=2, guidance=0.0, sampler="flow-euler", kind="flux",
        reference={"max_sequence_length": 24},
    ),
    "flux-dev": Case(
        lambda tmp: fm.flux_pipeline(_flow(True), tmp, guided=True),
        steps=3, guidance=3.5, sampler="flow-euler", kind="flux",
        reference={"max_sequence_length": 24},
    ),
}


def _flow(dynamic: bool) -> Any:
    import diffusers

    config = {"shift": 1.0, "use_dynamic_shifting": False}
    if dynamic:
        config = {"shift": 3.0, "use_dynamic_shifting": True, "base_image_seq_len": 16,
                  "max_image_seq_len": 256}
    return diffusers.FlowMatchEulerDiscreteScheduler(**config)


@pytest.fixture(scope="module", params=sorted(CASES))
def compiled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Case, Any, Path]]:
    """(case, the diffusers pipeline, the compiled artifact)."""
    from difforge import CompileConfig, ExportConfig, ResolutionRange, compile

    case = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    pipe = case.build(tmp)
    folder = tmp / "folder"
    pipe.save_pretrained(str(folder))
    if case.model_index:
        index = folder / "model_index.json"
        index.write_text(json.dumps({**json.loads(index.read_text()), **case.model_index}))
    config = ExportConfig(
        output=tmp / "artifact",
        model=folder,
        max_batch=1,
        resolution=ResolutionRange(fm.SIZE, fm.SIZE, fm.SIZE),
    )
    yield case, pipe, compile(CompileConfig(export=config))


@pytest.fixture
def shared_noise(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Feeds diffusers' stochastic schedulers the runtime's per-step noise for a seed."""
    import importlib

    def use(seed: int) -> None:
        rng = np.random.default_rng([seed, 1])

        def draw(shape: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))

        for name in NOISE_MODULES:
            module = importlib.import_module(f"diffusers.schedulers.{name}")
            monkeypatch.setattr(module, "randn_tensor", draw)

    return use


def _reference(
    case: Case, pipe: Any, latents: np.ndarray, negative_prompt: str = ""
) -> np.ndarray:
    """diffusers' pipeline (InstaFlow: its authors' loop) on the same latents."""
    call: dict[str, Any] = {
        "num_inference_steps": case.steps,
        "guidance_scale": case.guidance,
        "height": fm.SIZE,
        "width": fm.SIZE,
        "output_type": "np",
        **case.reference,
    }
    if negative_prompt:
        call["negative_prompt"] = negative_prompt
    start = torch.from_numpy(latents)
    if case.kind == "flux":
        b, c, h, w = latents.shape
        start = start.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        start = start.reshape(b, (h // 2) * (w // 2), c * 4)
    with torch.no_grad():
        if case.sampler == "rectified-flow":
            return _to_u8(_instaflow(pipe, start, case.steps))
        return _to_u8(pipe(PROMPT, latents=start, **call).images[0])


def _instaflow(pipe: Any, latents: torch.Tensor, steps: int) -> np.ndarray:
    """gnobitab/InstaFlow ``code/pipeline_rf.py`` without guidance: t_i = (1 - i/N)·1000,
    x <- x + v/N, then the VAE."""
    ids = pipe.tokenizer([PROMPT], padding="max_length", max_length=77, truncation=True)
    states = pipe.text_encoder(torch.tensor(ids.input_ids))[0]
    for i in range(steps):
        t = torch.full((latents.shape[0],), (1.0 - i / steps) * 1000.0)
        latents = latents + pipe.unet(latents, t, encoder_hidden_states=states).sample / steps
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()[0]


def _to_u8(image: np.ndarray) -> np.ndarray:
    return (image * 255).round().astype(np.uint8)


def test_matches_diffusers(
    compiled: tuple[Case, Any, Path], shared_noise: Callable[[int], None]
) -> None:
    case, pipe, artifact = compiled
    ours_pipe = load(artifact)
    manifest = ours_pipe.manifest
    assert (manifest.pipeline.type, manifest.scheduler.name) == (case.kind, case.sampler)
    f = manifest.pipeline.vae_scale_factor
    channels = manifest.pipeline.latent_channels
    latents = np.random.default_rng(3).standard_normal(
        (1, channels, fm.SIZE // f, fm.SIZE // f), dtype=np.float32
    )
    request = GenerateRequest(
        prompt=PROMPT,
        negative_prompt=case.negative_prompt,
        steps=case.steps,
        guidance_scale=case.guidance,
        height=fm.SIZE,
        width=fm.SIZE,
        latents=latents,
        seed=5,
    )
    ours = ours_pipe(request).images[0]
    shared_noise(5)
    ref = _reference(case, pipe, latents, case.negative_prompt)
    assert ours.shape == ref.shape
    diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
    assert diff <= 2, f"max pixel difference {diff}/255"
    # not vacuous: the image has structure, and another prompt changes it
    assert ours.std() > 3
    other = ours_pipe(
        GenerateRequest(
            prompt="a small dog at night", steps=case.steps, guidance_scale=case.guidance,
            height=fm.SIZE, width=fm.SIZE, latents=latents, seed=5,
        )
    ).images[0]
    assert np.abs(other.astype(int) - ours.astype(int)).max() > 0
    if case.kind == "sdxl" and case.guidance > 1:
        # a negative prompt is encoded, not replaced by SDXL's zeros
        negative = ours_pipe(replace(request, negative_prompt="blurry")).images[0]
        shared_noise(5)
        ref = _reference(case, pipe, latents, "blurry")
        assert int(np.abs(negative.astype(int) - ref.astype(int)).max()) <= 2
        assert np.abs(negative.astype(int) - ours.astype(int)).max() > 0


def _refiner_like(tmp: Path) -> Any:
    """SDXL's refiner conditions on 5 size/score values, not the base's 6."""
    pipe = fm.sdxl_pipeline(_sched("EulerDiscreteScheduler"))
    pipe.unet = fm.unet(
        3, context=80, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=5 * 8 + 40,
    )
    return pipe


@pytest.mark.parametrize(
    ("build", "index", "match"),
    [
        (_refiner_like, {}, r"not an SDXL base U-Net .* the SDXL refiner is not supported"),
        (lambda tmp: fm.sd_pipeline(_sched("LCMScheduler"), lcm=True), {},
         r"LatentConsistencyModelPipeline's U-Net needs time_cond_proj_dim"),
        (lambda tmp: fm.flux_pipeline(_flow(False), tmp, guided=False),
         {"text_encoder_2": ["transformers", "CLIPTextModel"]},
         r"text_encoder_2 is CLIPTextModel; this pipeline takes a T5EncoderModel"),
    ],
    ids=["sdxl-refiner", "lcm-without-embedding", "flux-without-t5"],
)
def test_a_folder_that_does_not_fit_its_pipeline_is_refused_in_one_line(
    tmp_path: Path, build: Callable[[Path], Any], index: dict[str, Any], match: str
) -> None:
    from difforge.errors import DifforgeError
    from difforge.sources import load_source

    folder = tmp_path / "folder"
    build(tmp_path).save_pretrained(str(folder))
    path = folder / "model_index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **index}))
    with pytest.raises(DifforgeError, match=match) as err:
        load_source(model=folder)
    assert "\n" not in str(err.value)
