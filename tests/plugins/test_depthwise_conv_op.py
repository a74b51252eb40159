"""The registered depthwise op on CPU: the conv2d(groups=C) definition, and its checks."""

import pytest
import torch
import torch.nn.functional as F
from plugin_testing import rel_err

import difforge.plugins.ops  # noqa: F401  (registers torch.ops.difforge.*)
from difforge.errors import DifforgeError


@pytest.mark.parametrize(
    ("k", "stride", "dilation", "padding", "bias"),
    [(3, 1, 1, 1, True), (13, 1, 1, 6, True), (5, 2, 3, 2, False), (31, 1, 1, 15, True)],
)
def test_op_is_grouped_conv(k: int, stride: int, dilation: int, padding: int, bias: bool) -> None:
    x = torch.randn(2, 6, 17, 15)
    w = torch.randn(6, 1, k, k)
    b = torch.randn(6) if bias else None
    out = torch.ops.difforge.depthwise_conv2d(x, w, b, stride, dilation, padding)
    ref = F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride, padding,
                   dilation, groups=6)  # fmt: skip
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize(
    ("w_shape", "stride", "dilation"),
    [((6, 1, 4, 4), 1, 1), ((6, 1, 33, 33), 1, 1), ((5, 1, 3, 3), 1, 1), ((6, 1, 3, 3), 3, 1),
     ((6, 1, 3, 3), 1, 0)],
)  # fmt: skip
def test_bad_arguments_are_user_errors(
    w_shape: tuple[int, int, int, int], stride: int, dilation: int
) -> None:
    with pytest.raises(DifforgeError):
        torch.ops.difforge.depthwise_conv2d(
            torch.randn(1, 6, 8, 8), torch.randn(w_shape), None, stride, dilation, 1
        )
