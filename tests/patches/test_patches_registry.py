"""The patch registry: CLI parsing, option validation, applicability, reports, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from difforge.errors import DifforgeError
from difforge.patches import (
    Patch,
    PatchOption,
    PatchReport,
    PatchRequest,
    apply_patches,
    available_patches,
    create_patch,
    get_patch_class,
    parse_patch_arg,
    register_patch,
)

BUILTIN = {
    "linfusion", "clear", "msw-msa", "redilate", "raunet", "reparam", "deepcache",
    "faster-diffusion", "ras",
}


def test_builtin_patches_are_listed() -> None:
    assert set(available_patches()) == BUILTIN
    for name in sorted(BUILTIN):
        described = get_patch_class(name).describe()
        json.dumps(described)
        assert described["name"] == name
        assert described["summary"] and described["options"] is not None


@pytest.mark.parametrize(
    ("text", "name", "options", "main"),
    [
        ("linfusion", "linfusion", {}, None),
        ("  clear:radius=16 ", "clear", {"radius": "16"}, None),
        ("clear:radius=8,down=4", "clear", {"radius": "8", "down": "4"}, None),
        ("linfusion=/ckpt/LinFusion-1-5", "linfusion", {}, "/ckpt/LinFusion-1-5"),
        ("linfusion=C:/odd,path:x", "linfusion", {}, "C:/odd,path:x"),
        ("redilate:scale=2,tau=30", "redilate", {"scale": "2", "tau": "30"}, None),
        (
            "msw-msa:blocks=down_blocks.0+up_blocks.1",
            "msw-msa",
            {"blocks": "down_blocks.0+up_blocks.1"},
            None,
        ),
    ],
)
def test_parse_patch_arg(text: str, name: str, options: dict[str, str], main: str | None) -> None:
    request = parse_patch_arg(text)
    assert request == PatchRequest(name=name, options=options, main=main)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a name"),
        ("Clear", "expected a name"),
        ("clear:", "is not key=value"),
        ("clear:radius", "is not key=value"),
        ("clear:radius=", "has no value"),
        ("clear:radius=1,radius=2", "given twice"),
        ("clear;radius=1", "expected ':' or '='"),
        ("linfusion=", "nothing after '='"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(DifforgeError, match=message):
        parse_patch_arg(text)


def test_unknown_patch_lists_known_ones() -> None:
    with pytest.raises(DifforgeError) as info:
        create_patch("freeu:b1=1.1")
    assert "unknown patch 'freeu'" in str(info.value)
    assert "clear, deepcache, faster-diffusion, linfusion, msw-msa" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "clear:window=8",
            "patch 'clear' has no option 'window' (it takes: radius, down, proportional, weights)",
        ),
        ("clear:radius=abc", "option 'radius': expected an integer, got 'abc'"),
        ("clear:radius=1.5", "expected an integer"),
        ("clear:radius=0", "option 'radius': 0 is below the minimum 1"),
        ("clear:down=0", "option 'down': 0 is below the minimum 1"),
        ("clear:proportional=maybe", "option 'proportional': expected true or false"),
        (
            "clear=/does/not/exist.safetensors",
            "option 'weights': '/does/not/exist.safetensors' does not exist",
        ),
        ("linfusion:mid_dim=0", "must be -1 or at least 1"),
        ("linfusion:mid_dim=-2", "below the minimum -1"),
        ("msw-msa=foo", "takes no 'msw-msa=VALUE' argument"),
    ],
)
def test_option_errors(text: str, message: str) -> None:
    with pytest.raises(DifforgeError) as info:
        create_patch(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_options_resolve_to_typed_values(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    patch = create_patch(f"clear:radius=8,down=4,proportional=yes,weights={weights}")
    assert patch.options == {"radius": 8, "down": 4, "proportional": True, "weights": weights}
    patch = create_patch(PatchRequest("clear", {"radius": 5, "proportional": False}))
    assert patch.options["radius"] == 5 and patch.options["down"] == 1
    assert create_patch(f"clear={weights}").options["weights"] == weights


def test_wrong_model_is_refused() -> None:
    from patch_testing import tiny_dit, tiny_unet

    with pytest.raises(
        DifforgeError, match="patch 'linfusion' does not apply to DiTTransformer2DModel"
    ):
        create_patch("linfusion").apply(tiny_dit())
    with pytest.raises(
        DifforgeError, match="patch 'msw-msa' does not apply to DiTTransformer2DModel"
    ):
        create_patch("msw-msa").apply(tiny_dit())
    with pytest.raises(DifforgeError, match="patch 'clear' does not apply to UNet2DConditionModel"):
        create_patch("clear").apply(tiny_unet())


def test_bad_block_name_is_refused() -> None:
    from patch_testing import tiny_unet

    with pytest.raises(
        DifforgeError, match=r"'up_blocks\.3\.attentions' names no transformer block"
    ):
        create_patch("msw-msa:blocks=down_blocks.0.attentions+up_blocks.3.attentions").apply(
            tiny_unet()
        )


class _Boom(Exception):
    pass


def test_apply_patches_rolls_back_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from patch_testing import tiny_unet

    import difforge.patches as registry
    import difforge.patches.redilate  # noqa: F401  (registers in the real registry)

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_patch
    class Failing(Patch):
        name = "test-failing"
        option_specs: ClassVar[tuple[PatchOption, ...]] = ()

        def _apply(self, denoiser: torch.nn.Module) -> PatchReport:
            raise _Boom

    unet = tiny_unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    module_names = [n for n, _ in unet.named_modules()]
    with pytest.raises(_Boom):
        apply_patches(unet, ["linfusion", "redilate:scale=2", "test-failing"])
    after = unet.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [n for n, _ in unet.named_modules()] == module_names
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules())


def test_reports_are_json(tmp_path: Path) -> None:
    from patch_testing import tiny_unet

    reports = apply_patches(tiny_unet(), ["linfusion"]) + apply_patches(tiny_unet(), ["msw-msa"])
    data: list[dict[str, Any]] = json.loads(json.dumps([r.to_dict() for r in reports]))
    assert [d["patch"] for d in data] == ["linfusion", "msw-msa"]
    assert data[0]["count"] == 7 and data[0]["options"] == {"checkpoint": None, "mid_dim": None}
    assert "no checkpoint" in data[0]["notes"][0]
    assert data[1]["extra_inputs"]["msw_msa_shift"]["kwargs_key"] == "cross_attention_kwargs"


def test_double_apply_is_refused() -> None:
    from patch_testing import tiny_unet

    patch = create_patch("msw-msa")
    unet = tiny_unet()
    patch.apply(unet)
    with pytest.raises(DifforgeError, match="already applied"):
        patch.apply(unet)
    patch.undo()
    patch.apply(unet)


def test_patches_on_the_same_module_are_refused_and_rolled_back() -> None:
    from patch_testing import tiny_unet

    unet = tiny_unet()
    before = [(n, type(m)) for n, m in unet.named_modules()]
    # Both rewrite the self-attention of the same blocks.
    with pytest.raises(DifforgeError, match=r"'linfusion' and 'msw-msa' both rewrite .*attn1"):
        apply_patches(unet, ["linfusion", "msw-msa"])
    assert [(n, type(m)) for n, m in unet.named_modules()] == before
    # Disjoint modules stack: attention and convolutions.
    reports = apply_patches(unet, ["linfusion", "redilate:scale=2"])
    assert [r.patch for r in reports] == ["linfusion", "redilate"]
    assert all(r.count > 0 for r in reports)


def test_a_patch_given_twice_is_refused() -> None:
    from difforge.exporter.prepare import create_patches

    with pytest.raises(DifforgeError, match="patch 'linfusion' is given 2 times"):
        create_patches(["linfusion", "clear:radius=4", "linfusion"])
