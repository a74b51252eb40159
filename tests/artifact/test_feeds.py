"""Sample inputs from a component's manifest entry alone, at a profile shape or chosen sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from difforge.artifact.feeds import sample_feeds
from difforge.artifact.manifest import read_manifest
from difforge.errors import DifforgeError


def test_feeds_follow_the_profile_or_the_sizes_given(tiny_sd_artifact: Path) -> None:
    entry = read_manifest(tiny_sd_artifact).components["denoiser"]
    lo = sample_feeds(entry, "min")
    assert lo["sample"].shape == (entry.axes["batch"][0], 4, entry.axes["height"][0],
                                  entry.axes["width"][0])
    feeds = sample_feeds(entry, sizes={"batch": 1, "height": 24, "width": 40}, seed=3)
    assert feeds["sample"].shape == (1, 4, 24, 40) and feeds["sample"].dtype == np.float32
    assert feeds["timestep"].shape == (1,) and 0 <= feeds["timestep"].min() < 999
    assert feeds["encoder_hidden_states"].shape[0] == 1
    again = sample_feeds(entry, sizes={"batch": 1, "height": 24, "width": 40}, seed=3)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)
    other = sample_feeds(entry, sizes={"batch": 1, "height": 24, "width": 40}, seed=4)
    assert not np.array_equal(feeds["sample"], other["sample"])
    opt = sample_feeds(entry, sizes={"height": 16})
    assert opt["sample"].shape[2:] == (16, entry.axes["width"][1])
    with pytest.raises(DifforgeError, match="no axis tokens"):
        sample_feeds(entry, sizes={"tokens": 4})
