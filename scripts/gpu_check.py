#!/usr/bin/env python3
"""GPU check of difforge's Triton kernels: correctness and speed against PyTorch baselines.

Needs a CUDA GPU with torch + triton (no network, no onnx). From the repo root::

    python scripts/gpu_check.py                    # full run, < 5 min on an H100
    python scripts/gpu_check.py --quick            # one size per op (smoke run)
    python scripts/gpu_check.py --no-flex          # all sizes, without flex_attention's compiles
    python scripts/gpu_check.py --out result.json  # JSON path (default gpu_check.json)

Local attention (24 heads x 64, batch 1, CLEAR disc window) is checked against the
gather reference (fp32 math) and timed against SDPA with a dense boolean mask,
``flex_attention`` (compiled, ``create_block_mask`` with the same predicate) and the
card's floor: max(FLOPs / peak matmul FLOP/s, bytes / peak copy bandwidth), with FLOPs
counted over visible (q, k) pairs only, and against dense flash SDPA over the same number of
pairs (what the card's best dense kernel takes for that work). Every autotuning candidate's
time is kept, and printed for the headline cases. The depthwise conv is checked and timed against
``conv2d(groups=C)`` (cuDNN). First, the registered torch ops (what the patched modules
call) are checked to run the Triton kernels on CUDA rather than their PyTorch fallbacks.
Prints one table and the goals; exits 1 when a kernel is wrong, a case crashed or an op
does not reach its kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = time.monotonic()
FLEX_PREP_BUDGET_S = 150.0  # no new flex_attention compiles after this (all done up front)
BASELINE_BUDGET_S = 200.0  # no new dense SDPA baselines after this
CASE_BUDGET_S = 260.0  # no new cases after this: the whole run must stay under 5 minutes
SDPA_MAX_BYTES = 20e9
TOLERANCE = 3e-3  # relative (norm sense) for fp16/bf16 against fp32 math


def elapsed() -> float:
    return time.monotonic() - START


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="JSON output path")
    parser.add_argument("--quick", action="store_true", help="one size per op")
    parser.add_argument(
        "--no-flex",
        action="store_true",
        help="skip flex_attention (its compiles take minutes; times ours, SDPA and dense flash)",
    )
    parser.add_argument(
        "--engines",
        type=Path,
        default=None,
        metavar="DIR",
        help="also check ONNX Runtime's CUDA provider and TensorRT against the CPU artifact, "
        "building artifacts in DIR (scripts/gpu_engines.py)",
    )
    # Runs the same logic on CPU under TRITON_INTERPRET=1 at toy sizes (CI proof only).
    parser.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


class Checker:
    """Holds the device, timer and baselines; each case returns one result row."""

    def __init__(self, smoke: bool) -> None:
        import torch

        self.torch = torch
        self.smoke = smoke
        self.device = torch.device("cpu" if smoke else "cuda")
        self.heads, self.head_dim = (2, 16) if smoke else (24, 64)
        self.flex: Any = None
        self.flex_error = ""
        # (size, T, radius, dtype) -> (block mask, compile + warm-up seconds) or an error.
        self.flex_ready: dict[tuple[Any, ...], tuple[Any, float] | str] = {}
        self.peaks: dict[str, float] = {}

    # -- timing ---------------------------------------------------------------------------
    def bench(self, fn: Callable[[], Any]) -> float:
        """Milliseconds per call (do_bench on CUDA; one timed call in the CPU smoke run)."""
        if self.smoke:
            fn()
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100))

    def measure_peaks(self) -> None:
        torch = self.torch
        n = 256 if self.smoke else 8192
        for dtype in (torch.float16, torch.bfloat16):
            a = torch.randn(n, n, device=self.device, dtype=dtype)
            b = torch.randn(n, n, device=self.device, dtype=dtype)
            ms = self.bench(lambda a=a, b=b: a @ b)
            self.peaks[f"matmul_flops_{_short(dtype)}"] = 2 * n**3 / (ms * 1e-3)
            del a, b
        size = (1 << 22) if self.smoke else (1 << 30)  # bytes per buffer
        src = torch.empty(size // 2, device=self.device, dtype=torch.float16)
        dst = torch.empty_like(src)
        ms = self.bench(lambda: dst.copy_(src))
        self.peaks["copy_bytes_per_s"] = 2 * size / (ms * 1e-3)  # read + write

    def floor_ms(self, flops: float, nbytes: float, dtype: Any) -> float:
        peak = self.peaks[f"matmul_flops_{_short(dtype)}"]
        return max(flops / peak, nbytes / self.peaks["copy_bytes_per_s"]) * 1e3

    # -- local attention --------------------------------------------------------------------
    def attention_case(
        self, size: int, t: int, radius: int, dtype: Any, sdpa: bool, flex: bool
    ) -> dict[str, Any]:
        torch = self.torch
        from difforge.plugins.kernels import local_attention as la
        from difforge.plugins.neighbourhood import count_visible_pairs
        from difforge.plugins.ops import local_attention_2d_gather
        from difforge.plugins.reference import dense_mask

        h = w = size
        heads, d = self.heads, self.head_dim
        n = t + h * w
        row: dict[str, Any] = {
            "op": "local_attention_2d",
            "case": f"{h}x{w} T={t} r={radius}",
            "dtype": _short(dtype),
        }
        q, k, v = (torch.randn(1, heads, n, d, device=self.device, dtype=dtype) for _ in range(3))
        args = (h, w, t, radius, "disc", 0.0, 0)

        key = la.tuning_key(q, k, h, w, radius, "disc", 0.0)
        forced = None
        if self.smoke:  # the launcher tunes on CUDA only: tune two candidates here instead
            from difforge.plugins.kernels import pick_fastest

            def launch(t: Any) -> None:
                la.local_attention_2d_triton(q, k, v, *args, tiles=t)

            first_list = next(t for t in la.TILE_CANDIDATES if t.schedule == "list")
            candidates = (la.TILE_CANDIDATES[0], first_list)
            la.TUNED[key], la.TIMINGS[key] = pick_fastest(candidates, launch, self.bench)
            forced = la.TUNED[key]

        def ours() -> Any:
            return la.local_attention_2d_triton(q, k, v, *args, tiles=forced)

        out = ours()  # autotunes on first call (CUDA)
        if key in la.TUNED:
            tiles = la.TUNED[key]
            row["tiles"] = _tiles_str(tiles)
            row["candidates"] = {_tiles_str(t): round(ms, 4) for t, ms in la.TIMINGS[key].items()}
            row["waste"] = _waste(tiles, h, w, radius)
        # Reference on a head subset at the largest sizes (it is slow, not the kernel).
        sub = slice(0, heads if h * w <= 128 * 128 else 4)
        ref = local_attention_2d_gather(
            q[:, sub].float(), k[:, sub].float(), v[:, sub].float(), *args
        )
        _errors(row, out[:, sub], ref)
        row["ms"] = self.bench(ours)
        pairs = count_visible_pairs(h, w, t, radius, "disc", 0) * heads
        flops = 4.0 * d * pairs  # QK^T and PV, 2 FLOPs per multiply-add
        nbytes = 4.0 * n * d * heads * q.element_size()  # read q, k, v; write out
        row["floor_ms"] = self.floor_ms(flops, nbytes, dtype)
        row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
        row.update(self._flash_equivalent(n, pairs / heads, dtype))
        if sdpa:
            mask_bytes = n * n * (1 + q.element_size())  # bool mask + its additive form
            if mask_bytes > SDPA_MAX_BYTES:
                row["sdpa"] = "skipped (>20 GB)"
            elif elapsed() > BASELINE_BUDGET_S:
                row["sdpa"] = "skipped (time)"
            else:
                row.update(self._sdpa(q, k, v, dense_mask(*args[:4], "disc", 0, self.device), out))
                self._empty_cache()  # the N x N mask is gone now
        if flex:
            row.update(self._flex(q, k, v, (size, t, radius, dtype), out))
            sdpa_ms, flex_ms = row.get("sdpa_ms"), row.get("flex_ms")
            slow = flex_ms is not None and sdpa_ms is not None and flex_ms >= 0.5 * sdpa_ms
            if slow and not self.smoke:
                row["flex_note"] = "flex not well below dense SDPA: block sparsity not used?"
        return row

    def _flash_equivalent(self, queries: int, pairs: float, dtype: Any) -> dict[str, Any]:
        """Dense SDPA (flash) over as many (q, k) pairs as the case sees, without any mask.

        What the card's best dense attention kernel takes for the same work: each of the
        case's queries attends to the case's mean number of visible keys.
        """
        torch = self.torch
        import torch.nn.functional as F

        keys = max(1, round(pairs / queries))
        shape = (1, self.heads, queries, self.head_dim)
        q = torch.randn(shape, device=self.device, dtype=dtype)
        k, v = (torch.randn(1, self.heads, keys, self.head_dim, device=self.device, dtype=dtype)
                for _ in range(2))  # fmt: skip
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backend = SDPBackend.MATH if self.smoke else SDPBackend.FLASH_ATTENTION
            with sdpa_kernel(backend):
                ms = self.bench(lambda: F.scaled_dot_product_attention(q, k, v))
            return {"flash_equiv_ms": ms, "flash_equiv_keys": keys}
        except Exception as exc:  # no flash backend for this dtype or card: report, go on
            return {"flash_equiv": f"error: {type(exc).__name__}: {exc}"[:200]}

    def _sdpa(self, q: Any, k: Any, v: Any, mask: Any, out: Any) -> dict[str, Any]:
        import torch.nn.functional as F

        try:

            def run() -> Any:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

            dense = run()
            result = {
                "sdpa_ms": self.bench(run),
                "max_err_vs_sdpa": float((out.float() - dense.float()).abs().max()),
            }
        except Exception as exc:  # an unsupported backend must not end the run
            result = {"sdpa": f"error: {type(exc).__name__}: {exc}"[:200]}
        return result

    def prepare_flex(self, cases: list[tuple[str, dict[str, Any]]]) -> None:
        """Compile flex_attention and its block masks before any case is timed.

        One static compile per (grid, T, radius, dtype), in plan order (headline first), until
        :data:`FLEX_PREP_BUDGET_S`; the cases then only time the warm kernels. The mask uses
        Python ints, so the grid width divides as a constant (shifts) inside the kernel.
        """
        torch = self.torch
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        except Exception as exc:  # flex may be unavailable (old torch): report, go on
            self.flex_error = f"error: {type(exc).__name__}: {exc}"[:200]
            return
        if self.flex is None:
            if self.smoke:
                self.flex = flex_attention
            else:
                dynamo = torch._dynamo.config
                for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                             "accumulated_recompile_limit"):  # fmt: skip
                    if hasattr(dynamo, name):  # each case is one more static compile
                        setattr(dynamo, name, max(getattr(dynamo, name), 64))
                self.flex = torch.compile(flex_attention, dynamic=False)
        for kind, kw in cases:
            if kind != "attention" or not kw["flex"]:
                continue
            key = (kw["size"], kw["t"], kw["radius"], kw["dtype"])
            if key in self.flex_ready:
                continue
            if elapsed() > FLEX_PREP_BUDGET_S:
                break
            t0 = time.monotonic()
            try:
                size, t, r2 = kw["size"], kw["t"], kw["radius"] ** 2
                n = t + size * size

                def mask_mod(
                    b: Any, hh: Any, q_idx: Any, kv_idx: Any, t: int = t, w: int = size,
                    r2: int = r2,
                ) -> Any:  # fmt: skip
                    qi, ki = q_idx - t, kv_idx - t
                    dy = qi // w - ki // w
                    dx = qi % w - ki % w
                    return (q_idx < t) | (kv_idx < t) | (dy * dy + dx * dx < r2)

                block_mask = create_block_mask(
                    mask_mod, None, None, n, n, device=self.device, _compile=not self.smoke
                )
                q, k, v = (
                    torch.randn(1, self.heads, n, self.head_dim, device=self.device,
                                dtype=kw["dtype"])
                    for _ in range(3)
                )  # fmt: skip
                for _ in range(2):  # compile, then one warm call
                    self.flex(q, k, v, block_mask=block_mask)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                self.flex_ready[key] = (block_mask, time.monotonic() - t0)
                del q, k, v
            except Exception as exc:  # report per case, go on
                self.flex_ready[key] = f"error: {type(exc).__name__}: {exc}"[:200]
            print(f"[{elapsed():6.1f}s] flex_attention prepared for {key}: "
                  f"{time.monotonic() - t0:.1f} s", flush=True)  # fmt: skip

    def _flex(self, q: Any, k: Any, v: Any, key: tuple[Any, ...], out: Any) -> dict[str, Any]:
        if self.flex_error:
            return {"flex": self.flex_error}
        ready = self.flex_ready.get(key)
        if ready is None:
            return {"flex": "skipped (not compiled in time)"}
        if isinstance(ready, str):
            return {"flex": ready}
        block_mask, compile_s = ready
        try:

            def run() -> Any:
                return self.flex(q, k, v, block_mask=block_mask)

            got = run()
            result: dict[str, Any] = {
                "flex_ms": self.bench(run),
                "max_err_vs_flex": float((out.float() - got.float()).abs().max()),
                "flex_compile_s": round(compile_s, 1),
            }
            # Percentage of (q, k) blocks skipped: shows that the block mask is sparse.
            with contextlib.suppress(Exception):
                result["flex_block_sparsity"] = round(float(block_mask.sparsity()), 1)
            return result
        except Exception as exc:
            return {"flex": f"error: {type(exc).__name__}: {exc}"[:200]}

    # -- depthwise conv --------------------------------------------------------------------
    def conv_case(
        self, channels: int, size: int, kernel: int, dilation: int, stride: int, dtype: Any
    ) -> dict[str, Any]:
        torch = self.torch
        import torch.nn.functional as F

        from difforge.plugins.kernels.depthwise_conv import TUNED, depthwise_conv2d_triton

        pad = dilation * (kernel - 1) // 2
        row: dict[str, Any] = {
            "op": "depthwise_conv2d",
            "case": f"C={channels} {size}x{size} K={kernel} d={dilation} s={stride}",
            "dtype": _short(dtype),
        }
        x = torch.randn(1, channels, size, size, device=self.device, dtype=dtype)
        weight = (torch.randn(channels, 1, kernel, kernel, device=self.device) / kernel).to(dtype)
        bias = torch.randn(channels, device=self.device, dtype=dtype)

        def ours() -> Any:
            return depthwise_conv2d_triton(x, weight, bias, stride, dilation, pad)

        def cudnn() -> Any:
            return F.conv2d(x, weight, bias, stride, pad, dilation, groups=channels)

        out = ours()
        if TUNED:
            row["tiles"] = _tiles_str(list(TUNED.values())[-1])
        ref = F.conv2d(x.float(), weight.float(), bias.float(), stride, pad, dilation,
                       groups=channels)  # fmt: skip
        _errors(row, out, ref)
        row["ms"] = self.bench(ours)
        row["cudnn_ms"] = self.bench(cudnn)
        flops = 2.0 * kernel * kernel * out.numel()
        nbytes = float(x.numel() + out.numel()) * x.element_size()
        row["floor_ms"] = self.floor_ms(flops, nbytes, dtype)
        return row

    # -- wiring ------------------------------------------------------------------------------
    def wiring_rows(self) -> list[dict[str, Any]]:
        """The registered ops (what patched modules call) run the Triton kernels on CUDA.

        The ops' PyTorch fallbacks are wrapped while the ops run: on CUDA, reaching one fails
        the row, and the op's output must equal the kernel's bit for bit; in the CPU smoke
        run the fallback is the expected path and must agree with the kernel to tolerance.
        """
        torch = self.torch
        import difforge.plugins.ops.depthwise_conv as conv_op
        import difforge.plugins.ops.local_attention as attention_op
        from difforge.plugins.kernels.depthwise_conv import depthwise_conv2d_triton
        from difforge.plugins.kernels.local_attention import local_attention_2d_triton
        from difforge.plugins.modules import DepthwiseConv2d

        reached: list[str] = []

        @contextlib.contextmanager
        def watched(module: Any, name: str) -> Any:
            original = getattr(module, name)

            def fallback(*args: Any) -> Any:
                reached.append(name)
                return original(*args)

            setattr(module, name, fallback)
            try:
                yield
            finally:
                setattr(module, name, original)

        on_gpu = self.device.type == "cuda"
        dtype = torch.float16
        h = w = 12
        t, d = 4, self.head_dim
        q, k, v = (torch.randn(1, 2, t + h * w, d, device=self.device, dtype=dtype)
                   for _ in range(3))  # fmt: skip
        args = (h, w, t, 3, "disc", 0.0, 0)
        conv = DepthwiseConv2d(torch.randn(8, 1, 13, 13) / 13, torch.randn(8))
        conv = conv.to(self.device, dtype)
        x = torch.randn(1, 8, 20, 20, device=self.device, dtype=dtype)
        cases = [
            ("torch.ops.difforge.local_attention_2d", attention_op, "_cpu_local_attention",
             lambda: torch.ops.difforge.local_attention_2d(q, k, v, *args),
             lambda: local_attention_2d_triton(q, k, v, *args)),
            ("plugins.modules.DepthwiseConv2d", conv_op, "depthwise_conv2d_reference",
             lambda: conv(x),
             lambda: depthwise_conv2d_triton(x, conv.weight, conv.bias, 1, 1, 6)),
        ]  # fmt: skip
        rows = []
        for name, module, fallback, through_op, kernel in cases:
            reached.clear()
            with torch.no_grad():
                with watched(module, fallback):
                    got = through_op()
                want = kernel()
            path = "fallback" if reached else "kernel"
            row: dict[str, Any] = {"op": "wiring", "case": name, "dtype": "fp16", "path": path}
            _errors(row, got, want.float())
            row["ok"] = bool(
                path == ("kernel" if on_gpu else "fallback")
                and (torch.equal(got, want) if on_gpu else row["ok"])
            )
            rows.append(row)
        return rows

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()


def _short(dtype: Any) -> str:
    names = {"torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float32": "fp32"}
    return names.get(str(dtype), str(dtype))


def _tiles_str(tiles: Any) -> str:
    fields = getattr(tiles, "__dataclass_fields__", {})
    return type(tiles).__name__ + "(" + ",".join(str(getattr(tiles, f)) for f in fields) + ")"


def _waste(tiles: Any, h: int, w: int, radius: int) -> float | None:
    """Computed / visible image (q, k) pairs of the list schedule (None: nested schedule)."""
    if getattr(tiles, "schedule", "") != "list":
        return None
    from difforge.plugins.kernels.key_blocks import key_block_lists
    from difforge.plugins.neighbourhood import count_visible_pairs

    lists = key_block_lists(h, w, radius, "disc", (tiles.qy, tiles.qx), (tiles.ky, tiles.kx))
    computed = lists.blocks_visited() * tiles.qy * tiles.qx * tiles.ky * tiles.kx
    return round(computed / count_visible_pairs(h, w, 0, radius, "disc", 0), 3)


def _errors(row: dict[str, Any], out: Any, ref: Any) -> None:
    diff = out.float() - ref.float()
    row["max_err"] = float(diff.abs().max())
    row["rel_err"] = float(diff.norm() / ref.float().norm().clamp_min(1e-30))
    row["ok"] = bool(math.isfinite(row["rel_err"]) and row["rel_err"] <= TOLERANCE)


def plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The cases, in run order: (kind, keyword arguments)."""
    import torch

    fp16, bf16 = torch.float16, torch.bfloat16
    cases: list[tuple[str, dict[str, Any]]] = []

    def attn(size: int, t: int, r: int, dtype: Any, sdpa: bool, flex: bool) -> None:
        flex = flex and not args.no_flex
        cases.append(("attention", dict(size=size, t=t, radius=r, dtype=dtype, sdpa=sdpa,
                                        flex=flex)))  # fmt: skip

    def conv(c: int, size: int, k: int, dil: int, stride: int, dtype: Any) -> None:
        cases.append(("conv", dict(channels=c, size=size, kernel=k, dilation=dil, stride=stride,
                                   dtype=dtype)))  # fmt: skip

    if args.cpu_smoke:
        attn(8, 0, 2, fp16, True, False)
        attn(8, 8, 2, bf16, True, True)
        conv(4, 8, 13, 1, 1, fp16)
        conv(4, 9, 3, 2, 2, bf16)
        return cases
    if args.quick:
        for dtype in (fp16, bf16):
            attn(128, 0, 16, dtype, True, dtype == bf16)
            conv(1536, 64, 13, 1, 1, dtype)
        return cases
    # Headline first (128^2, r=16), so that a time-out still leaves the goals measured.
    for dtype in (fp16, bf16):
        for t in (0, 512):
            attn(128, t, 16, dtype, True, dtype == bf16)
    for dtype in (fp16, bf16):
        conv(1536, 64, 13, 1, 1, dtype)
        conv(1536, 128, 13, 1, 1, dtype)
    for size in (64, 128, 256):
        for t in (0, 512):
            for r in (8, 16, 32):
                for dtype in (fp16, bf16):
                    if size == 128 and r == 16:
                        continue  # done above
                    # Dense SDPA's cost does not depend on r: at 256^2 time it once.
                    sdpa = size < 256 or r == 16
                    flex = dtype == bf16 and (size == 128 or (r == 16 and t == 0))
                    attn(size, t, r, dtype, sdpa, flex)
    for dtype in (fp16, bf16):
        for size in (64, 128):
            conv(1536, size, 3, 2, 1, dtype)
            conv(1536, size, 31, 1, 1, dtype)
        conv(1536, 128, 13, 1, 2, dtype)
    return cases


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of issue 7, judged on the rows measured."""
    found: list[dict[str, Any]] = []

    def add(name: str, measured: Any, passed: bool | None) -> None:
        verdict = "N/A" if passed is None else ("PASS" if passed else "FAIL")
        found.append({"goal": name, "measured": measured, "result": verdict})

    for row in rows:
        if row.get("op") == "local_attention_2d" and "128x128" in row["case"] and " r=16" in row[
            "case"
        ] and "ms" in row:  # fmt: skip
            tag = f"{row['case']} {row['dtype']}"
            sdpa = row.get("sdpa_ms")
            add(f"attn {tag}: >= 3x faster than dense SDPA",
                None if sdpa is None else round(sdpa / row["ms"], 2),
                None if sdpa is None else sdpa / row["ms"] >= 3)  # fmt: skip
            flex = row.get("flex_ms")
            add(f"attn {tag}: at least as fast as flex_attention",
                None if flex is None else round(flex / row["ms"], 2),
                None if flex is None else row["ms"] <= flex)  # fmt: skip
            add(f"attn {tag}: within 2x of floor", round(row["ms"] / row["floor_ms"], 2),
                row["ms"] <= 2 * row["floor_ms"])  # fmt: skip
        if row.get("op") == "depthwise_conv2d" and " K=13 d=1 s=1" in row["case"] and "ms" in row:
            add(f"conv {row['case']} {row['dtype']}: at least as fast as cuDNN",
                round(row["cudnn_ms"] / row["ms"], 2), row["ms"] <= row["cudnn_ms"])  # fmt: skip
    return found


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        ("op", 18), ("case", 30), ("dtype", 5), ("ok", 5), ("rel_err", 9), ("max_err", 9),
        ("ms", 9), ("sdpa_ms", 9), ("flex_ms", 9), ("cudnn_ms", 9), ("floor_ms", 9),
        ("flash_equiv_ms", 14), ("tflops", 7), ("waste", 6), ("tiles", 44),
    ]  # fmt: skip
    print(" ".join(name.ljust(width) for name, width in cols))
    for row in rows:
        cells = []
        for name, width in cols:
            value = row.get(name, "")
            if isinstance(value, float):
                value = f"{value:.3g}" if name.endswith("err") else f"{value:.4g}"
            cells.append(str(value)[:width].ljust(width))
        print(" ".join(cells))
        notes = {k: row[k] for k in ("sdpa", "flex", "flex_note", "flash_equiv", "error")
                 if k in row}  # fmt: skip
        if notes:
            print("    ", notes)


def print_candidates(rows: list[dict[str, Any]], every_case: bool) -> None:
    """Every autotuning candidate's time on the headline cases (128^2, r = 16)."""
    for row in rows:
        headline = "128x128" in row.get("case", "") and " r=16" in row["case"]
        if (headline or every_case) and "candidates" in row:
            print(f"candidates, {row['op']} {row['case']} {row['dtype']} (ms):")
            for tiles, ms in sorted(row["candidates"].items(), key=lambda item: item[1]):
                print(f"    {ms:9.4f}  {tiles}")
            if row.get("flash_equiv_ms"):
                print(f"    {row['flash_equiv_ms']:9.4f}  dense flash SDPA, same pairs "
                      f"({row['flash_equiv_keys']} keys per query); ours / flash = "
                      f"{row['ms'] / row['flash_equiv_ms']:.2f}")  # fmt: skip


