"""``--precision``: parsed per component, refused in one line when it cannot be honoured."""

from __future__ import annotations

import pytest

from difforge.calib.precision import component_precisions, parse_precision
from difforge.errors import DifforgeError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("int8", {"denoiser": "int8"}),
        ("bf16", {"denoiser": "bf16"}),
        ("denoiser=int8,vae_decoder=fp16", {"denoiser": "int8", "vae_decoder": "fp16"}),
        (" text_encoder = int8-weights ", {"text_encoder": "int8-weights"}),
    ],
)
def test_parse(text: str | None, expected: dict[str, str]) -> None:
    assert parse_precision(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("int4", "unknown precision 'int4'"),
        ("denoiser=int8,denoiser=fp16", "names denoiser twice"),
        ("=int8", "names no component"),
        ("denoiser=", "unknown precision ''"),
    ],
)
def test_bad_precision(text: str, needle: str) -> None:
    with pytest.raises(DifforgeError, match=needle):
        parse_precision(text)


def test_every_denoiser_graph_of_a_stepped_model_takes_the_denoiser_precision() -> None:
    roles = {"text_encoder": "text_encoder", "denoiser": "denoiser", "denoiser@late": "denoiser"}
    got = component_precisions({"denoiser": "int8"}, roles, roles)
    assert got == {"text_encoder": "fp32", "denoiser": "int8", "denoiser@late": "int8"}
    with pytest.raises(DifforgeError, match="vae_decoder, which this artifact does not have"):
        component_precisions({"vae_decoder": "fp16"}, roles, roles)


def test_the_second_text_encoder_may_be_named_alone() -> None:
    """SDXL's second CLIP and FLUX's T5 share the text encoders' role; ``text_encoder``
    lowers both, ``text_encoder_2`` names T5 alone (it overflows in fp16)."""
    roles = {"text_encoder": "text_encoder", "text_encoder_2": "text_encoder",
             "denoiser": "denoiser"}
    both = component_precisions(parse_precision("text_encoder=fp16"), roles, roles)
    assert both == {"text_encoder": "fp16", "text_encoder_2": "fp16", "denoiser": "fp32"}
    one = component_precisions(
        parse_precision("text_encoder=fp16,text_encoder_2=fp32"), roles, roles
    )
    assert one == {"text_encoder": "fp16", "text_encoder_2": "fp32", "denoiser": "fp32"}
    single = {"text_encoder": "text_encoder", "denoiser": "denoiser"}
    with pytest.raises(DifforgeError, match="names text_encoder_2, which this artifact"):
        component_precisions(parse_precision("text_encoder_2=fp16"), single, single)
