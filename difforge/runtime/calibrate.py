"""Calibration data from the fp32 artifact itself: generate seeded images on this runtime,
record every component's feeds, keep a timestep-stratified subset, write a calibrated artifact.

The recorded inputs are what the artifact's own runtime feeds its graphs (scheduler, guidance,
step plan and all), so INT8 scales and quality gates see the distributions of real
trajectories, step by step, not random tensors. The same source, settings and seed give
byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from difforge.artifact.calibration import (
    FOLDER,
    SHARD_BYTES,
    CalibrationSection,
    CalibrationWriter,
    bucket_of,
)
from difforge.artifact.files import inside
from difforge.artifact.manifest import Manifest, Stage, read_manifest, write_manifest
from difforge.artifact.staging import check_target, staged_folder
from difforge.errors import DifforgeError
from difforge.runtime.loader import load
from difforge.runtime.recording import recording
from difforge.runtime.request import GenerateRequest

#: (trajectories done, trajectories in all)
Progress = Callable[[int, int], None]
MAX_TRAJECTORIES = 4096


@dataclass
class CalibrationSettings:
    """What ``difforge calibrate`` generates: ``trajectories`` seeded images (the last
    ``gate_trajectories`` held out for the quality gates), each recorded at every step."""

    trajectories: int = 8
    gate_trajectories: int = 2
    steps: int | None = None
    buckets: int = 4
    #: records kept per component, split and timestep bucket
    per_bucket: int = 16
    seed: int = 0
    guidance: float | None = None
    resolution: int | None = None
    shard_bytes: int = SHARD_BYTES
    #: text models: the prompts, used in turn
    prompts: Sequence[str] = field(default_factory=list)

    def check(self) -> None:
        if not 2 <= self.trajectories <= MAX_TRAJECTORIES:
            raise DifforgeError(
                f"calibration needs 2 to {MAX_TRAJECTORIES} images, got {self.trajectories}"
            )
        if not 1 <= self.gate_trajectories < self.trajectories:
            raise DifforgeError(
                f"the gate needs 1 to {self.trajectories - 1} held-out images, "
                f"got {self.gate_trajectories}"
            )
        if not 1 <= self.buckets <= 100:
            raise DifforgeError(f"--buckets must be in [1, 100], got {self.buckets}")
        if not 1 <= self.per_bucket <= 4096:
            raise DifforgeError(f"records per bucket must be in [1, 4096], got {self.per_bucket}")
        if self.shard_bytes < 1 << 20:
            raise DifforgeError("a calibration shard must be allowed at least 1 MiB")


def _denoisers(manifest: Manifest) -> set[str]:
    keys = set(manifest.plan.variants.values())
    return keys | ({"denoiser"} if "denoiser" in manifest.components else set())


def _requests(manifest: Manifest, settings: CalibrationSettings) -> tuple[list[dict], str]:
    """Per trajectory: its conditioning; and the sha256 of the conditioning used."""
    n = settings.trajectories
    if manifest.pipeline.text_conditioned:
        if not settings.prompts:
            raise DifforgeError("calibrating a text-to-image artifact needs prompts")
        prompts = [settings.prompts[i % len(settings.prompts)] for i in range(n)]
        used: list = prompts
        conds: list[dict] = [{"prompt": p} for p in prompts]
    else:
        classes = manifest.pipeline.num_classes
        used = [i % classes for i in range(n)]
        conds = [{"class_label": c} for c in used]
    digest = hashlib.sha256(json.dumps(used).encode("utf-8")).hexdigest()
    return conds, digest


def record_calibration(
    source: Path,
    output: Path,
    settings: CalibrationSettings,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Generate with the artifact at ``source`` and write it, with its calibration data, to
    ``output`` (stage ``calibrated``); an export folder or a calibrated one is taken."""
    settings.check()
    manifest = read_manifest(source, verify=True)
    if manifest.stage is Stage.BUILT:
        raise DifforgeError(
            f"{source} is a built artifact; calibrate the export folder it was built from "
            "(difforge export, or difforge calibrate inside build/compile)"
        )
    conds, digest = _requests(manifest, settings)
    check_target(output, force)
    pipeline = load(source, verify=False)  # hashed just above
    resolution = settings.resolution or manifest.pipeline.resolution.default
    denoisers = _denoisers(manifest)
    writer = CalibrationWriter()
    steps_run = settings.steps or 0

    def sink(key: str, feeds: dict[str, np.ndarray], trajectory: int, step: int) -> None:
        bucket = bucket_of(step, steps_run, settings.buckets) if key in denoisers else 0
        writer.add(key, feeds, [trajectory, step if key in denoisers else 0, bucket])

    with recording(pipeline, sink) as recorder:
        for i, cond in enumerate(conds):
            request = GenerateRequest(
                **cond,
                steps=settings.steps,
                seed=settings.seed + i,
                height=resolution,
                width=resolution,
                guidance_scale=settings.guidance,
            )
            if i == 0:
                steps_run = pipeline.resolve(request).steps
            recorder.start(i)
            pipeline(request, callback=recorder.on_step)
            if progress is not None:
                progress(i + 1, len(conds))
    writer.keep(
        settings.per_bucket, settings.seed, settings.trajectories - settings.gate_trajectories
    )

    with staged_folder(output, force) as staging:
        for rel in manifest.files:
            if rel.split("/")[0] == FOLDER:
                continue  # a calibrated source's old data is replaced
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(inside(source, rel), staging / rel)
        manifest.calibration = CalibrationSection(
            seed=settings.seed,
            steps=steps_run,
            trajectories=settings.trajectories,
            gate_trajectories=settings.gate_trajectories,
            buckets=settings.buckets,
            guidance=float(pipeline.resolve(GenerateRequest(**conds[0])).guidance_scale)
            if settings.guidance is None
            else float(settings.guidance),
            resolution=resolution,
            conditioning_sha256=digest,
            components=writer.write(staging, settings.shard_bytes),
        )
        manifest.stage = Stage.CALIBRATED
        write_manifest(staging, manifest)
    return output
