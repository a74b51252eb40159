"""UniRepLKNet DRB merge, InceptionNeXt fold and the reparam deploy pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conv_testing import rel_err, run, unet_inputs

from difforge.errors import DifforgeError
from difforge.patches.reparam import ReparamPatch
from difforge.plugins.modules import DepthwiseConv2d
from difforge.sources.backbones.inceptionnext import InceptionDWConv2d
from difforge.sources.backbones.unireplknet import BRANCH_TABLE, DilatedReparamBlock
from difforge.sources.presets import build_tiny_lk_unet


def _random_drb(c: int, k: int, dtype: torch.dtype) -> DilatedReparamBlock:
    torch.manual_seed(k)
    block = DilatedReparamBlock(c, k).to(dtype)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                # The authors' __main__: random affine, var ~ U + 2.
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0, 1).add_(2)
                m.weight.uniform_(-1, 1)
                m.bias.uniform_(-1, 1)
    return block.eval()


def _branch_sum(block: DilatedReparamBlock, x: torch.Tensor) -> torch.Tensor:
    # Independent reference: every branch as its own F.conv2d + F.batch_norm.
    def bn(m: torch.nn.BatchNorm2d, y: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    c, k = block.channels, block.kernel_size
    out = bn(block.origin_bn, F.conv2d(x, block.lk_origin.weight, None, padding=k // 2, groups=c))
    for kb, r in zip(*BRANCH_TABLE[k], strict=True):
        conv = getattr(block, f"dil_conv_k{kb}_{r}")
        y = F.conv2d(x, conv.weight, None, padding=r * (kb - 1) // 2, dilation=r, groups=c)
        out = out + bn(getattr(block, f"dil_bn_k{kb}_{r}"), y)
    return out


@pytest.mark.parametrize("k", sorted(BRANCH_TABLE))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_drb_merge_equals_branch_sum(k: int, dtype: torch.dtype, tol: float) -> None:
    block = _random_drb(4, k, dtype)
    x = torch.randn(2, 4, 19, 23, dtype=dtype)
    with torch.no_grad():
        ref = _branch_sum(block, x)
        assert rel_err(block(x), ref) <= tol
        merged = block.merge()
        assert merged.weight.dtype == dtype and merged.kernel_size == (k, k)
        assert rel_err(merged(x), ref) <= tol
        block.reparameterize()
        assert rel_err(block(x), ref) <= tol
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())
    assert sorted(block.state_dict()) == ["lk_origin.bias", "lk_origin.weight"]


@pytest.mark.parametrize("k", [4, 3, 19])
def test_drb_rejects_unsupported_kernel(k: int) -> None:
    with pytest.raises(DifforgeError):
        DilatedReparamBlock(4, k)


def _timm_reference(m: InceptionDWConv2d, x: torch.Tensor) -> torch.Tensor:
    # Written from timm/models/inception_next.py (InceptionDWConv2d.forward):
    #   x_id, x_hw, x_w, x_h = torch.split(x, self.split_indexes, dim=1)
    #   return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), 1)
    # with split_indexes = (in_chs - 3 * gc, gc, gc, gc), gc = int(in_chs * branch_ratio).
    c = x.shape[1]
    gc = int(c * 0.125)
    n_id = c - 3 * gc
    hw = F.conv2d(
        x[:, n_id : n_id + gc], m.dwconv_hw.weight, m.dwconv_hw.bias, padding=1, groups=gc
    )
    w = F.conv2d(
        x[:, n_id + gc : n_id + 2 * gc],
        m.dwconv_w.weight,
        m.dwconv_w.bias,
        padding=(0, 5),
        groups=gc,
    )
    h = F.conv2d(
        x[:, n_id + 2 * gc :], m.dwconv_h.weight, m.dwconv_h.bias, padding=(5, 0), groups=gc
    )
    return torch.cat([x[:, :n_id], hw, w, h], dim=1)


@pytest.mark.parametrize("c", [96, 32, 17])
def test_inception_split_order_and_fold(c: int) -> None:
    torch.manual_seed(c)
    m = InceptionDWConv2d(c).eval()
    gc = int(c * 0.125)
    assert m.split_indexes == (c - 3 * gc, gc, gc, gc)
    if c == 96:
        assert m.split_indexes == (60, 12, 12, 12)
    assert m.dwconv_w.kernel_size == (1, 11) and m.dwconv_h.kernel_size == (11, 1)
    x = torch.randn(2, c, 19, 23)
    with torch.no_grad():
        ref = _timm_reference(m, x)
        assert torch.equal(m(x), ref)
        folded = m.fold()
        assert folded.kernel_size == (11, 11) and folded.groups == c
        assert rel_err(folded(x), ref) <= 1e-6
        assert torch.equal(folded(x)[:, : c - 3 * gc], x[:, : c - 3 * gc])


def test_reparam_pass_on_tiny_lk_unet() -> None:
    unet: Any = build_tiny_lk_unet(seed=0)
    bns = [m for m in unet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(
        b.running_var is not None and not torch.allclose(b.running_var, torch.ones(1)) for b in bns
    )
    args = unet_inputs(24, 40)
    ref = run(unet, args)
    keys = list(unet.state_dict())
    for mode, mixers_left in (("auto", True), ("always", False)):
        patch = ReparamPatch(fold_inception=mode)
        patch.apply(unet)
        kinds = {type(m) for m in unet.modules()}
        assert torch.nn.BatchNorm2d not in kinds and DilatedReparamBlock not in kinds
        assert (InceptionDWConv2d in kinds) is mixers_left
        lk = unet.down_blocks[0].resnets[0].conv1[0]
        # The merged block runs through difforge's depthwise op (Triton on CUDA).
        assert isinstance(lk, DepthwiseConv2d) and lk.weight.shape[-2:] == (13, 13)
        assert lk.bias is not None
        assert rel_err(run(unet, args), ref) <= 1e-5
        patch.undo()
        assert list(unet.state_dict()) == keys
        assert torch.equal(run(unet, args), ref)


def test_reparam_refuses_a_model_with_nothing_to_merge() -> None:
    plain = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.GroupNorm(2, 4)).eval()
    with pytest.raises(DifforgeError, match="finds nothing to merge in Sequential"):
        ReparamPatch().apply(plain)
    # One Conv2d + BatchNorm2d pair is enough to make it a deploy pass worth running.
    with_bn = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    report = ReparamPatch().apply(with_bn)
    assert report.replaced == ["0", "1"]
