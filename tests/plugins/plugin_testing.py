"""Helpers shared by the plugin tests (a uniquely named module, not conftest)."""

import torch

# fp32 within 1e-5 of the float64 reference; half types within 3e-3 (norm sense).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 3e-3}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative error in the norm sense, computed in float64."""
    ref = ref.double()
    return float((out.double() - ref).norm() / ref.norm().clamp_min(1e-300))


def qkv(
    b: int, heads: int, h: int, w: int, t: int, p: int, d: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q [B, heads, T+HW, d] and k, v [B, heads, T+HW+P, d]."""
    n = t + h * w
    q = torch.randn(b, heads, n, d).to(dtype)
    k = torch.randn(b, heads, n + p, d).to(dtype)
    v = torch.randn(b, heads, n + p, d).to(dtype)
    return q, k, v
