"""The artifact manifest: what is in an artifact folder, how it was made, and how to check it.

It is written by export and build and read by the runtime, so it imports neither torch nor
onnx. The schema is versioned: a runtime refuses a manifest newer than it understands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError

MANIFEST_NAME = "manifest.json"
FORMAT = "difforge-artifact"
FORMAT_VERSION = 1


@dataclass
class TensorSpec:
    """One graph input or output: symbolic shape entries are axis names, fixed ones ints."""

    name: str
    dtype: str
    shape: list[int | str]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=data["name"], dtype=data["dtype"], shape=list(data["shape"]))


@dataclass
class ComponentEntry:
    """A component as the runtime sees it: its file, interface and the shapes it was built for."""

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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComponentEntry:
        return cls(
            role=data["role"],
            file=data["file"],
            inputs=[TensorSpec.from_dict(t) for t in data["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in data["outputs"]],
            axes={k: list(v) for k, v in data["axes"].items()},
            tolerance=float(data["tolerance"]),
            multiples={k: int(v) for k, v in data.get("multiples", {}).items()},
            verification=list(data.get("verification", [])),
        )


@dataclass
class Manifest:
    stage: str  # "exported" or "built"
    versions: dict[str, str]
    source: dict[str, Any]
    pipeline: dict[str, Any]
    scheduler: dict[str, Any]
    components: dict[str, ComponentEntry]
    patches: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    engine: dict[str, Any] | None = None
    tokenizer: dict[str, Any] | None = None
    step_plan: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Keep the identifying keys first so `head manifest.json` says what this is.
        order = ["format", "format_version", "stage", "created"]
        return {k: data[k] for k in order} | {k: v for k, v in data.items() if k not in order}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise DifforgeError("manifest.json is not a difforge artifact manifest")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise DifforgeError(
                f"artifact format version {version} is newer than this difforge understands "
                f"({FORMAT_VERSION}); upgrade difforge"
            )
        try:
            return cls(
                stage=data["stage"],
                versions=dict(data["versions"]),
                source=dict(data["source"]),
                pipeline=dict(data["pipeline"]),
                scheduler=dict(data["scheduler"]),
                components={k: ComponentEntry.from_dict(v) for k, v in data["components"].items()},
                patches=list(data.get("patches", [])),
                precision=data.get("precision", "fp32"),
                engine=data.get("engine"),
                tokenizer=data.get("tokenizer"),
                step_plan=data.get("step_plan"),
                files=dict(data.get("files", {})),
                created=data.get("created", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DifforgeError(f"manifest.json is malformed: missing or bad field {exc}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_folder(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root`` except the manifest itself."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME:
            continue
        out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def write_manifest(root: Path, manifest: Manifest) -> None:
    manifest.files = hash_folder(root)
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False)
    (root / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")


def read_manifest(root: Path, verify: bool = True) -> Manifest:
    """Load and check an artifact's manifest; with ``verify``, every file's hash too."""
    if not root.exists():
        raise DifforgeError(f"artifact not found: {root}")
    if not root.is_dir():
        raise DifforgeError(f"artifact must be a folder: {root}")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DifforgeError(f"{root} is not a difforge artifact (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DifforgeError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DifforgeError(f"{path} does not hold a JSON object")
    manifest = Manifest.from_dict(data)
    if verify:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: Manifest) -> None:
    """Refuse an artifact whose files are missing, extra or changed since it was written."""
    if not manifest.files:
        raise DifforgeError(f"{root / MANIFEST_NAME} lists no files; the artifact is incomplete")
    for rel, meta in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise DifforgeError(f"artifact file missing: {rel}")
        if path.stat().st_size != meta.get("bytes"):
            raise DifforgeError(f"artifact file changed (size differs from the manifest): {rel}")
        if sha256_file(path) != meta.get("sha256"):
            raise DifforgeError(f"artifact file changed (sha256 differs from the manifest): {rel}")
    for component in manifest.components.values():
        if component.file not in manifest.files:
            raise DifforgeError(f"manifest names {component.file} but does not hash it")
