"""Triton kernels on the CPU interpreter (TRITON_INTERPRET=1) against float64 references.

The interpreter is slow: every case is tiny, and the direct conv kernel only sees small K.
"""

import pytest
import torch
import torch.nn.functional as F
from plugin_testing import TOLERANCE, qkv, rel_err

from difforge.plugins.reference import local_attention_2d_dense

pytest.importorskip("triton")

from difforge.plugins.kernels.depthwise_conv import (
    DirectTiles,
    ToeplitzTiles,
    depthwise_conv2d_triton,
)
from difforge.plugins.kernels.local_attention import (
    AttentionTiles,
    local_attention_2d_triton,
)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
LIST = AttentionTiles(8, 8, 4, 8, schedule="list")

ATTENTION_CASES = [
    # h, w, T, P, radius, window, dtype, head dim, tiles
    (7, 9, 3, 0, 2, "disc", F32, 16, None),
    (13, 5, 0, 4, 3, "square", F32, 16, None),
    (4, 3, 2, 2, 8, "disc", F16, 16, None),  # radius larger than the grid
    (5, 6, 0, 0, 7, "square", BF16, 16, None),  # window larger than the grid
    (9, 9, 70, 3, 1, "disc", F32, 24, None),  # T over one block; head dim not a power of 2
    (11, 10, 5, 0, 3, "disc", BF16, 16, AttentionTiles(8, 16, 4, 16)),
    (10, 11, 0, 6, 2, "square", F16, 16, AttentionTiles(16, 8, 8, 8)),
    (17, 19, 2, 0, 12, "disc", F16, 16, None),  # interior blocks skip the mask (all visible)
    (13, 21, 3, 2, 5, "disc", F32, 16, AttentionTiles(8, 16, 8, 16, num_warps=8)),
    (9, 19, 0, 0, 4, "disc", BF16, 16, AttentionTiles(8, 16, 8, 8, num_warps=8)),
    # The block-list schedule: full (unmasked) and partial blocks, borders, text and pooled keys.
    # (Block counts, full / partial, with LIST's tiles: 10/106, 6/50, 24/80, 8/0, 0/20.)
    (19, 21, 3, 2, 10, "disc", F32, 16, LIST),
    (17, 13, 0, 0, 12, "disc", F16, 16, LIST),
    (20, 22, 5, 0, 7, "square", BF16, 16, LIST),
    (8, 16, 0, 3, 9, "square", F32, 24, LIST),  # window over the grid: all full; head dim 24
    (11, 14, 4, 0, 3, "square", F16, 16, LIST),  # partial blocks cut by the grid
    (13, 18, 2, 0, 5, "disc", F16, 16, AttentionTiles(8, 16, 8, 8, schedule="list")),
]


@pytest.mark.parametrize(
    ("h", "w", "t", "p", "r", "window", "dtype", "d", "tiles"), ATTENTION_CASES
)
def test_local_attention_kernel(
    h: int,
    w: int,
    t: int,
    p: int,
    r: int,
    window: str,
    dtype: torch.dtype,
    d: int,
    tiles: AttentionTiles | None,
) -> None:
    q, k, v = qkv(2, 2, h, w, t, p, d, dtype)
    out = local_attention_2d_triton(q, k, v, h, w, t, r, window, 0.0, p, tiles=tiles)
    ref = local_attention_2d_dense(q, k, v, h, w, t, r, window, 0.0, p)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, ref) <= TOLERANCE[dtype]


def test_list_schedule_falls_back_on_grids_beyond_its_extent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import difforge.plugins.kernels.key_blocks as kb
    import difforge.plugins.kernels.local_attention as la

    monkeypatch.setattr(la, "MAX_LIST_EXTENT", 8)
    built: list[object] = []
    monkeypatch.setattr(la, "key_block_lists", lambda *a: built.append(a) or kb.key_block_lists(*a))
    q, k, v = qkv(1, 2, 9, 7, 2, 0, 16, F32)
    out = local_attention_2d_triton(q, k, v, 9, 7, 2, 3, "disc", 0.0, 0, tiles=LIST)
    assert built == []  # a 9-row grid is past the (patched) extent: the nested schedule ran
    assert rel_err(out, local_attention_2d_dense(q, k, v, 9, 7, 2, 3, "disc", 0.0, 0)) <= 1e-5
    local_attention_2d_triton(q[..., :58, :], k[..., :58, :], v[..., :58, :], 8, 7, 2, 3, "disc",
                              0.0, 0, tiles=LIST)  # fmt: skip
    assert len(built) == 1


def test_local_attention_kernel_strided_inputs_and_scale() -> None:
    # q/k/v as views of [B, N, heads, d] (what a transpose of a projection gives).
    h, w, t, p = 6, 5, 4, 2
    base = torch.randn(3, 2, t + h * w + p, 2, 16).transpose(2, 3)  # [3, B, heads, N, d]
    q, k, v = base[0][:, :, : t + h * w], base[1], base[2]
    assert not q.is_contiguous()
    out = local_attention_2d_triton(q, k, v, h, w, t, 2, "disc", 0.7, p)
    ref = local_attention_2d_dense(q, k, v, h, w, t, 2, "disc", 0.7, p)
    assert rel_err(out, ref) <= 1e-5


CONV_CASES = [
    # C, H, W, K, stride, dilation, padding, bias, dtype, tiles
    (5, 7, 9, 3, 1, 1, 1, True, F32, None),
    (4, 13, 5, 5, 2, 2, 3, False, F16, None),
    (3, 12, 11, 13, 1, 1, 6, True, BF16, None),
    (3, 9, 10, 31, 1, 1, 15, True, F32, None),
    (2, 8, 8, 3, 2, 3, 0, True, F32, None),
    (2, 14, 13, 7, 1, 3, 9, True, F16, ToeplitzTiles(32, 32, 64)),
    (3, 20, 21, 31, 1, 3, 45, False, F16, None),  # band of 91 columns: BLOCK_IN = 128
    (4, 9, 8, 3, 2, 2, 2, True, F16, DirectTiles(4, 32)),
    (3, 7, 10, 5, 1, 3, 6, True, BF16, DirectTiles(4, 32)),
]


@pytest.mark.parametrize(
    ("c", "h", "w", "k", "stride", "dilation", "padding", "bias", "dtype", "tiles"), CONV_CASES
)
def test_depthwise_conv_kernel(
    c: int,
    h: int,
    w: int,
    k: int,
    stride: int,
    dilation: int,
    padding: int,
    bias: bool,
    dtype: torch.dtype,
    tiles: ToeplitzTiles | DirectTiles | None,
) -> None:
    x = torch.randn(2, c, h, w).to(dtype)
    weight = (torch.randn(c, 1, k, k) / k).to(dtype)
    b = torch.randn(c).to(dtype) if bias else None
    out = depthwise_conv2d_triton(x, weight, b, stride, dilation, padding, tiles=tiles)
    ref = F.conv2d(x.double(), weight.double(), None if b is None else b.double(), stride,
                   padding, dilation, groups=c)  # fmt: skip
    assert out.shape == ref.shape and out.dtype == dtype
    assert rel_err(out, ref) <= TOLERANCE[dtype]
