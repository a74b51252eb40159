"""The artifact manifest (format 2): what is in an artifact folder, how it was made, how to run it.

Written by export, calibration and build, read by every later stage and the runtime, so it
imports neither torch nor onnx. Every section is typed and read field by field
(:mod:`difforge.artifact.fields`): a tampered or truncated manifest is refused in one line
naming the field. A manifest of an older format is refused with the command that rebuilds it;
one of a newer format asks for a newer difforge.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from difforge.artifact.calibration import CalibrationSection
from difforge.artifact.fields import Fields, check_int, depth
from difforge.artifact.files import (
    FileRecord,
    check_paths,
    check_relative,
    hash_folder,
    read_file_records,
    verify_files,
)
from difforge.artifact.sections import (
    MAX_AXIS,
    PipelineSection,
    SchedulerSection,
    TokenizerSection,
)
from difforge.artifact.step_plan import StepPlan
from difforge.errors import DifforgeError

MANIFEST_NAME = "manifest.json"
FORMAT = "difforge-artifact"
#: 3: step plans may list refresh steps (``spacing: keys``), add prior noise and batch a
#: sample-free variant over steps; a format-2 reader would sample something else, so it
#: refuses format 3. 4: a step plan may choose the tokens a variant recomputes
#: (``selection``, RAS). Formats 2 and 3 read as they are (later formats only add fields). A
#: manifest is written as format 3 unless it uses what needs 4, so that a format-3 runtime (a
#: device not yet updated) runs every artifact it can.
FORMAT_VERSION = 4
OLDEST_FORMAT_VERSION = 2

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-weights")
#: Sanity bounds on what a manifest may say (far above any real model, far below what would
#: exhaust memory or overflow before a real check could refuse it).
MAX_MANIFEST_BYTES = 16 << 20
MAX_DEPTH = 32

#: The ONNX domain of difforge's custom ops (``difforge::LocalAttention2D``, ...).
CUSTOM_OP_DOMAIN = "difforge"
#: How a built component holds a difforge custom op: the op's node for a plugin to run, or
#: the op's standard-op body inlined in its place.
CUSTOM_OP_MODES = ("plugin", "inlined")


class Stage(str, enum.Enum):
    EXPORTED = "exported"
    CALIBRATED = "calibrated"
    BUILT = "built"


@dataclass
class TensorSpec:
    """One graph input or output: symbolic shape entries are axis names, fixed ones ints."""

    name: str
    dtype: str
    shape: list[int | str]

    @classmethod
    def read(cls, f: Fields) -> TensorSpec:
        shape = f.items("shape")
        for i, dim in enumerate(shape):
            if not isinstance(dim, str):
                check_int(dim, f"{f.where('shape')}[{i}]", minimum=0, maximum=MAX_AXIS)
        return cls(name=f.text("name"), dtype=f.text("dtype"), shape=shape)


@dataclass
class PassRecord:
    """A graph pass as it ran on one component: its registered name, whether it changed the
    graph, and what it reports (fusion counts, functions inlined, ...)."""

    name: str
    modified: bool
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, f: Fields) -> PassRecord:
        return cls(f.text("name"), f.flag("modified"), f.table("details", {}))


@dataclass
class EngineRecord:
    """How one component was built: backend, the files its engine reads, the settings its
    runner applies, what became of each custom op, and the passes that ran."""

    backend: str
    files: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    custom_ops: dict[str, str] = field(default_factory=dict)
    passes: list[PassRecord] = field(default_factory=list)
    #: the built graph against the exported one: max_rel, max_abs
    check: dict[str, float] | None = None
    #: a lowered precision's quality gate as measured: metric, threshold, per-bucket values
    quality: dict[str, Any] | None = None
    #: what the built graph needs of its runtime: ``opsets`` (domain -> version) and ``ops``
    #: (``domain::Op``), so a runtime is judged by the ops it has, not by its version number
    requires: dict[str, Any] | None = None

    @classmethod
    def read(cls, f: Fields) -> EngineRecord:
        ops = f.table("custom_ops", {})
        for op, mode in ops.items():
            if mode not in CUSTOM_OP_MODES:
                raise f.fail(f"custom_ops.{op}", f"{mode!r} is not one of {CUSTOM_OP_MODES}")
        files = f.items("files")
        if not all(isinstance(p, str) for p in files):
            raise f.fail("files", "expected file names")
        for i, rel in enumerate(files):
            check_relative(rel, f"{f.where('files')}[{i}]")
        return cls(
            backend=f.text("backend"),
            files=files,
            settings=f.table("settings", {}),
            custom_ops=ops,
            passes=[PassRecord.read(p) for p in f.objects("passes")],
            check=f.table("check", None),
            quality=f.table("quality", None),
            requires=_requires(f.obj("requires", None)),
        )


def _requires(f: Fields | None) -> dict[str, Any] | None:
    """An engine's ``requires``: opsets (domain -> version) and ops (``domain::Op``)."""
    if f is None:
        return None
    opsets = {
        str(domain): check_int(version, f"{f.where('opsets')}.{domain}", 1, 1000)
        for domain, version in f.table("opsets").items()
    }
    ops = f.items("ops")
    if not all(isinstance(op, str) and "::" in op for op in ops):
        raise f.fail("ops", "expected op names like 'ai.onnx::Conv'")
    return {"opsets": opsets, "ops": ops}


