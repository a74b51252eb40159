"""The precision gate of an already built denoiser, measured after the fact: its output against
the fp32 export's on the held-out trajectories a calibrated folder recorded, as mean cosine per
timestep bucket (what ``build`` measures before it ships a lowered graph).

Usage: python scripts/gate_check.py BUILT CALIBRATED [--component denoiser]

For builds made with ``--no-gate`` (a real-size bench, where the sensitivity search costs
minutes per layer group): it says whether the build would have passed, and by how much.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from difforge.artifact.calibration import CalibrationData
from difforge.artifact.manifest import read_manifest
from difforge.calib.gates import DEFAULT_MIN_COSINE, GateInputs, onnx_run
from difforge.runtime import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("built", type=Path)
    parser.add_argument("calibrated", type=Path)
    parser.add_argument("--component", default="denoiser")
    parser.add_argument("--min-cosine", type=float, default=DEFAULT_MIN_COSINE)
    args = parser.parse_args()
    manifest = read_manifest(args.calibrated)
    data = CalibrationData(args.calibrated, manifest.calibration)
    fp32 = args.calibrated / manifest.components[args.component].file
    runner = load(args.built, lazy=True).runners[args.component]
    gate = GateInputs(data, args.component, onnx_run(str(fp32)))
    result = gate.measure(runner.infer, args.min_cosine)
    verdict = "passes" if result.passed else "misses"
    print(f"{args.built.name}: {verdict} the gate (>= {args.min_cosine}): {result.describe()}")


if __name__ == "__main__":
    main()
