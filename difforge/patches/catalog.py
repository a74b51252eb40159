"""The patch catalogue: every registered patch with its options, for ``difforge info --patches``."""

from __future__ import annotations

from typing import Any

from difforge.patches import available_patches, get_patch_class


def catalog() -> list[dict[str, Any]]:
    """``Patch.describe()`` of every known patch, by name."""
    return [get_patch_class(name).describe() for name in available_patches()]


def _bounds(option: dict[str, Any]) -> str:
    if "choices" in option:
        return "|".join(option["choices"])
    lo, hi = option.get("minimum"), option.get("maximum")
    if lo is None and hi is None:
        return ""
    return f"{'' if lo is None else f'{lo:g}'}..{'' if hi is None else f'{hi:g}'}"


def format_catalog(entries: list[dict[str, Any]]) -> str:
    """One paragraph per patch: summary, what it applies to, and a line per option."""
    lines: list[str] = []
    for entry in entries:
        applies = ", ".join(entry["targets"]) or "any model with the modules it merges"
        lines.append(f"{entry['name']}: {entry['summary']}")
        lines.append(f"  applies to: {applies}")
        if entry["main_option"]:
            lines.append(f"  --patch {entry['name']}=VALUE sets {entry['main_option']}")
        for name, option in entry["options"].items():
            default = "unset" if option["default"] is None else option["default"]
            default = "''" if default == "" else default
            kind = f"{option['type']} {_bounds(option)}".strip()
            lines.append(f"  {name:<18} {kind:<22} default {default!s:<8} {option['help']}")
        lines.append("")
    lines.append(
        "use: --patch NAME[:KEY=VALUE,...], repeatable (patches on different modules stack)"
    )
    return "\n".join(lines)
