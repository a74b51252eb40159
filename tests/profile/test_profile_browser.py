"""report.html renders in headless Chromium with every plot visible.

To find where the plots land, the same page is rendered a second time with each plot image
replaced by a magenta box of the same size (the layout cannot shift: every plot has a fixed
size); the real screenshot must then show non-blank pictures inside every box.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1200, 3600)


def _chromium() -> str:
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if found:
        return found
    message = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message + "; it is required in CI")
    pytest.skip(message)


def _screenshot(browser: str, page: Path, png: Path, profile_dir: Path) -> np.ndarray:
    from PIL import Image

    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile_dir}",
            f"--screenshot={png}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)


def _boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (top, bottom, left, right) of the vertical runs of magenta rows."""
    magenta = (mask[..., 0] > 240) & (mask[..., 1] < 20) & (mask[..., 2] > 240)
    rows = magenta.sum(axis=1) > 100
    boxes, start = [], None
    for y, on in enumerate([*rows.tolist(), False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            cols = np.flatnonzero(magenta[start:y].any(axis=0))
            boxes.append((start, y, int(cols.min()), int(cols.max()) + 1))
            start = None
    return boxes


def test_plots_are_visible_in_chromium(profile_out: Path, tmp_path: Path) -> None:
    browser = _chromium()
    page = profile_out / "report.html"
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text
    plots = re.findall(r'<img class="plot"[^>]*>', text)
    assert len(plots) == 6, "stages, steps, modules, op types, sweep latency, sweep memory"

    def to_box(match: re.Match[str]) -> str:
        w = re.search(r'width="(\d+)"', match.group(0))
        h = re.search(r'height="(\d+)"', match.group(0))
        assert w and h
        return (
            f'<div class="plot" style="width:{w.group(1)}px;height:{h.group(1)}px;'
            'background:#ff00ff"></div>'
        )

    masked = tmp_path / "masked.html"
    masked.write_text(re.sub(r'<img class="plot"[^>]*>', to_box, text), encoding="utf-8")
    real = _screenshot(browser, page, tmp_path / "real.png", tmp_path / "chrome-a")
    mask = _screenshot(browser, masked, tmp_path / "mask.png", tmp_path / "chrome-b")
    boxes = _boxes(mask)
    assert len(boxes) == len(plots), f"found {len(boxes)} plot regions: {boxes}"
    for top, bottom, left, right in boxes:
        region = real[top:bottom, left:right]
        assert bottom - top > 300 and right - left > 900
        inked = (region.min(axis=2) < 200).mean()  # share of clearly non-white pixels
        # a blank (or undecoded) image has no ink at all; a drawn plot has axes, text and lines
        assert region.std() > 10 and inked > 0.005, (top, region.std(), inked)
        assert not ((region[..., 0] > 240) & (region[..., 1] < 20)).mean() > 0.5
