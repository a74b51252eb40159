"""Declarative component specs: one per exported graph (cf. Optimum's export configs).

A spec names the inputs and outputs, the axes they share with their [min, opt, max] ranges
(the profile TensorRT and the verifier both use) and the tolerance the export must meet.
Everything downstream (dynamic shapes, sample inputs, verification shapes, the manifest
entry, the runner's input checks) is derived from it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from difforge.artifact.dims import shape_of, split_dim
from difforge.artifact.manifest import ComponentEntry, TensorSpec

_TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "float16": torch.float16}


@dataclass(frozen=True)
class Axis:
    min: int
    opt: int
    max: int
    multiple: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"axis range must satisfy 1 <= min <= opt <= max: {self}")


@dataclass(frozen=True)
class Tensor:
    """An input/output; each dim is a fixed int or the name of an axis (optionally 'k*axis')."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]
    #: How sample inputs are drawn: "normal", "timestep", ("int", high),
    #: ("uniform", low, high) or ("tokens", p): per row, distinct ascending indices of the
    #: (height/p) x (width/p) token grid.
    sample: Any = "normal"


@dataclass(frozen=True)
class ComponentSpec:
    role: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    axes: dict[str, Axis]
    tolerance: float = 1e-4
    notes: tuple[str, ...] = field(default=())

    def profile(self, which: str) -> dict[str, int]:
        return {name: getattr(axis, which) for name, axis in self.axes.items()}

    def trace_sizes(self) -> dict[str, int]:
        """Sizes for the export trace: opt, except that an axis whose opt is 1 but which may
        grow is traced at 2, since torch.export specialises every size-1 dimension."""
        return {
            name: (min(2, axis.max) if axis.opt == 1 else axis.opt)
            for name, axis in self.axes.items()
        }

    def profiles(self) -> dict[str, dict[str, int]]:
        """The shapes verification runs at: min, opt and max of every axis together."""
        return {which: self.profile(which) for which in ("min", "opt", "max")}

    def dynamic_shapes(self) -> dict[str, dict[int, Any]]:
        """``torch.export`` dynamic shapes; an axis with a multiple becomes ``multiple * Dim``."""
        from torch.export import Dim

        dims: dict[str, Any] = {}
        for name, axis in self.axes.items():
            if axis.min == axis.max:
                continue
            if axis.multiple > 1:
                base = Dim(
                    f"{name}_div{axis.multiple}",
                    min=axis.min // axis.multiple,
                    max=axis.max // axis.multiple,
                )
                dims[name] = axis.multiple * base
            else:
                dims[name] = Dim(name, min=axis.min, max=axis.max)
        out: dict[str, dict[int, Any]] = {}
        for tensor in self.inputs:
            entry: dict[int, Any] = {}
            for i, d in enumerate(tensor.dims):
                if isinstance(d, str) and split_dim(d)[0] in dims:
                    entry[i] = self._derived(d, dims)
            out[tensor.name] = entry
        return out

    def _derived(self, dim: str, dims: dict[str, Any]) -> Any:
        """``axis`` -> its Dim; ``axis/k`` -> ``(multiple / k) * base`` (torch.export's
        derived dims are affine, so the axis must be a multiple of k by construction)."""
        name, divisor = split_dim(dim)
        if divisor == 1:
            return dims[name]
        axis = self.axes[name]
        if axis.multiple % divisor:
            raise ValueError(f"{self.role}: {dim} needs {name}'s multiple divisible by {divisor}")
        base = dims[name].root  # an axis with a multiple > 1 is ``multiple * root``
        return base if axis.multiple == divisor else (axis.multiple // divisor) * base

    def sample_inputs(self, sizes: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        feeds: dict[str, torch.Tensor] = {}
        for tensor in self.inputs:
            shape = shape_of(tensor.dims, sizes)
            if tensor.sample == "timestep":
                feeds[tensor.name] = torch.rand(shape, generator=gen) * 999.0
            elif isinstance(tensor.sample, tuple) and tensor.sample[0] == "int":
                feeds[tensor.name] = torch.randint(0, tensor.sample[1], shape, generator=gen)
            elif isinstance(tensor.sample, tuple) and tensor.sample[0] == "tokens":
                p = tensor.sample[1]
                tokens = (sizes["height"] // p) * (sizes["width"] // p)
                rows = [torch.randperm(tokens, generator=gen)[: shape[1]] for _ in range(shape[0])]
                feeds[tensor.name] = torch.stack(rows).sort(dim=1).values
            elif isinstance(tensor.sample, tuple) and tensor.sample[0] == "uniform":
                low, high = tensor.sample[1], tensor.sample[2]
                feeds[tensor.name] = low + (high - low) * torch.rand(shape, generator=gen)
            else:
                feeds[tensor.name] = torch.randn(
                    shape, generator=gen, dtype=_TORCH_DTYPES[tensor.dtype]
                )
        return feeds

    def manifest_entry(self, file: str, verification: list[dict[str, Any]]) -> ComponentEntry:
        return ComponentEntry(
            role=self.role,
            file=file,
            inputs=[TensorSpec(t.name, t.dtype, list(t.dims)) for t in self.inputs],
            outputs=[TensorSpec(t.name, t.dtype, list(t.dims)) for t in self.outputs],
            axes={k: [a.min, a.opt, a.max] for k, a in self.axes.items()},
            multiples={k: a.multiple for k, a in self.axes.items() if a.multiple > 1},
            tolerance=self.tolerance,
            verification=verification,
        )
