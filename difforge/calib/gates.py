"""Quality gates: a lowered component against fp32, step by step along held-out trajectories.

For each recorded input of the gate split (trajectories the calibration never saw), both the
fp32 graph and the lowered engine run; the cosine similarity of their outputs is averaged per
timestep bucket. A gate passes when every bucket's mean reaches the threshold; the worst record
of each bucket is kept too, so a report shows whether a bucket fails on average or on one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from difforge.artifact.calibration import CalibrationData

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
DEFAULT_MIN_COSINE = 0.99


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors (float64; two all-zero tensors are identical)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 and ny == 0.0:
        return 1.0
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


@dataclass
class GateResult:
    """Per bucket name: mean and worst cosine; ``passed`` against ``threshold``."""

    threshold: float
    mean: dict[str, float] = field(default_factory=dict)
    worst: dict[str, float] = field(default_factory=dict)
    records: int = 0

    @property
    def failing(self) -> list[str]:
        """Buckets below the threshold (NaN fails), worst first."""
        bad = [b for b, v in self.mean.items() if not v >= self.threshold]
        return sorted(bad, key=lambda b: self.mean[b] if self.mean[b] == self.mean[b] else -1.0)

    @property
    def passed(self) -> bool:
        return not self.failing

    @property
    def lowest(self) -> float:
        return min(self.mean.values()) if self.mean else float("nan")

    def describe(self) -> str:
        return ", ".join(f"{b} {v:.4f}" for b, v in self.mean.items())

    def to_record(self) -> dict[str, Any]:
        return {
            "metric": "cosine",
            "threshold": self.threshold,
            "records": self.records,
            "mean": {k: round(v, 6) for k, v in self.mean.items()},
            "worst": {k: round(v, 6) for k, v in self.worst.items()},
            "passed": self.passed,
        }


class GateInputs:
    """The gate split of one component's records, with the fp32 outputs computed once."""

    def __init__(self, data: CalibrationData, key: str, reference: Run) -> None:
        names = data.section.bucket_names()
        tags = [tag for _i, tag in data.records(key, "gate")]
        self.buckets = [names[tag[2]] if len(names) > 1 else "all" for tag in tags]
        self.feeds = list(data.feeds(key, "gate"))
        self.expected = [reference(f) for f in self.feeds]

    def measure(self, candidate: Run, threshold: float = DEFAULT_MIN_COSINE) -> GateResult:
        per: dict[str, list[float]] = {}
        for bucket, feeds, expected in zip(self.buckets, self.feeds, self.expected, strict=True):
            got = candidate(feeds)
            value = min(cosine(expected[k], got[k]) for k in expected)
            per.setdefault(bucket, []).append(value)
        result = GateResult(threshold=threshold, records=len(self.feeds))
        for bucket in sorted(per, key=lambda b: (len(b), b)):
            values = np.array(per[bucket])
            result.mean[bucket] = float(values.mean())
            result.worst[bucket] = float(values.min())
        return result


def onnx_run(path: str, threads: int = 0) -> Run:
    """Run an ONNX graph on ONNX Runtime's CPU provider (the fp32 reference of a gate)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run
