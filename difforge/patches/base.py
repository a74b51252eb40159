"""The patch contract: declared options, what a patch reports, and how it is undone.

A patch rewrites a diffusers denoiser in place before export (LinFusion swaps modules,
CLEAR and MSW-MSA change how attention is computed). Every rewrite records how to put the
original back, so that ``undo()`` leaves the model bit-identical to what it was.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from difforge.artifact.step_plan import StepInput
from difforge.artifact.step_tables import step_table
from difforge.errors import DifforgeError

__all__ = [
    "OPTION_TYPES",
    "ExtraInputSpec",
    "Patch",
    "PatchOption",
    "PatchReport",
    "PatchRequest",
]

OPTION_TYPES = ("int", "float", "str", "bool", "path")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class PatchOption:
    """One option a patch takes: ``type`` is one of :data:`OPTION_TYPES`.

    ``minimum``/``maximum`` bound int and float values (inclusive); ``choices`` restricts str
    values. A ``None`` default means "not given" (for paths: no file).
    """

    name: str
    type: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type {self.type!r} not in {OPTION_TYPES}")

    def convert(self, patch: str, value: Any) -> Any:
        """Return ``value`` (a CLI string or a Python value) as this option's type.

        Raises :class:`DifforgeError` naming the patch, the option and the reason.
        """
        where = f"patch {patch!r} option {self.name!r}"
        if value is None:
            return None
        converted: Any
        if self.type == "bool":
            if isinstance(value, bool):
                converted = value
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                converted = value.strip().lower() in _TRUE
            else:
                raise DifforgeError(f"{where}: expected true or false, got {value!r}")
        elif self.type == "int":
            # bool is an int subclass; "radius=true" is a typo, not 1.
            if isinstance(value, bool):
                raise DifforgeError(f"{where}: expected an integer, got {value!r}")
            if isinstance(value, int):
                converted = value
            else:
                try:
                    converted = int(str(value).strip(), 10)
                except ValueError:
                    raise DifforgeError(f"{where}: expected an integer, got {value!r}") from None
        elif self.type == "float":
            if isinstance(value, bool):
                raise DifforgeError(f"{where}: expected a number, got {value!r}")
            try:
                converted = float(value)
            except (TypeError, ValueError):
                raise DifforgeError(f"{where}: expected a number, got {value!r}") from None
            if not math.isfinite(converted):
                raise DifforgeError(f"{where}: expected a finite number, got {value!r}")
        elif self.type == "path":
            text = str(value).strip()
            if not text:
                raise DifforgeError(f"{where}: empty path")
            converted = Path(text).expanduser()
            if not converted.exists():
                raise DifforgeError(f"{where}: {str(converted)!r} does not exist")
        else:
            converted = str(value)
            if self.choices is not None and converted not in self.choices:
                raise DifforgeError(
                    f"{where}: {converted!r} is not one of {', '.join(self.choices)}"
                )
        if self.type in ("int", "float"):
            if self.minimum is not None and converted < self.minimum:
                raise DifforgeError(f"{where}: {converted} is below the minimum {self.minimum:g}")
            if self.maximum is not None and converted > self.maximum:
                raise DifforgeError(f"{where}: {converted} is above the maximum {self.maximum:g}")
        return converted

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (for ``--help`` listings and docs)."""
        out: dict[str, Any] = {"type": self.type, "default": _jsonable(self.default)}
        out["help"] = self.help
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class PatchRequest:
    """A patch asked for by name with raw option values (strings from the CLI, or Python values).

    ``main`` is the value given as ``name=VALUE``: it goes to the patch's main option.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    main: str | None = None


@dataclass(frozen=True)
class ExtraInputSpec:
    """A graph input a patch adds to the denoiser, fed by the runtime on every call.

    The exporter passes the tensor to the denoiser as ``{kwargs_key: {name: tensor}}``
    (``cross_attention_kwargs`` for a UNet, ``joint_attention_kwargs`` for FLUX), and
    declares it as an ONNX input of ``dtype`` and static ``shape``. ``table(num_steps, seed)``
    is the per-step value the runtime feeds at step i (every call of that step, so both
    halves of unbatched CFG see the same value); the manifest stores the table.
    ``default`` is what the patched model computes when the input is not passed at all.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    kwargs_key: str
    default: list[Any]
    description: str
    #: The registered table kind (:mod:`difforge.artifact.step_tables`) and its parameters:
    #: the manifest stores both, and the runtime rebuilds the table for any step count.
    table_kind: str
    table_params: dict[str, Any] = field(default_factory=dict)

    def table(self, num_steps: int, seed: int) -> list[Any]:
        """Values for steps ``0 .. num_steps-1``, deterministic in ``seed``."""
        return step_table(self.table_kind, num_steps, seed, self.table_params)

    def step_input(self) -> StepInput:
        """The step plan's entry for this input (seeded per request)."""
        return StepInput(
            name=self.name,
            table=self.table_kind,
            params=dict(self.table_params),
            dtype=self.dtype,
            shape=tuple(self.shape),
        )

    def example(self) -> torch.Tensor:
        """A tensor holding ``default``, for tracing the exporter's example inputs."""
        dtype = getattr(torch, self.dtype)
        return torch.tensor(self.default, dtype=dtype).reshape(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "kwargs_key": self.kwargs_key,
            "default": list(self.default),
            "description": self.description,
            "table": self.table_kind,
            "params": dict(self.table_params),
        }


