"""An export holding difforge custom ops (tiny-dit with CLEAR's LocalAttention2D), shared by
the engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def clear_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from difforge import ExportConfig, export

    out = tmp_path_factory.mktemp("clear") / "export"
    return export(
        ExportConfig(output=out, preset="tiny-dit", patches=["clear:radius=4"], max_batch=1)
    )