@dataclass
class ComponentEntry:
    """A component as later stages see it: file, interface, shapes built for, precision."""

    role: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: axis name -> [min, opt, max] in the units the graph sees (latent pixels, tokens, batch).
    axes: dict[str, list[int]]
    tolerance: float
    #: axis name -> the multiple its size must be (spatial axes of a U-Net, patch sizes).
    multiples: dict[str, int] = field(default_factory=dict)
    verification: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    #: None until a backend builds the component.
    engine: EngineRecord | None = None

    @classmethod
    def read(cls, f: Fields) -> ComponentEntry:
        axes: dict[str, list[int]] = {}
        for name, value in f.table("axes").items():
            where = f"{f.where('axes')}.{name}"
            if not isinstance(value, list) or len(value) != 3:
                raise DifforgeError(f"manifest.json: {where}: expected [min, opt, max]")
            lo, opt, hi = (check_int(v, where, minimum=1, maximum=MAX_AXIS) for v in value)
            if not lo <= opt <= hi:
                raise DifforgeError(f"manifest.json: {where}: needs min <= opt <= max")
            axes[name] = [lo, opt, hi]
        multiples = {
            k: check_int(v, f"{f.where('multiples')}.{k}", minimum=1, maximum=MAX_AXIS)
            for k, v in f.table("multiples", {}).items()
        }
        engine = f.obj("engine", None)
        return cls(
            role=f.text("role"),
            file=check_relative(f.text("file"), f.where("file")),
            inputs=[TensorSpec.read(t) for t in f.objects("inputs")],
            outputs=[TensorSpec.read(t) for t in f.objects("outputs")],
            axes=axes,
            tolerance=f.number("tolerance", minimum=0.0, maximum=1.0),
            multiples=multiples,
            verification=f.items("verification", []),
            precision=f.text("precision", "fp32", choices=PRECISIONS),
            engine=EngineRecord.read(engine) if engine is not None else None,
        )


