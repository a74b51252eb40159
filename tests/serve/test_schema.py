"""The HTTP request format: JSON fields into a GenerateRequest, or a status and one line naming
the field."""

from __future__ import annotations

import json

import pytest

from difforge.serve.schema import MAX_BODY, MAX_IMAGES, RequestError, parse_body, runtime_refusal


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def refused(raw: bytes) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_body(raw)
    return info.value


def test_fields_become_the_request() -> None:
    parsed = parse_body(
        body(prompt="a cat", steps=7, seed=3, guidance=4, resolution=64, scheduler="ddim",
             output="json", images=2)
    )
    req = parsed.request
    assert (req.prompt, req.steps, req.seed, req.scheduler) == ("a cat", 7, 3, "ddim")
    assert req.guidance_scale == 4.0 and isinstance(req.guidance_scale, float)
    assert (req.height, req.width) == (64, 64)
    assert (parsed.output, parsed.images) == ("json", 2)


def test_an_empty_body_asks_for_the_defaults() -> None:
    parsed = parse_body(b"")
    assert parsed.output == "png" and parsed.images == 1
    assert parsed.request.steps is None and parsed.request.seed == 0
    assert parse_body(body(steps=None)).request.steps is None  # null: the default


@pytest.mark.parametrize(
    ("fields", "status", "field", "words"),
    [
        ({"colour": "red"}, 400, "colour", "unknown field 'colour'"),
        ({"steps": "20"}, 400, "steps", "must be an integer"),
        ({"steps": 2.5}, 400, "steps", "must be an integer"),
        ({"seed": True}, 400, "seed", "must be an integer"),
        ({"guidance": "high"}, 400, "guidance", "must be a number"),
        ({"prompt": 5}, 400, "prompt", "must be text"),
        ({"class_label": [1, 2]}, 400, "class_label", "must be an integer"),
        ({"output": "gif"}, 400, "output", "'png' or 'json'"),
        ({"images": 0}, 422, "images", f"between 1 and {MAX_IMAGES}"),
        ({"images": MAX_IMAGES + 1}, 422, "images", "between 1"),
        ({"seed": -1}, 422, "seed", "2^64 - 1"),
        ({"seed": 1 << 64}, 422, "seed", "2^64 - 1"),
        ({"resolution": 64, "height": 64}, 400, "resolution", "give it or them"),
    ],
)
def test_bad_fields_are_named(fields: dict, status: int, field: str, words: str) -> None:
    error = refused(body(**fields))
    assert (error.status, error.field) == (status, field)
    assert words in str(error) and "\n" not in str(error)
    assert error.body() == {"error": str(error), "field": field}


def test_bad_bodies() -> None:
    assert refused(b"{not json").status == 400
    assert refused(b"\xff\xfe").status == 400
    assert "JSON object" in str(refused(b"[1, 2]"))
    big = refused(body(prompt="x" * MAX_BODY))
    assert big.status == 413 and big.field is None


def test_json_that_python_cannot_read_is_a_400() -> None:
    assert refused(b'{"seed": ' + b"9" * 5000 + b"}").status == 400  # over int's digit limit
    assert refused(b"[" * 60000).status == 400  # nested past the recursion limit


def test_infinite_numbers_are_refused() -> None:
    # Python's json reads the non-standard Infinity; a request cannot carry it through.
    error = refused(b'{"guidance": Infinity}')
    assert (error.status, error.field) == (400, "guidance")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("--steps must be at least 1, got 0", "steps"),
        ("height 1000 is outside this artifact's range [32, 64] (rebuild with a wider "
         "--resolution range)", "height"),
        ("unknown scheduler 'height-euler' (known: ddim, euler)", "scheduler"),
        ("width 33 is not a multiple of 8 (the model's factor)", "width"),
        ("class label 99 is outside [0, 9]", "class_label"),
        ("a negative prompt would have no effect: guidance 1 runs no ...", "negative_prompt"),
        ("scheduler 'ddim' does not fit this model", "scheduler"),
        ("5 images in one call, but this artifact takes at most 4", "images"),
        ("--guidance must be 0 or more, got -1", "guidance"),
    ],
)
def test_runtime_refusals_name_their_field(message: str, field: str) -> None:
    error = runtime_refusal(message)
    assert (error.status, error.field) == (422, field)
    assert "--" not in str(error)