def _import_plugins() -> None:
    """Import and register difforge's ops, even if the root package needs absent extras.

    The GPU machine has torch and triton only. ``difforge.plugins`` needs nothing else, but
    ``difforge/__init__.py`` might; if importing it fails, load the subpackage under a bare
    ``difforge`` package object instead.
    """
    import importlib
    import types

    try:
        importlib.import_module("difforge.plugins").load_ops()
        return
    except ImportError as exc:
        print(f"note: importing difforge failed ({exc}); loading difforge.plugins alone")
    for name in [m for m in sys.modules if m == "difforge" or m.startswith("difforge.")]:
        del sys.modules[name]
    root = types.ModuleType("difforge")
    root.__path__ = [str(REPO / "difforge")]
    sys.modules["difforge"] = root
    importlib.import_module("difforge.plugins").load_ops()


def main() -> int:
    args = parse_args()
    if args.cpu_smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    import torch
    import triton

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use a GPU machine)", file=sys.stderr)
        return 2
    _import_plugins()
    checker = Checker(args.cpu_smoke)
    device_name = "cpu (smoke)" if args.cpu_smoke else torch.cuda.get_device_name()
    print(f"gpu_check on {device_name}: torch {torch.__version__}, triton {triton.__version__}")
    checker.measure_peaks()
    print("peaks:", {k: f"{v:.3g}" for k, v in checker.peaks.items()})
    cases = plan(args)
    checker.prepare_flex(cases)
    rows: list[dict[str, Any]] = []
    try:
        rows += checker.wiring_rows()
    except Exception as exc:
        traceback.print_exc()
        rows.append({"op": "wiring", "case": "ops", "ok": False,
                     "error": f"{type(exc).__name__}: {exc}"[:300]})  # fmt: skip
    for row in rows:
        print(f"wiring {row['case']}: {row.get('path', '?')} ok={row['ok']}", flush=True)
    for kind, kwargs in cases:
        if elapsed() > CASE_BUDGET_S:
            rows.append({"op": kind, "case": str(kwargs), "error": "skipped (time budget)"})
            continue
        try:
            if kind == "attention":
                row = checker.attention_case(**kwargs)
            else:
                row = checker.conv_case(**kwargs)
        except Exception as exc:
            traceback.print_exc()
            row = {"op": kind, "case": str(kwargs), "ok": False,
                   "error": f"{type(exc).__name__}: {exc}"[:300]}  # fmt: skip
        row["t_s"] = round(elapsed(), 1)
        rows.append(row)
        keys = ("ms", "sdpa_ms", "flex_ms", "cudnn_ms", "rel_err")
        summary = {k: row[k] for k in keys if k in row}
        print(f"[{row['t_s']:6.1f}s] {row['op']} {row['case']} {row.get('dtype', '')}: "
              + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()) + f" {row.get('error', '')}",
              flush=True)  # fmt: skip
        checker._empty_cache()
    print_table(rows)
    print_candidates(rows, every_case=args.cpu_smoke)
    judged = goals(rows)
    for goal in judged:
        print(f"GOAL {goal['result']:4} {goal['goal']} (measured {goal['measured']})")
    failed = [r for r in rows if r.get("ok") is False]
    report = {
        "device": device_name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "peaks": checker.peaks,
        "rows": rows,
        "goals": judged,
        "failed": len(failed),
        "elapsed_s": round(elapsed(), 1),
    }
    if not args.cpu_smoke and args.engines is not None:
        # ONNX Runtime's CUDA provider and TensorRT against the CPU artifact (gpu_engines.py):
        # rows where the libraries are here, and what was skipped and why
        sys.path.insert(0, str(Path(__file__).parent))
        from gpu_engines import section

        report["engines"] = section(args.engines)
        for engine, reason in report["engines"]["skipped"].items():
            print(f"engines: skipped {engine}: {reason}")
        for row in report["engines"]["rows"]:
            print("engines:", json.dumps(row, default=str))
            if row.get("ok") is False:
                failed.append(row)
        report["failed"] = len(failed)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out} ({len(rows)} cases, {len(failed)} failed) in {elapsed():.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
