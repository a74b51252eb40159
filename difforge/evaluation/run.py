"""Run an artifact and its PyTorch source on the same requests; score what they make."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from difforge._progress import Reporter, SilentReporter
from difforge.artifact.manifest import Manifest
from difforge.errors import DifforgeError
from difforge.evaluation.fidelity import psnr, ssim
from difforge.runtime.pipeline import GenerateRequest, Pipeline

DEFAULT_PROMPT = "a photo of a cat"
MAX_IMAGES = 1000
MAX_QUALITY_SAMPLES = 100_000


@dataclass
class ImageFidelity:
    seed: int
    label: str
    psnr_db: float
    ssim: float


@dataclass
class EvalReport:
    artifact: str
    steps: int
    guidance: float
    images: list[ImageFidelity] = field(default_factory=list)
    #: Accuracy and FD of the engine's samples, for digits reference models.
    quality: dict[str, Any] | None = None
    #: what the images were compared with: "pytorch", or the path of an fp32 artifact
    against: str = "pytorch"
    #: against an artifact, for digits models: the same scores of the reference artifact, and
    #: whether the accuracy and FD stay within the precision gate
    reference_quality: dict[str, Any] | None = None
    quality_gate: dict[str, Any] | None = None

    @property
    def worst_psnr(self) -> float:
        return min(i.psnr_db for i in self.images)

    @property
    def mean_psnr(self) -> float:
        return float(np.mean([i.psnr_db for i in self.images]))

    @property
    def worst_ssim(self) -> float:
        return min(i.ssim for i in self.images)

    @property
    def mean_ssim(self) -> float:
        return float(np.mean([i.ssim for i in self.images]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "steps": self.steps,
            "guidance": self.guidance,
            "fidelity": {
                "images": [asdict(i) for i in self.images],
                "psnr_db": {"worst": self.worst_psnr, "mean": self.mean_psnr},
                "ssim": {"worst": self.worst_ssim, "mean": self.mean_ssim},
            },
            "quality": self.quality,
            "against": self.against,
            "reference_quality": self.reference_quality,
            "quality_gate": self.quality_gate,
        }


def torch_pipeline(root: Path, manifest: Manifest, reporter: Reporter) -> Pipeline:
    """The artifact's pipeline with every component run by its patched PyTorch source."""
    from difforge.config import ExportConfig, ResolutionRange
    from difforge.evaluation.torch_runner import TorchRunner
    from difforge.exporter.prepare import prepare_model
    from difforge.exporter.state import with_state
    from difforge.patches import PatchRequest, create_patch

    source = manifest.source
    if source.get("type") == "preset":
        preset, model = str(source["name"]), None
    elif source.get("type") == "diffusers" and source.get("path"):
        preset, model = None, Path(str(source["path"]))
        if not model.is_dir():
            raise DifforgeError(f"the artifact's source model {model} is not there any more")
    else:
        raise DifforgeError(f"cannot rebuild the PyTorch source of {root} ({source.get('type')})")
    res = manifest.pipeline.resolution
    config = ExportConfig(
        output=root,
        preset=preset,
        model=model,
        resolution=ResolutionRange(res.min, res.default, res.max),
        seed=int(source.get("seed", 0)),
        scheduler=manifest.scheduler.name if manifest.scheduler.note else None,
    )
    patches = [
        create_patch(PatchRequest(p["patch"], {k: v for k, v in p["options"].items()}))
        for p in manifest.patches
    ]
    prepared = prepare_model(config, reporter, patches)
    stepped = prepared.applied.stepped
    runners: dict[str, Any] = {}
    for key, entry in manifest.components.items():
        role, _, variant = key.partition("@")
        module = prepared.components[role].module
        before = None
        if stepped is not None and role == "denoiser":
            chosen = variant or stepped.variants()[0]
            before = lambda chosen=chosen: stepped.set_variant(chosen)  # noqa: E731
            # state a variant carries between steps goes in and out as tensors, as in the graph
            module = with_state(prepared.components[role], stepped, chosen).module
        runners[key] = TorchRunner(key, entry, module, before)
    return Pipeline(root, manifest, runners)


