"""Model patches applied before export, looked up by name.

CLI syntax (``--patch`` strings), parsed by :func:`parse_patch_arg`::

    linfusion                     the patch with its defaults
    clear:radius=8,down=4         options as key=value, comma-separated
    linfusion=/ckpt/LinFusion-1-5 the patch's main option (here the checkpoint folder);
                                  everything after the first "=" is the value, so a path
                                  may contain ":" or ","
    clear:weights=/w.safetensors,radius=8   the main option by its name, with others

Built-in patches live in one module each and are imported on first use, so that listing
patches does not import diffusers.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

import torch

from difforge.errors import DifforgeError
from difforge.patches.base import (
    ExtraInputSpec,
    Patch,
    PatchOption,
    PatchReport,
    PatchRequest,
)

__all__ = [
    "ExtraInputSpec",
    "Patch",
    "PatchOption",
    "PatchReport",
    "PatchRequest",
    "apply_patches",
    "available_patches",
    "create_patch",
    "get_patch_class",
    "parse_patch_arg",
    "register_patch",
]

_REGISTRY: dict[str, type[Patch]] = {}

# name -> module that registers it when imported.
_BUILTIN: dict[str, str] = {
    "linfusion": "difforge.patches.linfusion",
    "clear": "difforge.patches.clear",
    "msw-msa": "difforge.patches.msw_msa",
    "redilate": "difforge.patches.redilate",
    "raunet": "difforge.patches.raunet",
    "reparam": "difforge.patches.reparam",
    "deepcache": "difforge.patches.deepcache",
    "faster-diffusion": "difforge.patches.faster_diffusion",
    "ras": "difforge.patches.ras",
}

_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_KEY = re.compile(r"[a-z_][a-z0-9_]*")


def register_patch(cls: type[Patch]) -> type[Patch]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{cls.__name__}: patch name {name!r} must match {_NAME.pattern}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"patch {name!r} is registered twice ({existing.__name__}, {cls.__name__})"
        )
    _REGISTRY[name] = cls
    return cls


def available_patches() -> list[str]:
    """Names of every known patch, sorted."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def get_patch_class(name: str) -> type[Patch]:
    """The patch class registered as ``name``; :class:`DifforgeError` if unknown."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DifforgeError(
            f"unknown patch {name!r} (known: {', '.join(available_patches())})"
        ) from None


def parse_patch_arg(text: str) -> PatchRequest:
    """Parse one ``--patch`` string (syntax in this module's docstring)."""
    raw = text.strip()
    match = _NAME.match(raw)
    if match is None:
        raise DifforgeError(f"bad patch {text!r}: expected a name such as 'clear:radius=8'")
    name, rest = match.group(0), raw[match.end() :]
    if not rest:
        return PatchRequest(name=name)
    if rest[0] == "=":
        main = rest[1:].strip()
        if not main:
            raise DifforgeError(f"bad patch {text!r}: nothing after '='")
        return PatchRequest(name=name, main=main)
    if rest[0] != ":":
        raise DifforgeError(f"bad patch {text!r}: expected ':' or '=' after {name!r}")
    options: dict[str, str] = {}
    for item in rest[1:].split(","):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not _KEY.fullmatch(key):
            raise DifforgeError(f"bad patch {text!r}: {item.strip()!r} is not key=value")
        if not value:
            raise DifforgeError(f"bad patch {text!r}: option {key!r} has no value")
        if key in options:
            raise DifforgeError(f"bad patch {text!r}: option {key!r} given twice")
        options[key] = value
    return PatchRequest(name=name, options=options)


def create_patch(request: PatchRequest | str) -> Patch:
    """Build the requested patch, checking its options (:class:`DifforgeError` if bad)."""
    if isinstance(request, str):
        request = parse_patch_arg(request)
    cls = get_patch_class(request.name)
    options = dict(request.options)
    if request.main is not None:
        if cls.main_option is None:
            raise DifforgeError(
                f"patch {cls.name!r} takes no '{cls.name}=VALUE' argument; "
                f"use '{cls.name}:key=value'"
            )
        if cls.main_option in options:
            raise DifforgeError(f"patch {cls.name!r}: option {cls.main_option!r} given twice")
        options[cls.main_option] = request.main
    return cls(**options)


def apply_patches(
    denoiser: torch.nn.Module, requests: Iterable[PatchRequest | str | Patch]
) -> list[PatchReport]:
    """Create and apply patches in order; on error, undo the ones already applied.

    Two patches may not rewrite the same module (or one inside the other): the second would
    rewrite what the first put there, which is neither author's method."""
    applied: list[Patch] = []
    reports: list[PatchReport] = []
    try:
        for request in requests:
            patch = request if isinstance(request, Patch) else create_patch(request)
            report = patch.apply(denoiser)
            applied.append(patch)
            for earlier in reports:
                both = _overlap(earlier.replaced, report.replaced)
                if both is not None:
                    raise DifforgeError(
                        f"patches {earlier.patch!r} and {report.patch!r} both rewrite {both}; "
                        "difforge does not stack patches on the same module"
                    )
            reports.append(report)
    except BaseException:
        for patch in reversed(applied):
            patch.undo()
        raise
    return reports


def _overlap(a: list[str], b: list[str]) -> str | None:
    """A module both lists name (the same one, or one inside the other), if any."""
    for x in a:
        for y in b:
            if x == y or x.startswith(y + ".") or y.startswith(x + "."):
                return max(x, y, key=len)
    return None
