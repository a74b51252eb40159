"""``axis/k`` dimensions: a tensor at a coarser level of the latent shares its axis."""

from __future__ import annotations

import numpy as np
import pytest

from difforge.artifact.dims import dim_size, shape_of, split_dim
from difforge.artifact.feeds import sample_feeds
from difforge.artifact.manifest import ComponentEntry, TensorSpec
from difforge.errors import DifforgeError
from difforge.runtime.runners.base import Runner


def _entry() -> ComponentEntry:
    return ComponentEntry(
        role="denoiser",
        file="denoiser/model@shallow.onnx",
        inputs=[
            TensorSpec("sample", "float32", ["batch", 4, "height", "width"]),
            TensorSpec("feature", "float32", ["batch", 8, "height/2", "width/2"]),
        ],
        outputs=[TensorSpec("noise_pred", "float32", ["batch", 4, "height", "width"])],
        axes={"batch": [1, 1, 2], "height": [8, 16, 32], "width": [8, 16, 32]},
        tolerance=1e-4,
        multiples={"height": 2, "width": 2},
    )


class _Checking(Runner):
    def _activate(self) -> None:
        return None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}


def test_split_and_size() -> None:
    assert split_dim("height") == ("height", 1)
    assert split_dim("height/4") == ("height", 4)
    assert dim_size("width/2", {"width": 12}) == 6
    assert shape_of(["batch", 3, "height/2"], {"batch": 2, "height": 8}) == [2, 3, 4]
    for bad in ("height/0", "height/x", "/2"):
        with pytest.raises(DifforgeError, match="axis name or 'axis/k'"):
            split_dim(bad)


def test_sample_feeds_follow_the_shared_axis() -> None:
    feeds = sample_feeds(_entry(), "max")
    assert feeds["sample"].shape == (2, 4, 32, 32)
    assert feeds["feature"].shape == (2, 8, 16, 16)


def test_runner_checks_the_coarser_tensor_against_the_sample() -> None:
    runner = _Checking("denoiser@shallow", _entry())
    sample = np.zeros((1, 4, 16, 16), np.float32)
    runner.check_feeds({"sample": sample, "feature": np.zeros((1, 8, 8, 8), np.float32)})
    with pytest.raises(DifforgeError, match="axis 'height' is 16 in one input and 18"):
        runner.check_feeds({"sample": sample, "feature": np.zeros((1, 8, 9, 8), np.float32)})
    with pytest.raises(DifforgeError, match="outside the range"):
        runner.check_feeds(
            {
                "sample": np.zeros((1, 4, 64, 64), np.float32),
                "feature": np.zeros((1, 8, 32, 32), np.float32),
            }
        )