@dataclass
class PatchReport:
    """What a patch did to a model; ``to_dict()`` goes into the artifact manifest."""

    patch: str
    options: dict[str, Any]
    replaced: list[str]
    notes: list[str] = field(default_factory=list)
    extra_inputs: dict[str, ExtraInputSpec] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.replaced)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patch": self.patch,
            "options": {k: _jsonable(v) for k, v in self.options.items()},
            "replaced": list(self.replaced),
            "count": self.count,
            "notes": list(self.notes),
            "extra_inputs": {k: v.to_dict() for k, v in self.extra_inputs.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return value


class Patch(ABC):
    """A named, undoable rewrite of a denoiser.

    Subclasses set ``name``, ``summary``, ``option_specs`` (their options), ``main_option``
    (the option ``name=VALUE`` sets, if any) and ``targets`` (denoiser class names, matched
    against the model's class and its bases), implement :meth:`_apply`, and register every
    change they make with :meth:`_on_undo` so that :meth:`undo` can reverse it.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    option_specs: ClassVar[tuple[PatchOption, ...]] = ()
    main_option: ClassVar[str | None] = None
    targets: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        specs = {spec.name: spec for spec in self.option_specs}
        for key in options:
            if key not in specs:
                raise DifforgeError(self._unknown_option_message(key))
        self.options: dict[str, Any] = {
            key: spec.convert(self.name, options.get(key, spec.default))
            for key, spec in specs.items()
        }
        self._validate()
        self._undo_actions: list[Callable[[], None]] = []
        self._applied = False

    @classmethod
    def _unknown_option_message(cls, key: str) -> str:
        known = ", ".join(spec.name for spec in cls.option_specs) or "no options"
        return f"patch {cls.name!r} has no option {key!r} (it takes: {known})"

    def _validate(self) -> None:
        """Cross-option checks (after each value is converted); raise DifforgeError."""
        return

    def check(self, denoiser: torch.nn.Module) -> None:
        """Raise :class:`DifforgeError` if this patch cannot be applied to ``denoiser``."""
        classes = {cls.__name__ for cls in type(denoiser).__mro__}
        if self.targets and not classes & set(self.targets):
            raise DifforgeError(
                f"patch {self.name!r} does not apply to {type(denoiser).__name__} "
                f"(it applies to {', '.join(self.targets)})"
            )

    def apply(self, denoiser: torch.nn.Module) -> PatchReport:
        """Rewrite ``denoiser`` in place and report what changed."""
        if self._applied:
            raise DifforgeError(f"patch {self.name!r} is already applied; undo() it first")
        self.check(denoiser)
        try:
            report = self._apply(denoiser)
        except BaseException:
            # A half-applied patch must not leave the model in between.
            self.undo()
            raise
        self._applied = True
        report.extra_inputs = dict(self.extra_inputs())
        return report

    @abstractmethod
    def _apply(self, denoiser: torch.nn.Module) -> PatchReport:
        """Do the rewrite; call :meth:`_on_undo` for each change, in the order made."""

    def undo(self) -> None:
        """Restore every module, parameter, processor and hook this patch changed."""
        while self._undo_actions:
            self._undo_actions.pop()()
        self._applied = False

    def _on_undo(self, action: Callable[[], None]) -> None:
        self._undo_actions.append(action)

    def extra_inputs(self) -> dict[str, ExtraInputSpec]:
        """Graph inputs this patch adds (name -> spec); none by default."""
        return {}

    def wrapper_options(self) -> dict[str, Any]:
        """What the exporter's denoiser wrapper must pass the patched model, once applied
        (CLEAR on FLUX: the attention kwarg that carries the token grid); none by default."""
        return {}

    def bind_resolution(self, lo: int, default: int, hi: int) -> None:
        """The build's pixel resolutions, before ``apply``. A resolution-aware patch left
        without its ``resolution`` option takes the build's default."""
        if "resolution" in self.options and self.options["resolution"] is None:
            self.options["resolution"] = default

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """JSON-friendly description of the patch and its options."""
        return {
            "name": cls.name,
            "summary": cls.summary,
            "targets": list(cls.targets),
            "main_option": cls.main_option,
            "options": {spec.name: spec.describe() for spec in cls.option_specs},
        }


_FORWARD_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def replace_submodule(root: torch.nn.Module, qualified_name: str, new: torch.nn.Module) -> None:
    """``setattr`` the submodule at dotted ``qualified_name`` (ModuleList indices included).

    The new module shares the old one's forward-hook tables, so hooks another patch put on
    that slot (MSW-MSA windows ``attn1``) keep working whichever patch is applied first,
    and removing a hook's handle removes it from both modules.
    """
    parent_name, _, attr = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = getattr(parent, attr)
    for table in _FORWARD_HOOK_DICTS:
        setattr(new, table, getattr(old, table))
    setattr(parent, attr, new)
