"""Compile the Triton kernels for a GPU target on a machine without a GPU (run as a script).

The interpreter runs the kernels' Python, not what the compiler accepts: this builds real
cubins for sm_90 (ptxas ships with triton), with the argument specialisation a launch on
contiguous tensors would get, and prints one line per kernel with its register use, the
copies its software-pipelined loops keep in flight, and the size of each MMA loop in SASS
instructions (with its per-score selects), a GPU-free measure of a loop's issue cost.
Used by ``test_kernels_compile.py``; also handy by hand: ``python tests/plugins/kernel_compile.py``.
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import difforge.plugins.kernels.depthwise_conv as dw
import difforge.plugins.kernels.local_attention as la

TARGET = GPUTarget("cuda", 90, 32)
# Pointer argument kinds: the tensor dtype, fp32 scratch, int32 index lists.
POINTERS = {"ptr": "", "ptr32": "*fp32", "ptri32": "*i32"}
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def compile_kernel(
    fn: Any, values: dict[str, Any], consts: dict[str, Any], dtype: str, **options: int
) -> str:
    """``values``: runtime argument -> example (a :data:`POINTERS` kind, a float or an int)."""
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    consts = dict(consts)
    fixed = {p.name for p in fn.params if p.do_not_specialize}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            continue
        value = values[name]
        if value in POINTERS:
            signature[name] = POINTERS[value] or f"*{dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif name in fixed:
            signature[name] = "i32"
        elif value == 1:  # triton specialises ints equal to 1 as constants
            signature[name] = "constexpr"
            consts[name] = 1
        else:
            signature[name] = "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    kernel = triton.compile(ASTSource(fn, signature, consts, attrs), target=TARGET, options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage, sass = (
            subprocess.run(
                [str(BIN / "cuobjdump"), flag, f.name], capture_output=True, text=True, check=True
            ).stdout
            for flag in ("--dump-resource-usage", "-sass")
        )
    usage = next(line.split(" CONSTANT")[0] for line in usage.splitlines() if "REG:" in line)
    loops = ",".join(f"{len(body)}/{sum('FSEL' in i for i in body)}" for body in mma_loops(sass))
    return (
        f"{usage.strip()} WAITS:{','.join(loop_waits(kernel.asm['ttgir'])) or '-'}"
        f" LOOPS:{loops or '-'}"
    )


def mma_loops(sass: str) -> list[list[str]]:
    """Instructions of each SASS loop that runs tensor-core MMAs (HGMMA), in code order.

    A loop is a backward branch and everything from its target up to it. Per thread, one
    pass of an attention loop handles one key block, so the instruction count is the issue
    cost of a block; FSEL there is the per-score mask select.
    """
    addresses: list[int] = []
    code: list[str] = []
    for line in sass.splitlines():
        found = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if found:
            addresses.append(int(found.group(1), 16))
            code.append(found.group(2).strip())
    loops = []
    for at, instruction in zip(addresses, code, strict=True):
        target = re.search(r"BRA\b.*?0x([0-9a-f]+)", instruction)
        if target and int(target.group(1), 16) < at:
            start = int(target.group(1), 16)
            body = [c for a, c in zip(addresses, code, strict=True) if start <= a <= at]
            if any("HGMMA" in c for c in body):
                loops.append(body)
    return loops


def loop_waits(ttgir: str) -> list[str]:
    """How many async copies each pipelined loop keeps in flight at its wait (0: none).

    Waits inside a software-pipelined loop name the copies they wait for; the drains after
    a loop do not, so only the former are listed.
    """
    return re.findall(r"ttg\.async_wait %[^{]*\{num = (\d+)", ttgir)


def _strides(prefixes: str, heads: int, n: int, d: int) -> dict[str, int]:
    return {
        f"stride_{p}{s}": v
        for p in prefixes
        for s, v in (("b", heads * n * d), ("h", n * d), ("n", d))
    }


def main() -> None:
    heads, h, w, d = 24, 128, 128, 64
    # Every autotuning candidate (disc, fp16), and the square window with text and pooled keys.
    cases = [("fp16", 0, 0, True, tiles) for tiles in la.TILE_CANDIDATES]
    cases.append(("bf16", 512, 64, False, la.TILE_CANDIDATES[0]))
    for dtype, t, p, disc, tiles in cases:
        n = t + h * w
        lists = {f"{kind}{part}": "ptri32" for kind in ("Full", "Partial", "Edge")
                 for part in ("Count", "Index")}  # fmt: skip
        values = dict(Q="ptr", K="ptr", V="ptr", Out="ptr", **lists,
                      heads=heads, H=h, W=w, T=t, P=p, radius=16, tiles_x=w // tiles.qx,
                      full_width=7, partial_width=24, edge_width=3, scale_log2=0.18,
                      **_strides("qkvo", heads, n, d))  # fmt: skip
        consts = dict(IS_DISC=disc, LIST=tiles.schedule == "list", HEAD_DIM=d, QY=tiles.qy,
                      QX=tiles.qx, KY=tiles.ky, KX=tiles.kx, BLOCK_D=d, BLOCK_G=tiles.block_g,
                      PRECISION="tf32", DOT_F32=False)  # fmt: skip
        usage = compile_kernel(la._image_query_kernel, values, consts, dtype,
                               num_warps=tiles.num_warps, num_stages=tiles.num_stages)  # fmt: skip
        print("image", dtype, "disc" if disc else "square", tiles, usage)
    n = 512 + h * w
    values = dict(Q="ptr", K="ptr", V="ptr", Out="ptr", Part="ptr32", Stats="ptr32", heads=heads,
                  T=512, n_visible=n, split_len=4224, scale_log2=0.18,
                  **_strides("qkvo", heads, n, d))  # fmt: skip
    consts = dict(SPLIT=True, BLOCK_M=64, BLOCK_N=64, HEAD_DIM=d, BLOCK_D=d, PRECISION="tf32",
                  DOT_F32=False)  # fmt: skip
    print("global", compile_kernel(la._global_query_kernel, values, consts, "fp16", num_warps=4))
    values = dict(Part="ptr32", Stats="ptr32", Out="ptr", stride_ob=heads * n * d,
                  stride_oh=n * d, stride_on=d, heads=heads, T=512, splits=4)  # fmt: skip
    consts = dict(HEAD_DIM=d, BLOCK_M=64, BLOCK_D=d)
    print("merge", compile_kernel(la._merge_splits_kernel, values, consts, "bf16", num_warps=4))
    c, size, k = 1536, 64, 13
    conv = dict(X="ptr", Wt="ptr", Bias="ptr", Out="ptr", stride_xb=c * size * size,
                stride_xc=size * size, stride_xh=size, stride_xw=1, stride_ob=c * size * size,
                stride_oc=size * size, stride_oh=size, stride_ow=1, C=c, H=size, W=size,
                Ho=size, Wo=size, K=k, stride=1, dilation=1, padding=k // 2)  # fmt: skip
    tiles = dw.toeplitz_candidates(k, 1, 1)[0]
    consts = dict(HAS_BIAS=True, BLOCK_H=tiles.block_h, BLOCK_W=tiles.block_w,
                  BLOCK_IN=tiles.block_in, PRECISION="tf32", DOT_F32=False)  # fmt: skip
    values = dict(conv, out_w=16, tiles_x=4)
    print("toeplitz", compile_kernel(dw._dw_toeplitz_kernel, values, consts, "fp16", num_warps=4))
    consts = dict(HAS_BIAS=True, BLOCK_C=16, BLOCK_P=128)
    print("direct", compile_kernel(dw._dw_direct_kernel, conv, consts, "bf16", num_warps=4))


if __name__ == "__main__":
    main()
