"""The registered op (gather reference on CPU) against the dense float64 reference."""

import pytest
import torch
from plugin_testing import TOLERANCE, qkv, rel_err

import difforge.plugins.ops  # noqa: F401  (registers torch.ops.difforge.*)
from difforge.errors import DifforgeError
from difforge.plugins.reference import dense_mask, local_attention_2d_dense

CASES = [
    # h, w, T, P, radius, window
    (7, 9, 0, 0, 1, "disc"),
    (7, 9, 5, 0, 2, "disc"),
    (13, 5, 0, 4, 3, "disc"),
    (4, 3, 2, 2, 8, "disc"),  # radius larger than the grid
    (7, 9, 3, 0, 1, "square"),
    (13, 5, 4, 3, 2, "square"),
    (5, 6, 0, 0, 7, "square"),  # window larger than the grid
    (1, 1, 1, 1, 1, "disc"),
]


@pytest.mark.parametrize(("h", "w", "t", "p", "r", "window"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_op_matches_dense(
    h: int, w: int, t: int, p: int, r: int, window: str, dtype: torch.dtype
) -> None:
    q, k, v = qkv(2, 2, h, w, t, p, 16, dtype)
    out = torch.ops.difforge.local_attention_2d(q, k, v, h, w, t, r, window, 0.0, p)
    ref = local_attention_2d_dense(q, k, v, h, w, t, r, window, 0.0, p)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, ref) <= TOLERANCE[dtype]


def test_explicit_scale_and_text_rows_dense() -> None:
    h, w, t, p = 5, 4, 3, 2
    q, k, v = qkv(1, 2, h, w, t, p, 8, torch.float64)
    out = torch.ops.difforge.local_attention_2d(q, k, v, h, w, t, 1, "disc", 0.3, p)
    # Text rows: plain softmax attention over every non-pooled key.
    n = t + h * w
    dense = torch.softmax(q[:, :, :t] @ k[:, :, :n].transpose(-1, -2) * 0.3, -1) @ v[:, :, :n]
    assert torch.allclose(out[:, :, :t].double(), dense, rtol=1e-5, atol=1e-6)
    ref = local_attention_2d_dense(q, k, v, h, w, t, 1, "disc", 0.3, p)
    assert rel_err(out, ref) <= 1e-5


def test_dense_reference_uses_the_mask() -> None:
    # With a full mask the dense reference is plain attention (sanity of the reference).
    h, w = 3, 3
    q, k, v = qkv(1, 1, h, w, 0, 0, 4, torch.float64)
    assert bool(dense_mask(h, w, 0, 3, "disc", 0).all())
    full = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
    assert torch.allclose(local_attention_2d_dense(q, k, v, h, w, 0, 3, "disc", 0.0, 0), full)


def test_op_traces_with_torch_export() -> None:
    class M(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.ops.difforge.local_attention_2d(q, k, v, 3, 4, 2, 2, "disc", 0.0, 0)

    q, k, v = qkv(1, 2, 3, 4, 2, 0, 8, torch.float32)
    program = torch.export.export(M(), (q, k, v))
    assert torch.allclose(program.module()(q, k, v), M()(q, k, v))


@pytest.mark.parametrize(
    "args",
    [
        (3, 4, 2, 2, "circle", 0.0, 0),  # unknown window
        (3, 4, 2, 0, "disc", 0.0, 0),  # radius 0
        (3, 5, 2, 2, "disc", 0.0, 0),  # H*W does not match q
        (3, 4, 2, 2, "disc", 0.0, 1),  # P does not match k
    ],
)
def test_bad_arguments_are_user_errors(args: tuple[object, ...]) -> None:
    q, k, v = qkv(1, 1, 3, 4, 2, 0, 8, torch.float32)
    with pytest.raises(DifforgeError):
        torch.ops.difforge.local_attention_2d(q, k, v, *args)
