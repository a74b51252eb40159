"""The house's rules, checked on the source: each stage imports only the stages before it, the
artifact layer and the runtime import nothing upstream, modules stay short, imports form no
cycle.

Imports are read from each module's AST (every ``import`` and ``from ... import``, at module
level or inside functions), so a lazy import counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "difforge"

#: The stages in the order data flows; a stage may import earlier stages, never later ones.
STAGES = (
    "sources", "patches", "exporter", "passes", "calib", "engines", "runtime", "serve", "profile"
)
#: Shared by every stage (the contract, custom ops, small utilities).
SHARED = ("artifact", "errors", "plugins", "config", "metrics", "versions", "_deps", "_progress")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module
            if node.module and not node.level:
                # `from difforge.runtime import runners` imports difforge.runtime.runners
                yield from (f"{node.module}.{a.name}" for a in node.names)


def _difforge(path: Path) -> set[str]:
    return {m for m in _imports(path) if m == "difforge" or m.startswith("difforge.")}


def _under(module: str, *packages: str) -> bool:
    return any(module == f"difforge.{p}" or module.startswith(f"difforge.{p}.") for p in packages)


def _files(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def _real(module: str) -> bool:
    """A module or package of difforge (not a name imported from one)."""
    rel = module.split(".")[1:]
    target = PACKAGE.joinpath(*rel)
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def test_artifact_imports_nothing_of_difforge_but_errors() -> None:
    for path in _files("artifact"):
        bad = {m for m in _difforge(path) if _real(m) and not _under(m, "artifact", "errors")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_runtime_imports_only_the_artifact_layer() -> None:
    for path in _files("runtime"):
        bad = {
            m
            for m in _difforge(path)
            if _real(m) and not _under(m, "artifact", "errors", "runtime")
        }
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize("stage", STAGES)
def test_stages_import_only_upstream(stage: str) -> None:
    later = STAGES[STAGES.index(stage) + 1 :]
    for path in _files(stage):
        bad = {m for m in _difforge(path) if _real(m) and _under(m, *later)}
        assert not bad, f"{path.relative_to(PACKAGE)} ({stage}) imports {sorted(bad)}"


def test_shared_layers_import_no_stage() -> None:
    for name in SHARED:
        paths = _files(name) if (PACKAGE / name).is_dir() else [PACKAGE / f"{name}.py"]
        for path in paths:
            bad = {m for m in _difforge(path) if _real(m) and _under(m, *STAGES)}
            assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


#: what serving may not import: the compiler (it serves artifacts with the torch-free runtime)
COMPILER = ("sources", "patches", "exporter", "passes", "calib", "engines", "plugins")


def test_serve_imports_no_compiler_stage() -> None:
    """``serve`` comes after ``runtime`` but needs none of the compiler between them: a
    serving host (Triton's Python backend, a Ray worker) installs difforge's core only."""
    paths = _files("serve")
    assert PACKAGE / "serve" / "triton" / "bls.py" in paths
    for path in paths:
        bad = {m for m in _difforge(path) if _real(m) and _under(m, *COMPILER)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, long


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of module imports, if any (a package importing its own submodules is not one:
    that is how packages work)."""
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt, [*trail, nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_module_imports_form_no_cycle() -> None:
    """Every import counts, lazy ones included: a function-level import hides a cycle from
    Python's import machinery, not from the reader."""
    graph = {
        _name(path): {m for m in _difforge(path) if m.startswith("difforge.") and _real(m)}
        for path in _modules()
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_rules_see_imports() -> None:
    """Not vacuous: the walker finds a known import of each kind, the cycle finder a cycle."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"p": {"p.x"}, "p.x": {"p"}}) is None
    runtime = _difforge(PACKAGE / "runtime" / "loader.py")
    assert "difforge.artifact.manifest" in runtime
    lazy = _difforge(PACKAGE / "api.py")
    assert "difforge.exporter.export" in lazy  # imported inside a function
