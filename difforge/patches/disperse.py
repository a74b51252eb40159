"""ScaleCrafter's convolution dispersion (``disperse/kernel_disperse.m``, ``inflate_kernels``).

R (large^2 x small^2) maps a small kernel to a larger one so that
- structure term: conv_large(bilinear_up(x)) ~= bilinear_up(conv_small(x)), and
- pixel term (weight eta): conv_large(x) ~= conv_small(x),
in least squares over every input x. The authors solve it symbolically in MATLAB on a
3 x 3 input (``inputSize``); the same linear algebra here in float64 reproduces the shipped
``R20to1_new.mat`` (eta = 0.05 = 1/20) to ~5e-15. Their bilinear upsampling is
align-corners style (output s(n-1)+1), their convs are zero-padded correlations, every kernel
and feature is vectorised row-major (``reshape(transpose(K))``), so
``W_large.flatten() = R @ W_small.flatten()`` per (out, in) pair, as their
``einsum("mn, ion -> iom", R, W.view(o, i, -1))`` does (the names i/o are swapped in their
code, the layout is PyTorch's (out, in, kh, kw)).

Authors' quirks kept: the shipped R's columns do not sum to 1 (corners 1.127, edges 1.061,
centre 1) and R maps the small centre only to the large centre (R[12, 4] = 1). Their
``inflate_kernels`` keeps the 3x3 conv's padding (1) on the 5x5 conv; difforge instead pads
``2 * dilation`` as their pipeline does whenever the inflated conv runs re-dilated (the only
way it is used), since an inflated conv alone would shrink the feature by 2 pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from difforge.errors import DifforgeError

__all__ = ["dispersion_transform", "inflate_weight", "load_transform"]


def _upsample_matrix(n: int, scale: int) -> np.ndarray:
    """Align-corners bilinear upsampling of an n x n grid to s(n-1)+1, as a matrix."""
    size = scale * (n - 1) + 1
    mat = np.zeros((size * size, n * n))
    for i in range(size):
        for j in range(size):
            r, c = i / scale, j / scale
            r1, c1 = int(np.floor(r)), int(np.floor(c))
            r2, c2 = int(np.ceil(r)), int(np.ceil(c))
            a, b = r - r1, c - c1
            for rr, cc, w in (
                (r1, c1, (1 - a) * (1 - b)),
                (r1, c2, (1 - a) * b),
                (r2, c1, a * (1 - b)),
                (r2, c2, a * b),
            ):
                mat[i * size + j, rr * n + cc] += w
    return mat


def _conv_tensor(n: int, k: int) -> np.ndarray:
    """T[out_pixel, kernel_entry, in_pixel] of a same-padded k x k correlation on n x n."""
    pad = (k - 1) // 2
    tensor = np.zeros((n * n, k * k, n * n))
    for m in range(n):
        for q in range(n):
            for a in range(k):
                for b in range(k):
                    r, c = m + a - pad, q + b - pad
                    if 0 <= r < n and 0 <= c < n:
                        tensor[m * n + q, a * k + b, r * n + c] = 1.0
    return tensor


def _drop_zero_rows(lhs: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The authors keep only equations that are not identically zero (``equations ~= 0``).
    keep = (np.abs(lhs).sum(1) + np.abs(rhs).sum(1)) > 0
    return lhs[keep], rhs[keep]


def dispersion_transform(
    small: int = 3, large: int = 5, input_size: int = 3, scale: int = 2, eta: float = 0.05
) -> np.ndarray:
    """R of shape (large^2, small^2), float64 (``kernel_disperse(small, large, input, s, eta)``).

    Each equation is the coefficient of one input pixel x_j in one output pixel's error; it
    is linear in the large kernel b (LHS) and the small kernel a (RHS), and
    R = (A^T A)^-1 A^T B with A = [struct_b; eta pixel_b], B = [struct_a; eta pixel_a].
    """
    if small % 2 == 0 or large % 2 == 0 or large <= small:
        raise DifforgeError(
            f"dispersion: kernels must be odd with large > small ({small}, {large})"
        )
    up = _upsample_matrix(input_size, scale)
    grid = scale * (input_size - 1) + 1
    t_large_up = _conv_tensor(grid, large)
    t_small = _conv_tensor(input_size, small)
    t_large = _conv_tensor(input_size, large)
    struct_b = np.einsum("kmq,qj->jkm", t_large_up, up).reshape(-1, large * large)
    struct_a = np.einsum("kq,qnj->jkn", up, t_small).reshape(-1, small * small)
    pixel_b = np.einsum("kmj->jkm", t_large).reshape(-1, large * large)
    pixel_a = np.einsum("knj->jkn", t_small).reshape(-1, small * small)
    struct_b, struct_a = _drop_zero_rows(struct_b, struct_a)
    pixel_b, pixel_a = _drop_zero_rows(pixel_b, pixel_a)
    lhs = np.vstack([struct_b, eta * pixel_b])
    rhs = np.vstack([struct_a, eta * pixel_a])
    return np.linalg.solve(lhs.T @ lhs, lhs.T @ rhs)


def load_transform(path: Path | str) -> np.ndarray:
    """R from a MATLAB file in the authors' format (key ``R``)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError) as exc:
        raise DifforgeError(f"cannot read dispersion transform {str(path)!r}: {exc}") from None
    if "R" not in mat:
        raise DifforgeError(f"dispersion transform {str(path)!r} has no key 'R'")
    return np.asarray(mat["R"], dtype=np.float64)


def inflate_weight(weight: torch.Tensor, transform: np.ndarray | torch.Tensor) -> torch.Tensor:
    """W_large[o, i] = R @ vec(W_small[o, i]) (row-major), for a (O, I, k, k) weight."""
    r = torch.as_tensor(transform, dtype=weight.dtype, device=weight.device)
    small = round(r.shape[1] ** 0.5)
    large = round(r.shape[0] ** 0.5)
    o, i, kh, kw = weight.shape
    if kh != small or kw != small:
        raise DifforgeError(f"dispersion: a {small}x{small} transform cannot inflate {kh}x{kw}")
    out = torch.einsum("mn,ion->iom", r, weight.reshape(o, i, -1))
    return out.reshape(o, i, large, large)
