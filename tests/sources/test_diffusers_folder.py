"""A diffusers folder's scheduler: its own sampler, a sound substitute said aloud, the one the
user names, or a one-line refusal (an LCM sampled with DDIM gives wrong images)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from difforge.errors import DifforgeError
from difforge.sources import load_source


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from difforge.sources.presets import tiny_sd
    from tests.reference_pipelines import sd_pipeline

    folder = tmp_path_factory.mktemp("sd") / "folder"
    sd_pipeline(tiny_sd(1)).save_pretrained(str(folder))
    return folder


def _with_scheduler(folder: Path, cls: str) -> Path:
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["_class_name"] = cls
    path.write_text(json.dumps(config))
    return folder


def test_own_scheduler_needs_no_note(sd_folder: Path) -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("difforge-tokenizer-*"))
    source = load_source(model=_with_scheduler(sd_folder, "DDIMScheduler"))
    assert (source.scheduler_name, source.scheduler_note) == ("ddim", None)
    # the tokenizer is written into the artifact at export; loading leaves no folder behind
    assert set(Path(tempfile.gettempdir()).glob("difforge-tokenizer-*")) == before


def test_a_folder_s_default_range_is_one_verification_fits(sd_folder: Path) -> None:
    """Half to one and a half times the native size (tiny-sd's U-Net: 256 px native), not
    twice it: at 2x an SD 1.5 U-Net's attention alone needs tens of GB to verify."""
    res = load_source(model=_with_scheduler(sd_folder, "DDIMScheduler")).resolution
    assert (res.min, res.default, res.max, res.multiple) == (128, 256, 384, 16)


def test_pndm_is_sampled_with_ddim_and_says_so(sd_folder: Path) -> None:
    source = load_source(model=_with_scheduler(sd_folder, "PNDMScheduler"))
    assert source.scheduler_name == "ddim"
    assert source.scheduler_config["_class_name"] == "DDIMScheduler"
    assert source.scheduler_note is not None and "PNDMScheduler sampled with ddim" in (
        source.scheduler_note
    )


@pytest.mark.parametrize(
    ("cls", "sampler"),
    [
        ("LCMScheduler", "lcm"),
        ("TCDScheduler", "tcd"),
        ("UniPCMultistepScheduler", "unipc"),
        ("DPMSolverMultistepScheduler", "dpm++2m"),
    ],
)
def test_a_folder_is_sampled_with_its_own_scheduler(
    sd_folder: Path, cls: str, sampler: str
) -> None:
    source = load_source(model=_with_scheduler(sd_folder, cls))
    assert (source.scheduler_name, source.scheduler_note) == (sampler, None)


@pytest.mark.parametrize("cls", ["HeunDiscreteScheduler", "KDPM2DiscreteScheduler"])
def test_unimplemented_schedulers_are_refused(sd_folder: Path, cls: str) -> None:
    folder = _with_scheduler(sd_folder, cls)
    with pytest.raises(DifforgeError) as err:
        load_source(model=folder)
    text = str(err.value)
    assert f"scheduler {cls} is not one the runtime implements" in text
    assert "DDIMScheduler" in text and "--scheduler" in text and "\n" not in text


def test_a_consistency_model_keeps_its_sampler(sd_folder: Path) -> None:
    folder = _with_scheduler(sd_folder, "LCMScheduler")
    with pytest.raises(DifforgeError, match="consistency-distilled"):
        load_source(model=folder, scheduler="euler")


def test_a_guidance_embedded_unet_takes_the_scale_as_an_input(
    sd_folder: Path, tmp_path: Path
) -> None:
    """An LCM-distilled U-Net (``time_cond_proj_dim``) gets its guidance embedding from the
    scale: the source says so, and the export config gives the denoiser a guidance input and
    no CFG doubling."""
    import shutil

    from diffusers import UNet2DConditionModel

    from difforge.exporter.components import components_for

    folder = _with_scheduler(Path(shutil.copytree(sd_folder, tmp_path / "lcm")), "LCMScheduler")
    unet = UNet2DConditionModel(**{**UNet2DConditionModel.load_config(str(folder / "unet")),
                                   "time_cond_proj_dim": 32})
    unet.save_pretrained(str(folder / "unet"))
    source = load_source(model=folder)
    assert source.extras["guidance_input"] is True
    assert (source.scheduler_name, source.default_steps) == ("lcm", 4)
    spec = components_for(source, max_batch=2)["denoiser"].spec
    assert [t.name for t in spec.inputs][-1] == "guidance"
    assert spec.axes["batch"].max == 2  # the image count: no classifier-free guidance


def test_instaflow_is_sampled_with_rectified_flow(sd_folder: Path, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(sd_folder, tmp_path / "instaflow"))
    index = folder / "model_index.json"
    index.write_text(
        json.dumps({**json.loads(index.read_text()), "_class_name": "RectifiedFlowPipeline"})
    )
    source = load_source(model=folder)
    assert (source.scheduler_name, source.default_steps, source.default_guidance) == (
        "rectified-flow", 1, 0.0
    )
    with pytest.raises(DifforgeError, match="InstaFlow's models are sampled with rectified-flow"):
        load_source(model=folder, scheduler="ddim")
    # an InstaFlow checkpoint saved as a StableDiffusionPipeline folder, compiled by name
    plain = load_source(model=_with_scheduler(sd_folder, "DDIMScheduler"),
                        scheduler="rectified-flow")
    assert plain.scheduler_name == "rectified-flow"
    assert plain.scheduler_note is not None and "InstaFlow" in plain.scheduler_note


def test_an_unsupported_pipeline_is_refused_naming_the_supported(
    sd_folder: Path, tmp_path: Path
) -> None:
    import shutil

    folder = Path(shutil.copytree(sd_folder, tmp_path / "other"))
    index = folder / "model_index.json"
    index.write_text(
        json.dumps({**json.loads(index.read_text()), "_class_name": "KandinskyPipeline"})
    )
    with pytest.raises(DifforgeError) as err:
        load_source(model=folder)
    text = str(err.value)
    assert "pipeline KandinskyPipeline" in text and "\n" not in text
    for name in ("StableDiffusionXLPipeline", "FluxPipeline", "LatentConsistencyModelPipeline",
                 "RectifiedFlowPipeline"):
        assert name in text


def test_a_named_sampler_is_used_and_recorded(sd_folder: Path) -> None:
    folder = _with_scheduler(sd_folder, "UniPCMultistepScheduler")
    source = load_source(model=folder, scheduler="euler")
    assert source.scheduler_name == "euler"
    assert source.scheduler_note == (
        "UniPCMultistepScheduler sampled with euler, as asked (--scheduler)"
    )
    with pytest.raises(DifforgeError, match="does not fit UniPCMultistepScheduler"):
        load_source(model=sd_folder, scheduler="flow-euler")
    with pytest.raises(DifforgeError, match="unknown scheduler 'dpm'"):
        load_source(model=sd_folder, scheduler="dpm")


def test_presets_take_a_named_sampler() -> None:
    source = load_source(preset="tiny-sd", scheduler="euler-ancestral")
    assert source.scheduler_name == "euler-ancestral"
    assert source.scheduler_note and "as asked" in source.scheduler_note
    assert load_source(preset="tiny-sd", scheduler="ddim").scheduler_note is None


def test_cli_refusal_is_one_line(sd_folder: Path, tmp_path: Path) -> None:
    folder = _with_scheduler(sd_folder, "HeunDiscreteScheduler")
    done = subprocess.run(
        [sys.executable, "-m", "difforge", "export", "-q", "--model", str(folder), "-o",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "HeunDiscreteScheduler" in done.stderr
    assert not (tmp_path / "out").exists()


def test_pickled_weights_get_a_note_not_library_chatter(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from difforge.sources.presets import tiny_sd
    from tests.reference_pipelines import sd_pipeline

    folder = tmp_path / "pickled"
    sd_pipeline(tiny_sd(1)).save_pretrained(str(folder), safe_serialization=False)
    assert list(folder.glob("unet/*.bin")) and not list(folder.glob("unet/*.safetensors"))
    capfd.readouterr()
    source = load_source(model=folder)
    out, err = capfd.readouterr()
    assert "unsafe serialization" not in out + err and "Traceback" not in out + err
    assert any(n.startswith("unet: weights are a pickle (.bin)") for n in source.notes)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"pad_token": "<pad>"}, r"tokenizer: the pad token '<pad>' is not in the vocabulary"),
        ({"model_max_length": 64}, r"model_max_length 64 is not the text encoder's 77 positions"),
    ],
)
def test_a_tokenizer_the_text_encoder_cannot_take_is_refused(
    sd_folder: Path, tmp_path: Path, change: dict[str, object], match: str
) -> None:
    import shutil

    folder = _with_scheduler(Path(shutil.copytree(sd_folder, tmp_path / "sd")), "DDIMScheduler")
    config = folder / "tokenizer" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(DifforgeError, match=match) as err:
        load_source(model=folder)
    assert "\n" not in str(err.value)
