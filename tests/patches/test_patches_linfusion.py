"""LinFusion: the layer against its dense formula, invariances, checkpoints, undo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from patch_testing import dense_linear_attention, rel_err, tiny_unet, unet_inputs
from safetensors.torch import load_file, save_file

from difforge.errors import DifforgeError
from difforge.patches import create_patch
from difforge.patches.linfusion import GeneralizedLinearAttention


def _layer(
    dim: int = 32, heads: int = 4, mid: int | None = None, seed: int = 0
) -> GeneralizedLinearAttention:
    torch.manual_seed(seed)
    layer = GeneralizedLinearAttention(dim, heads, mid).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    return layer


@pytest.mark.parametrize("mid", [None, 8, -1])
def test_layer_matches_dense_formula(mid: int | None) -> None:
    layer = _layer(mid=mid)
    x = torch.randn(2, 96, 32)
    ref = dense_linear_attention(x, layer)
    assert rel_err(layer(x), ref) <= 1e-6
    layer64 = layer.double()
    assert rel_err(layer64(x.double()), ref) <= 1e-10


def test_identity_mlp_still_adds_the_residual() -> None:
    # mid_dim = -1: q = W_q(x + x), the authors' quirk.
    layer = _layer(mid=-1).double()
    x = torch.randn(1, 10, 32, dtype=torch.float64)
    q = layer.to_q(x + layer.to_q_(x))
    assert torch.equal(q, layer.to_q(2 * x))


def test_permutation_equivariance_and_token_duplication() -> None:
    layer = _layer().double()
    x = torch.randn(2, 50, 32, dtype=torch.float64)
    out = layer(x)
    perm = torch.randperm(50)
    assert rel_err(layer(x[:, perm]), out[:, perm]) <= 1e-12
    doubled = layer(torch.cat([x, x], dim=1))
    assert rel_err(doubled[:, :50], out) <= 1e-12
    assert rel_err(doubled[:, 50:], out) <= 1e-12


def test_mask_is_ignored() -> None:
    layer = _layer().double()
    x = torch.randn(1, 20, 32, dtype=torch.float64)
    mask = torch.zeros(1, 1, 20, dtype=torch.float64).masked_fill(torch.rand(1, 1, 20) > 0.5, -1e4)
    assert torch.equal(layer(x, attention_mask=mask), layer(x))


def test_patch_targets_self_attention_only() -> None:
    unet = tiny_unet()
    attn2 = {n: m for n, m in unet.named_modules() if n.endswith("attn2")}
    attn2_state = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in attn2.items()}
    report = create_patch("linfusion").apply(unet)
    names = [n for n, m in unet.named_modules() if isinstance(m, GeneralizedLinearAttention)]
    assert sorted(names) == sorted(report.replaced) and report.count == 7
    assert all(n.endswith("attn1") for n in names)
    # attn2: same objects, same weights, bit-identical outputs on the same inputs.
    x, ctx = torch.randn(1, 64, 32), torch.randn(1, 7, 64)
    for name, module in attn2.items():
        assert unet.get_submodule(name) is module
        for key, value in module.state_dict().items():
            assert torch.equal(value, attn2_state[name][key])
        dim = module.to_q.weight.shape[1]
        x = torch.randn(1, 64, dim)
        with torch.no_grad():
            before = module(x, encoder_hidden_states=ctx)
        assert torch.equal(unet.get_submodule(name)(x, encoder_hidden_states=ctx), before)


def test_without_checkpoint_layers_start_from_the_original() -> None:
    unet = tiny_unet()
    originals = {n: m for n, m in unet.named_modules() if n.endswith("attn1")}
    report = create_patch("linfusion").apply(unet)
    assert "no checkpoint" in report.notes[0]
    for name, old in originals.items():
        new = unet.get_submodule(name)
        assert isinstance(new, GeneralizedLinearAttention)
        for attr in ("to_q", "to_k", "to_v"):
            assert torch.equal(getattr(new, attr).weight, getattr(old, attr).weight)
        assert torch.equal(new.to_out[0].bias, old.to_out[0].bias)
        x = torch.randn(1, 16, old.to_q.weight.shape[1])
        assert torch.equal(new.to_q_(x), torch.zeros_like(x))  # zero-output MLPs
        assert new.heads == old.heads


def test_patched_unet_and_undo_bit_identical() -> None:
    unet = tiny_unet()
    x, t, ctx = unet_inputs(16, 16)
    with torch.no_grad():
        ref = unet(x, t, ctx).sample
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    patch = create_patch("linfusion")
    patch.apply(unet)
    with torch.no_grad():
        assert not torch.allclose(unet(x, t, ctx).sample, ref)
    patch.undo()
    assert list(unet.state_dict()) == list(state)
    assert all(torch.equal(state[k], v) for k, v in unet.state_dict().items())
    with torch.no_grad():
        assert torch.equal(unet(x, t, ctx).sample, ref)


def _save_authors_layout(unet: torch.nn.Module, folder: Path, mid: int | None) -> None:
    """Write the modules like LinFusion.save_pretrained: entry i -> tensors 'i.<param>'."""
    folder.mkdir()
    modules_list, tensors = [], {}
    for index, (name, module) in enumerate(
        (n, m) for n, m in unet.named_modules() if isinstance(m, GeneralizedLinearAttention)
    ):
        modules_list.append(
            {
                "module_name": name,
                "dim_n": module.to_q.weight.shape[0],
                "heads": module.heads,
                "projection_mid_dim": mid,
            }
        )
        for key, value in module.state_dict().items():
            tensors[f"{index}.{key}"] = value.clone().contiguous()
    config = {
        "_class_name": "LinFusion",
        "_diffusers_version": "0.30.0",
        "modules_list": modules_list,
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("mid", [None, 16, -1])
def test_checkpoint_round_trip(tmp_path: Path, mid: int | None) -> None:
    trained = tiny_unet()
    option = "" if mid is None else f":mid_dim={mid}"
    create_patch(f"linfusion{option}").apply(trained)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if ".attn1." in name:
                p.normal_(0, 0.1)
    _save_authors_layout(trained, tmp_path / "ckpt", mid)
    keys = set(load_file(str(tmp_path / "ckpt" / "diffusion_pytorch_model.safetensors")))
    assert "0.to_out.0.bias" in keys and "0.to_q.weight" in keys
    if mid != -1:
        assert {"0.to_q_.0.weight", "0.to_q_.1.weight", "0.to_q_.1.bias", "0.to_q_.3.bias"} <= keys

    fresh = tiny_unet()
    report = create_patch(f"linfusion={tmp_path / 'ckpt'}").apply(fresh)
    assert report.count == 7 and "checkpoint" in report.notes[0]
    x, t, ctx = unet_inputs(16, 16)
    with torch.no_grad():
        assert torch.equal(fresh(x, t, ctx).sample, trained(x, t, ctx).sample)


BLOCK = "down_blocks.0.attentions.0.transformer_blocks.0"


def _edit_checkpoint(folder: Path, edit: str) -> None:
    config = json.loads((folder / "config.json").read_text())
    weights = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    if edit == "name":
        config["modules_list"][0]["module_name"] = (
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
        )
    elif edit == "dim":
        config["modules_list"][1]["dim_n"] = 48
    elif edit == "missing-entry":
        config["modules_list"].pop()
    elif edit == "missing-tensor":
        del tensors["2.to_k_.3.weight"]
    elif edit == "shape":
        tensors["1.to_v.weight"] = torch.zeros(3, 3)
    elif edit == "extra":
        tensors["9.to_q.weight"] = torch.zeros(3, 3)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(weights))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("name", f"module '{BLOCK}.attn2' is not a self-attention"),
        (
            "dim",
            "attentions.0.transformer_blocks.0.attn1 has dim_n=48, heads=8 but the UNet has 64",
        ),
        ("missing-entry", "has no entry for 'mid_block.attentions.0.transformer_blocks.0.attn1'"),
        ("missing-tensor", "missing tensor '2.to_k_.3.weight'"),
        ("shape", "'1.to_v.weight' has shape (3, 3), expected (64, 64)"),
        ("extra", "tensor '9.to_q.weight' matches no module"),
    ],
)
def test_mismatched_checkpoint(tmp_path: Path, edit: str, message: str) -> None:
    source = tiny_unet()
    create_patch("linfusion").apply(source)
    folder = tmp_path / "ckpt"
    _save_authors_layout(source, folder, None)
    _edit_checkpoint(folder, edit)
    target = tiny_unet()
    state = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(DifforgeError) as info:
        create_patch(f"linfusion={folder}").apply(target)
    assert message in str(info.value), str(info.value)
    assert all(torch.equal(state[k], v) for k, v in target.state_dict().items())


def test_checkpoint_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DifforgeError, match=r"has no config\.json"):
        create_patch(f"linfusion={tmp_path}").apply(tiny_unet())
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DifforgeError, match=r"config\.json is not valid JSON"):
        create_patch(f"linfusion={tmp_path}").apply(tiny_unet())
    with pytest.raises(DifforgeError, match=r"the checkpoint's config\.json sets it"):
        create_patch(f"linfusion:checkpoint={tmp_path},mid_dim=8")
