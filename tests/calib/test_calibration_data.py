"""Calibration data: recorded from the runtime's own trajectories, stratified, sharded,
byte-identical for the same seed, and read back as written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from difforge import CalibrateConfig, calibrate, info
from difforge.artifact.calibration import CalibrationData, CalibrationWriter, bucket_of
from difforge.artifact.manifest import Stage
from difforge.errors import DifforgeError
from difforge.runtime import GenerateRequest, load
from difforge.runtime.calibrate import CalibrationSettings, record_calibration
from tests.conftest import CALIB_SAMPLES as SAMPLES
from tests.conftest import CALIB_STEPS as STEPS


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "calibration").rglob("*.npy"))
    }


def test_every_component_is_recorded_along_real_trajectories(tiny_sd_calibrated: Path) -> None:
    manifest = info(tiny_sd_calibrated)
    assert manifest.stage is Stage.CALIBRATED
    section = manifest.calibration
    assert section is not None
    assert (section.trajectories, section.gate_trajectories, section.steps) == (SAMPLES, 1, STEPS)
    assert set(section.components) == {"text_encoder", "denoiser", "vae_decoder"}
    data = CalibrationData(tiny_sd_calibrated, section)
    tags = [tag for _i, tag in data.records("denoiser", "all")]
    # with 8 steps, no bucket exceeds the per-bucket cap: every step of every image is kept
    assert len(tags) == SAMPLES * STEPS
    assert {t[2] for t in tags} == {0, 1, 2, 3}
    assert all(t[2] == bucket_of(t[1], STEPS, 4) for t in tags)
    gate = {t[0] for _i, t in data.records("denoiser", "gate")}
    assert gate == {SAMPLES - 1}
    # the recorded denoiser inputs are what the runtime fed it: timesteps of the schedule,
    # batch doubled by classifier-free guidance, and the last latents are the decoder's input
    pipe = load(tiny_sd_calibrated)
    request = GenerateRequest(prompt="x", steps=STEPS, seed=0)
    sampler = pipe.resolve(request).sampler(pipe.manifest)
    feeds = list(data.feeds("denoiser", "all"))
    first_image = [f for f, t in zip(feeds, tags, strict=True) if t[0] == 0]
    assert [float(f["timestep"][0]) for f in first_image] == [float(t) for t in sampler.timesteps]
    assert first_image[0]["sample"].shape[0] == 2
    decoded = list(data.feeds("vae_decoder", "all"))
    assert len(decoded) == SAMPLES and decoded[0]["latent"].shape[0] == 1


def test_same_seed_same_bytes_other_seed_other_data(
    tiny_sd_export: Path, tiny_sd_calibrated: Path, tmp_path: Path
) -> None:
    config = CalibrateConfig(tiny_sd_export, tmp_path / "again", samples=SAMPLES, steps=STEPS)
    again = calibrate(config)
    assert _digests(again) == _digests(tiny_sd_calibrated)
    assert (again / "manifest.json").read_bytes() == (
        tiny_sd_calibrated / "manifest.json"
    ).read_bytes()
    other = calibrate(
        CalibrateConfig(tiny_sd_export, tmp_path / "other", samples=SAMPLES, steps=STEPS, seed=1)
    )
    assert _digests(other) != _digests(tiny_sd_calibrated)


def test_shards_are_bounded_and_read_back_in_order(tmp_path: Path) -> None:
    writer = CalibrationWriter()
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, 4, 64, 64), dtype=np.float32) for _ in range(24)]
    for i, a in enumerate(arrays):
        writer.add("denoiser", {"sample": a}, [i // 8, i % 8, bucket_of(i % 8, 8, 4)])
    writer.keep(per_bucket=100, seed=0, gate_from=2)
    records = writer.write(tmp_path, shard_bytes=1 << 20)["denoiser"]
    assert records.per_shard == (1 << 20) // arrays[0].nbytes == 8
    assert len(records.shards) == 3
    for shard in records.shards:
        assert (tmp_path / shard / "sample.npy").stat().st_size <= (1 << 20) + 128
    from difforge.artifact.calibration import CalibrationSection

    section = CalibrationSection(0, 8, 3, 1, 4, 1.0, 64, "x", {"denoiser": records})
    data = CalibrationData(tmp_path, section)
    got = list(data.feeds("denoiser", "all"))
    assert all(np.array_equal(g["sample"], a) for g, a in zip(got, arrays, strict=True))
    assert len(list(data.feeds("denoiser", "gate"))) == 8
    assert len(list(data.feeds("denoiser", "calibration", bucket=1))) == 4


def test_stratified_subset_keeps_each_bucket_and_split() -> None:
    writer = CalibrationWriter()
    for traj in range(4):
        for step in range(40):
            writer.add("d", {"x": np.zeros(1, np.float32)}, [traj, step, bucket_of(step, 40, 4)])
    writer.keep(per_bucket=5, seed=3, gate_from=3)
    tags = writer._tags["d"]
    for gate in (False, True):
        for bucket in range(4):
            kept = [t for t in tags if (t[0] >= 3) == gate and t[2] == bucket]
            assert len(kept) == 5
    assert tags == sorted(tags)  # recording order


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        (CalibrationSettings(trajectories=1), "calibration needs 2 to 4096 images, got 1"),
        (CalibrationSettings(trajectories=4, gate_trajectories=4), "held-out images"),
        (CalibrationSettings(buckets=0), "--buckets must be in"),
    ],
)
def test_bad_settings_are_refused_before_any_work(
    tiny_sd_export: Path, tmp_path: Path, settings: CalibrationSettings, needle: str
) -> None:
    with pytest.raises(DifforgeError, match=needle.replace("[", r"\[")):
        record_calibration(tiny_sd_export, tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_a_built_artifact_is_not_calibrated(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(DifforgeError, match="calibrate the export folder"):
        calibrate(CalibrateConfig(tiny_sd_artifact, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
