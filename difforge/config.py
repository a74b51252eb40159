"""One config object per API call; the CLI only fills these in.

Kept free of torch so that ``difforge --help`` and the runtime stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from difforge.errors import DifforgeError


@dataclass
class ResolutionRange:
    """Pixel resolutions to build for; ``None`` fields take the source's defaults."""

    min: int | None = None
    default: int | None = None
    max: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> ResolutionRange:
        """``512`` (build for 512, widening the range to it), ``256:512``, ``128:256:512``."""
        if not text:
            return cls()
        try:
            parts = [int(p) for p in text.split(":")]
        except ValueError:
            raise DifforgeError(
                f"--resolution takes N, MIN:MAX or MIN:DEFAULT:MAX, got {text!r}"
            ) from None
        if any(p <= 0 for p in parts) or len(parts) > 3:
            raise DifforgeError(f"--resolution takes N, MIN:MAX or MIN:DEFAULT:MAX, got {text!r}")
        if len(parts) == 1:
            return cls(default=parts[0])
        if len(parts) == 2:
            if parts[0] > parts[1]:
                raise DifforgeError(f"--resolution {text}: MIN is larger than MAX")
            return cls(min=parts[0], max=parts[1])
        if not parts[0] <= parts[1] <= parts[2]:
            raise DifforgeError(f"--resolution {text}: needs MIN <= DEFAULT <= MAX")
        return cls(min=parts[0], default=parts[1], max=parts[2])


@dataclass
class ExportConfig:
    output: Path
    preset: str | None = None
    model: Path | None = None
    patches: list[str] = field(default_factory=list)
    resolution: ResolutionRange = field(default_factory=ResolutionRange)
    #: Images per call; the denoiser's batch range doubles it for classifier-free guidance.
    max_batch: int = 2
    opset: int = 20
    seed: int = 0
    verify: bool = True
    force: bool = False
    #: the runtime sampler to use instead of the model's own scheduler (one of its family)
    scheduler: str | None = None


@dataclass
class BuildConfig:
    source: Path
    output: Path
    backend: str = "ort"
    #: intra-op threads recorded for the runtime; 0 lets ONNX Runtime use every core.
    threads: int = 0
    optimize: bool = True
    force: bool = False
    #: "plugin" keeps difforge's custom-op nodes, "inline" writes their standard-op bodies in
    #: their place; None takes the backend's default (ONNX Runtime: inline)
    custom_ops: str | None = None
    precision: PrecisionConfig = field(default_factory=lambda: PrecisionConfig())


@dataclass
class PrecisionConfig:
    """``--precision`` and what lowers it: role -> precision (empty: all fp32), the INT8
    calibration method, the quality gate, and the calibration run made when the source has
    no calibration data."""

    roles: dict[str, str] = field(default_factory=dict)
    calib_method: str = "minmax"
    min_cosine: float = 0.99
    gate: bool = True
    sensitivity: bool = False
    #: for a source without calibration data: images to record, prompts (None: the default set)
    calib_samples: int = 8
    calib_prompts: Path | None = None
    calib_seed: int = 0

    @property
    def lowered(self) -> bool:
        return any(p != "fp32" for p in self.roles.values())


@dataclass
class CompileConfig:
    export: ExportConfig
    backend: str = "ort"
    threads: int = 0
    optimize: bool = True
    custom_ops: str | None = None
    precision: PrecisionConfig = field(default_factory=lambda: PrecisionConfig())


@dataclass
class CalibrateConfig:
    """``difforge calibrate``: generate ``samples`` seeded images with the fp32 artifact and
    record every component's inputs (a quarter of the images held out for the gates)."""

    source: Path
    output: Path
    samples: int = 8
    #: a prompt file, one per line (None: the default set that ships)
    prompts: Path | None = None
    steps: int | None = None
    seed: int = 0
    force: bool = False


@dataclass(frozen=True)
class ServeOptions:
    """``difforge serve``: ``artifact`` behind Ray Serve on ``host:port``, ``replicas``
    replicas on a local cluster (or the existing one at ``address``), batches of up to
    ``max_batch`` images across clients (None: what the artifact takes per call)."""

    artifact: Path
    replicas: int = 1
    max_batch: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None
    threads: int | None = None
    batch_wait_ms: float = 10.0
    shutdown_timeout_s: float = 60.0