def _request(
    manifest: Manifest, index: int, seed: int, prompt: str | None, **kw: Any
) -> GenerateRequest:
    """Image ``index`` of the comparison: the prompt for text artifacts, classes in turn
    (0, 1, ...) for class artifacts, which refuse a prompt."""
    if manifest.pipeline.type == "class-to-image":
        if prompt is not None:
            raise DifforgeError(
                "this class-to-image artifact is compared class by class; it takes no --prompt"
            )
        label = index % manifest.pipeline.num_classes
        return GenerateRequest(class_label=label, seed=seed, **kw)
    return GenerateRequest(prompt=DEFAULT_PROMPT if prompt is None else prompt, seed=seed, **kw)


def _label(request: GenerateRequest) -> str:
    if request.prompt:
        return repr(request.prompt)
    return f"class {request.class_label}"


def digit_quality(
    engine: Pipeline,
    samples: int,
    steps: int | None,
    guidance: float | None,
    seed: int,
    reporter: Reporter,
) -> dict[str, Any]:
    """Class accuracy and FD of ``samples`` engine samples, 10 classes in turn."""
    import torch

    from difforge.reference.quality import MIN_FD_SAMPLES, balanced_labels, score

    labels = balanced_labels(samples)
    req = engine.resolve(GenerateRequest(class_label=0, steps=steps, guidance_scale=guidance))
    per_call = engine.images_per_call(req.guidance_scale)
    images = []
    with reporter.progress("digit quality", total=samples) as advance:
        for batch, start in enumerate(range(0, samples, per_call)):
            chunk = [int(x) for x in labels[start : start + per_call]]
            result = engine(
                GenerateRequest(
                    class_label=chunk, steps=steps, guidance_scale=guidance, seed=seed + batch
                )
            )
            images.append(result.images)
            advance(len(chunk))
    q = score(np.concatenate(images), torch.as_tensor(labels))
    return {
        "accuracy": q.accuracy,
        "fd": q.fd,
        "samples": q.samples,
        "fd_reliable": q.samples >= MIN_FD_SAMPLES,
        "steps": req.steps,
        "guidance": req.guidance_scale,
    }


def evaluate(
    artifact: str | Path,
    *,
    images: int = 4,
    quality_samples: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    prompt: str | None = None,
    threads: int | None = None,
    reporter: Reporter | None = None,
    against: str | Path | None = None,
) -> EvalReport:
    """PSNR/SSIM of ``images`` engine images against PyTorch's (same seeds and schedule), or
    against another artifact's (``against``: the fp32 build of a lowered one); for digits
    reference models, also accuracy and FD over ``quality_samples`` (default 1,000; 0 skips),
    and against an artifact whether they stay within :data:`DIGITS_GATE` of its scores."""
    from difforge.runtime import load

    rep = reporter or SilentReporter()
    if not 1 <= images <= MAX_IMAGES:
        raise DifforgeError(f"--images must be in [1, {MAX_IMAGES}], got {images}")
    if quality_samples is not None and not 0 <= quality_samples <= MAX_QUALITY_SAMPLES:
        raise DifforgeError(
            f"--quality-samples must be in [0, {MAX_QUALITY_SAMPLES}] (0 skips), "
            f"got {quality_samples}"
        )
    root = Path(artifact)
    with rep.task(f"load engine {root}"):
        engine = load(root, threads=threads)
    manifest = engine.manifest
    first = engine.resolve(
        _request(manifest, 0, seed, prompt, steps=steps, guidance_scale=guidance)
    )
    if against is None:
        reference = torch_pipeline(root, manifest, rep)
    else:
        with rep.task(f"load reference {against}"):
            reference = load(Path(against), threads=threads)
        check_comparable(manifest, reference.manifest, Path(against))
    report = EvalReport(str(root), first.steps, first.guidance_scale)
    report.against = "pytorch" if against is None else str(against)
    what = "PyTorch" if against is None else "the reference artifact"
    with rep.progress(f"engine vs {what}", total=images) as advance:
        for i in range(images):
            req = _request(manifest, i, seed + i, prompt, steps=steps, guidance_scale=guidance)
            ours = engine(req).images[0]
            theirs = reference(req).images[0]
            report.images.append(
                ImageFidelity(seed + i, _label(req), psnr(ours, theirs), ssim(ours, theirs))
            )
            advance(1)
    is_digits = manifest.source.get("reference") == "digits"
    wanted = quality_samples if quality_samples is not None else (1000 if is_digits else 0)
    if wanted and not is_digits:
        raise DifforgeError("accuracy and FD need a digits reference model (models/digits-*)")
    if wanted:
        report.quality = digit_quality(engine, wanted, steps, guidance, seed, rep)
        if against is not None:
            report.reference_quality = digit_quality(
                reference, wanted, steps, guidance, seed, rep
            )
            report.quality_gate = digits_gate(report.quality, report.reference_quality)
    return report


