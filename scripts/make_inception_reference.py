"""Reference tensors for InceptionNeXt's token mixer, produced by timm itself.

timm needs torchvision, which does not import beside difforge's CPU torch, so this runs once
in a separate environment and its (small) output is committed:

    python3 -m venv /tmp/tv
    /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm safetensors
    /tmp/tv/bin/python scripts/make_inception_reference.py \
        tests/convpatches/data/inceptionnext_timm.safetensors

tests/convpatches/test_inceptionnext_timm.py loads the weights into difforge's
``InceptionDWConv2d`` and checks it reproduces timm's output (split/concat order included).
"""

from __future__ import annotations

import json
import sys

import timm
import torch
from safetensors.torch import save_file
from timm.models.inception_next import InceptionDWConv2d

# (channels, square kernel, band kernel, branch ratio): the default and InceptionNeXt-atto's.
CASES = [(16, 3, 11, 0.125), (24, 3, 9, 0.25)]


def main(out: str) -> None:
    torch.manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for i, (channels, square, band, ratio) in enumerate(CASES):
        mixer = InceptionDWConv2d(channels, square_kernel_size=square,
                                  band_kernel_size=band, branch_ratio=ratio).eval()
        with torch.no_grad():
            for param in mixer.parameters():
                param.normal_()
            x = torch.randn(2, channels, 13, 10)
            y = mixer(x)
        for key, value in mixer.state_dict().items():
            tensors[f"case{i}.{key}"] = value.contiguous()
        tensors[f"case{i}.input"] = x
        tensors[f"case{i}.output"] = y
    meta = {"timm": timm.__version__, "torch": torch.__version__, "cases": json.dumps(CASES)}
    save_file(tensors, out, metadata=meta)
    print(f"wrote {out}: {len(CASES)} cases, timm {timm.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
