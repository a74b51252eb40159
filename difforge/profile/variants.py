"""Measure ONNX Runtime session variants of an artifact's denoiser, alternating call by call.

A prototyping aid for build changes (session options, optimisation level, threads): the
builder records session settings in the manifest; this tries others on the same graph
without rebuilding, and checks each variant's output against the recorded settings'.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from difforge.artifact.manifest import read_manifest
from difforge.profile.stats import summarize

#: name -> (SessionOptions attributes, session config entries)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "as built": ({}, {}),
    "no spinning": ({}, {"session.intra_op.allow_spinning": "0"}),
    "extended (no NCHWc layout)": ({"graph_optimization_level": "ORT_ENABLE_EXTENDED"}, {}),
    "1 thread": ({"intra_op_num_threads": 1}, {}),
}


def _session(path: Path, threads: int, attrs: dict[str, Any], entries: dict[str, str]) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    for key, value in attrs.items():
        if key == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, value)
        setattr(opts, key, value)
    for key, text in entries.items():
        opts.add_session_config_entry(key, text)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare_variants(
    artifact: Path, latent: int, batch: int = 2, runs: int = 7, threads: int = 2
) -> dict[str, dict[str, Any]]:
    """p50/p10/p90 seconds and max |Δ| against "as built" for each of :data:`VARIANTS`."""
    from difforge.artifact.feeds import sample_feeds

    manifest = read_manifest(artifact, verify=False)
    entry = manifest.components["denoiser"]
    path = artifact / entry.file
    feeds = sample_feeds(entry, sizes={"batch": batch, "height": latent, "width": latent})
    sessions = {name: _session(path, threads, *spec) for name, spec in VARIANTS.items()}
    ref = sessions["as built"].run(None, feeds)[0]
    outputs = {name: s.run(None, feeds)[0] for name, s in sessions.items()}
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            time.sleep(0.02)
            t0 = time.perf_counter()
            sessions[name].run(None, feeds)
            samples[name].append(time.perf_counter() - t0)
    return {
        name: {
            **summarize(samples[name]),
            "max_abs_diff": float(np.max(np.abs(outputs[name] - ref))),
        }
        for name in names
    }