#: a lowered digits artifact against its fp32 build: accuracy within 2 points, FD within 15%
DIGITS_GATE = {"max_accuracy_drop": 0.02, "max_fd_ratio": 1.15}


def digits_gate(ours: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    drop = float(ref["accuracy"]) - float(ours["accuracy"])
    ratio = float(ours["fd"]) / max(float(ref["fd"]), 1e-12)
    return {
        "accuracy_drop": drop,
        "fd_ratio": ratio,
        **DIGITS_GATE,
        "passed": drop <= DIGITS_GATE["max_accuracy_drop"]
        and ratio <= DIGITS_GATE["max_fd_ratio"],
    }


def check_comparable(ours: Manifest, ref: Manifest, where: Path) -> None:
    """The reference artifact must make the same images: same model, pipeline and patches."""
    if (ours.source, ours.patches, ours.pipeline) != (ref.source, ref.patches, ref.pipeline):
        raise DifforgeError(
            f"{where} is not a build of the same model (source, patches or pipeline differ)"
        )


def format_report(report: EvalReport) -> str:
    lines = [
        f"{report.artifact}: {len(report.images)} images, {report.steps} steps, "
        f"guidance {report.guidance}, against {report.against}",
        f"{'seed':>6}  {'request':<24} {'PSNR dB':>8} {'SSIM':>8}",
    ]
    for i in report.images:
        shown = "identical" if math.isclose(i.psnr_db, 100.0) else f"{i.psnr_db:.2f}"
        lines.append(f"{i.seed:>6}  {i.label:<24} {shown:>8} {i.ssim:>8.5f}")
    lines.append(
        f"PSNR worst {report.worst_psnr:.2f} dB, mean {report.mean_psnr:.2f} dB; "
        f"SSIM worst {report.worst_ssim:.5f}, mean {report.mean_ssim:.5f} "
        "(PSNR 100 = identical images)"
    )
    if report.quality:
        q = report.quality
        note = "" if q["fd_reliable"] else " (FD from fewer than 1,000 samples: biased upward)"
        lines.append(
            f"digits: class accuracy {q['accuracy']:.4f}, FD {q['fd']:.2f} over "
            f"{q['samples']} samples{note}"
        )
    if report.reference_quality and report.quality_gate:
        r, g = report.reference_quality, report.quality_gate
        verdict = "passed" if g["passed"] else "FAILED"
        lines.append(
            f"reference: class accuracy {r['accuracy']:.4f}, FD {r['fd']:.2f}; gate {verdict} "
            f"(accuracy drop {g['accuracy_drop'] * 100:+.2f} points <= "
            f"{g['max_accuracy_drop'] * 100:.0f}, FD x{g['fd_ratio']:.3f} <= "
            f"x{g['max_fd_ratio']})"
        )
    return "\n".join(lines)