@dataclass
class Manifest:
    stage: Stage
    versions: dict[str, str]
    source: dict[str, Any]
    pipeline: PipelineSection
    scheduler: SchedulerSection
    components: dict[str, ComponentEntry]
    patches: list[dict[str, Any]] = field(default_factory=list)
    tokenizer: TokenizerSection | None = None
    #: the second text encoder's tokenizer (SDXL's second CLIP, FLUX's T5)
    tokenizer_2: TokenizerSection | None = None
    step_plan: StepPlan | None = None
    #: recorded inputs for INT8 scales and quality gates (``difforge calibrate``)
    calibration: CalibrationSection | None = None
    files: dict[str, FileRecord] = field(default_factory=dict)
    created: str = ""

    def required_roles(self) -> tuple[str, ...]:
        """The components this pipeline kind cannot run without."""
        roles = ["denoiser"]
        if self.tokenizer_2 is not None or self.pipeline.type == "sdxl":
            roles.insert(0, "text_encoder_2")
        if self.pipeline.text_conditioned:
            roles.insert(0, "text_encoder")
        if not self.pipeline.pixel_space:
            roles.append("vae_decoder")
        return tuple(roles)

    def check(self) -> None:
        """What no single section can check: the components the pipeline needs are there,
        the step plan's graphs exist, a text pipeline has its tokenizer."""
        missing = [r for r in self.required_roles() if r not in self.components]
        if missing:
            raise DifforgeError(
                f"manifest.json: components: a {self.pipeline.type} artifact needs "
                f"{', '.join(missing)}"
            )
        for variant, key in self.plan.variants.items():
            if key not in self.components:
                raise DifforgeError(
                    f"manifest.json: step_plan.variants.{variant}: no component {key!r}"
                )
        for key in self.calibration.components if self.calibration is not None else ():
            if key not in self.components:
                raise DifforgeError(
                    f"manifest.json: calibration.components.{key}: no such component"
                )
        if self.pipeline.text_conditioned and self.tokenizer is None:
            raise DifforgeError(
                f"manifest.json: tokenizer: missing (a {self.pipeline.type} artifact needs one)"
            )
        if "text_encoder_2" in self.components and self.tokenizer_2 is None:
            raise DifforgeError(
                "manifest.json: tokenizer_2: missing (the artifact has a text_encoder_2)"
            )

    def referenced_files(self) -> list[str]:
        """Every file the manifest's sections name (graphs, engine files, tokenizer)."""
        out = [c.file for c in self.components.values()]
        out += [f for c in self.components.values() if c.engine for f in c.engine.files]
        for tok in (self.tokenizer, self.tokenizer_2):
            out += tok.files if tok is not None else []
        if self.calibration is not None:
            out += self.calibration.files()
        return list(dict.fromkeys(out))

    @property
    def plan(self) -> StepPlan:
        """The step plan, or the plain one (one denoiser, nothing per step)."""
        return self.step_plan if self.step_plan is not None else StepPlan()

    @property
    def format_version(self) -> int:
        """The format this manifest is written in: the lowest that holds what it uses."""
        return FORMAT_VERSION if self.plan.selection is not None else 3

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": self.format_version,
            "stage": self.stage.value,
            "created": self.created,
            "versions": dict(self.versions),
            "source": dict(self.source),
            "pipeline": asdict(self.pipeline),
            "scheduler": asdict(self.scheduler),
            "components": {k: asdict(v) for k, v in self.components.items()},
            "patches": list(self.patches),
            "tokenizer": asdict(self.tokenizer) if self.tokenizer is not None else None,
            "tokenizer_2": asdict(self.tokenizer_2) if self.tokenizer_2 is not None else None,
            "step_plan": self.step_plan.to_dict() if self.step_plan is not None else None,
            "calibration": asdict(self.calibration) if self.calibration is not None else None,
            "files": {k: asdict(v) for k, v in self.files.items()},
        }
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        f = Fields(data, "")
        if data.get("format") != FORMAT:
            raise DifforgeError("manifest.json is not a difforge artifact manifest")
        version = data.get("format_version")
        check_int(version, "format_version", minimum=1)
        if version > FORMAT_VERSION:
            raise DifforgeError(
                f"artifact format {version} is newer than this difforge understands "
                f"({FORMAT_VERSION}); upgrade difforge"
            )
        if version < OLDEST_FORMAT_VERSION:
            raise DifforgeError(
                f"artifact format {version} was written by an older difforge; this one reads "
                f"formats {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}: compile it again "
                "(difforge compile ...)"
            )
        tokenizer = f.obj("tokenizer", None)
        tokenizer_2 = f.obj("tokenizer_2", None)
        plan = f.obj("step_plan", None)
        calibration = f.obj("calibration", None)
        versions = f.table("versions")
        manifest = cls(
            stage=Stage(f.text("stage", choices=tuple(s.value for s in Stage))),
            created=f.text("created", ""),
            versions={str(k): str(v) for k, v in versions.items()},
            source=f.table("source"),
            pipeline=PipelineSection.read(f.obj("pipeline")),
            scheduler=SchedulerSection.read(f.obj("scheduler")),
            components={k: ComponentEntry.read(v) for k, v in f.mapping("components").items()},
            patches=f.items("patches", []),
            tokenizer=TokenizerSection.read(tokenizer) if tokenizer is not None else None,
            tokenizer_2=TokenizerSection.read(tokenizer_2) if tokenizer_2 is not None else None,
            step_plan=StepPlan.read(plan) if plan is not None else None,
            calibration=CalibrationSection.read(calibration) if calibration is not None else None,
            files=read_file_records(f.obj("files", None)),
        )
        manifest.check()
        return manifest


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Hash every file under ``root`` into the manifest and write it there."""
    manifest.files = hash_folder(root, exclude=MANIFEST_NAME)
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False)
    (root / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")


def read_manifest(root: Path, verify: bool = True) -> Manifest:
    """Load and check an artifact's manifest: its size and nesting bounded, every field typed
    and in range, every path it names listed and inside the folder; with ``verify``, every
    listed file's size and sha256 too; the tokenizer's pad token in its vocabulary. ``info``,
    ``build`` and the runtime all read through this one check."""
    if not root.exists():
        raise DifforgeError(f"artifact not found: {root}")
    if not root.is_dir():
        raise DifforgeError(f"artifact must be a folder: {root}")
    path = root / MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        raise DifforgeError(f"{root} is not a difforge artifact (no {MANIFEST_NAME})")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise DifforgeError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise DifforgeError(f"{path} nests deeper than {MAX_DEPTH} levels") from None
    except (OSError, ValueError) as exc:
        raise DifforgeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise DifforgeError(f"{path} does not hold a JSON object")
    if depth(data) > MAX_DEPTH:
        raise DifforgeError(f"{path} nests deeper than {MAX_DEPTH} levels")
    manifest = Manifest.from_dict(data)
    check_paths(root, manifest.referenced_files(), manifest.files)
    if verify:
        verify_files(root, manifest.files)
    for key, tok in (("tokenizer", manifest.tokenizer), ("tokenizer_2", manifest.tokenizer_2)):
        if tok is not None:
            tok.check_vocab(root, key)
    return manifest
