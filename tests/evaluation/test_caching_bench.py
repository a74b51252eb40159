"""``difforge bench-caching``: the uncached model and each caching setting side by side, and
its refusals in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from difforge.evaluation.caching import bench_caching, render_markdown
from tests.cli.test_errors import assert_user_error, difforge

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits-unet"


@pytest.mark.slow
def test_bench_compares_settings_on_the_same_seeds(tmp_path: Path) -> None:
    settings = ["deepcache:interval=1", "deepcache:interval=3"]
    # built and run at the model's one size given explicitly (--resolution)
    report = bench_caching(settings, tmp_path, model=DIGITS, images=2, steps=6, resolution=32)
    assert report.source.endswith("32 px")
    rows = {row.setting: row for row in report.rows}
    assert list(rows) == ["uncached", *settings]
    assert all(len(row.seconds) == 2 and min(row.seconds) > 0 for row in report.rows)
    assert rows["uncached"].schedule == "base ×6"
    assert rows["deepcache:interval=3"].schedule == "full ×2, shallow ×4"
    # interval 1 refreshes every step: the uncached images, to the last bit
    assert rows["deepcache:interval=1"].psnr == [100.0, 100.0]
    cached = rows["deepcache:interval=3"].psnr
    assert all(20.0 < p < 100.0 for p in cached), cached
    text = render_markdown(report, "2026-01-01")
    assert "| deepcache:interval=3 | full ×2, shallow ×4 |" in text
    assert "logical CPUs, flags" in text
    # a second run reuses the compiled artifacts (each stamped with its source and setting)
    stamps = sorted(p.read_text() for p in tmp_path.glob("setting-*.stamp"))
    assert [s.rpartition(" | ")[2] for s in stamps] == sorted(["uncached", *settings])
    assert all(s.startswith(f"{DIGITS.resolve()} @ ") and ", 32 px | " in s for s in stamps)
    built = [(tmp_path / f"setting-{i}" / "manifest.json").stat().st_mtime_ns for i in range(3)]
    again = bench_caching(settings, tmp_path, model=DIGITS, images=1, steps=6, resolution=32)
    assert [row.setting for row in again.rows] == ["uncached", *settings]
    assert built == [
        (tmp_path / f"setting-{i}" / "manifest.json").stat().st_mtime_ns for i in range(3)
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", str(DIGITS)], "Missing option '--setting'"),
        (
            ["--model", str(DIGITS), "--preset", "tiny-sd", "--setting", "deepcache"],
            "give one of --preset or --model",
        ),
        (
            ["--model", str(DIGITS), "--setting", "deepcache", "--setting", "deepcache"],
            "a caching setting is given twice",
        ),
        (["--model", str(DIGITS), "--setting", "deepcache", "--images", "0"], "--images must"),
        (
            ["--model", str(DIGITS), "--setting", "deepcache:interval=0"],
            "option 'interval': 0 is below the minimum",
        ),
        (
            ["--model", str(DIGITS), "--setting", "deepcache", "--quality-samples", "-1"],
            "--quality-samples must",
        ),
        (["--model", str(DIGITS), "--setting", "deepcache", "--block", "a b"], "--block must"),
        (["--preset", "tiny-dit", "--setting", "ras", "--resolution", "0"], "--resolution must"),
    ],
)
def test_bad_requests_are_one_line(args: list[str], needle: str) -> None:
    assert_user_error(difforge("bench-caching", *args), needle)
