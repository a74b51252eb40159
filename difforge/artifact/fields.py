"""Typed reading of manifest JSON: each field checked as it is read, a bad one named in one line.

A manifest comes from a file the user may have downloaded or edited, so nothing in it is
trusted: every reader names the dotted path of the field it refused
(``manifest.json: components.denoiser.axes.batch: expected 3 integers``), which the CLI
prints as one line. Written here rather than with a JSON-schema library because the core
install (numpy, onnxruntime, pillow, click, tokenizers) has none, and the typed dataclasses
must be built anyway.
"""

from __future__ import annotations

import math
from typing import Any

from difforge.errors import DifforgeError


class Fields:
    """A JSON object at ``path`` inside the manifest, read field by field."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise self._error(path, f"expected an object, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.path = path

    @staticmethod
    def _error(path: str, why: str) -> DifforgeError:
        return DifforgeError(f"manifest.json: {path}: {why}")

    def fail(self, key: str, why: str) -> DifforgeError:
        return self._error(self.where(key), why)

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = ...) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        return self.data[key]

    def text(self, key: str, default: Any = ..., choices: tuple[str, ...] = ()) -> Any:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_kind(value)}")
        if choices and value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(
        self,
        key: str,
        default: Any = ...,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        return check_int(value, self.where(key), minimum, maximum)

    def number(
        self,
        key: str,
        default: Any = ...,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        number = check_float(value, self.where(key))
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.fail(key, f"{number} is outside [{minimum}, {maximum}]")
        return number

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def obj(self, key: str, default: Any = ...) -> Any:
        """A nested object as :class:`Fields` (or ``default`` when absent)."""
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        return Fields(value, self.where(key))

    def table(self, key: str, default: Any = ...) -> Any:
        """A nested object as a plain dict (free-form sections: source, scheduler config)."""
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object, got {_kind(value)}")
        return dict(value)

    def items(self, key: str, default: Any = ...) -> Any:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_kind(value)}")
        return list(value)

    def objects(self, key: str) -> list[Fields]:
        """A list of objects, each as :class:`Fields` (empty when absent)."""
        return [Fields(v, f"{self.where(key)}[{i}]") for i, v in enumerate(self.items(key, []))]

    def mapping(self, key: str) -> dict[str, Fields]:
        """An object of objects, each as :class:`Fields` (empty when absent)."""
        table = self.table(key, {})
        return {str(k): Fields(v, f"{self.where(key)}.{k}") for k, v in table.items()}


def check_int(
    value: Any, where: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DifforgeError(f"manifest.json: {where}: expected an integer, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise DifforgeError(f"manifest.json: {where}: {value} is below {minimum}")
    if maximum is not None and value > maximum:
        raise DifforgeError(f"manifest.json: {where}: {value} is above {maximum}")
    return value


def depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def check_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DifforgeError(f"manifest.json: {where}: expected a finite number, got {_kind(value)}")
    return float(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    return "an object" if isinstance(value, dict) else type(value).__name__
