"""Which PyTorch module a graph node came from, as the exporter recorded it.

The dynamo exporter records, on each node, ``pkg.torch.onnx.name_scopes`` (the module path
from the root, then the FX node name). Reading it needs no onnx: the caller passes a node's
metadata as a dict. The profiler attributes time with it; the precision stage chooses and
names layer groups with it.
"""

from __future__ import annotations

import ast

SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def _parse_list(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def module_path(meta: dict[str, str]) -> str | None:
    """The deepest module path a node came from (``None`` without exporter metadata).

    ``name_scopes`` ends with the FX node's own name; the entries before it are modules.
    """
    scopes = _parse_list(meta.get(SCOPES_KEY, ""))
    if not scopes:
        return None
    modules = [s for s in scopes[:-1] if s and not s.startswith("_empty_nn_module_stack")]
    return modules[-1] if modules else ""
