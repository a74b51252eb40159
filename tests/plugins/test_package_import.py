"""``import difforge.plugins`` must stay light: the GPU box and the runtime import it."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_package_import_loads_no_heavy_modules() -> None:
    # Only what difforge.plugins itself adds counts (the root package is not ours to judge).
    code = (
        "import sys, difforge; before = set(sys.modules);"
        "import difforge.plugins as p;"
        "new = set(sys.modules) - before;"
        "heavy = [m for m in ('torch', 'triton', 'onnx', 'onnxscript') if m in new];"
        "assert not heavy, heavy;"
        "assert callable(p.load_ops)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_ops_import_loads_no_onnx() -> None:
    # The GPU check imports the ops and kernels on a machine without onnx installed.
    code = (
        "import sys, difforge; before = set(sys.modules);"
        "import difforge.plugins as p; p.load_ops();"
        "import difforge.plugins.kernels.local_attention, difforge.plugins.kernels.depthwise_conv;"
        "import torch; assert hasattr(torch.ops.difforge, 'local_attention_2d');"
        "new = set(sys.modules) - before;"
        "heavy = [m for m in ('onnx', 'onnxscript', 'onnxruntime') if m in new];"
        "assert not heavy, heavy"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)
