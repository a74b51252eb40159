"""An HTTP generation request: a JSON object read into a :class:`GenerateRequest`, or refused
with a status and one line naming the field.

Shared by every server difforge runs behind (Ray Serve's deployment, Triton's Python model):
the wire format is the same everywhere. Types are checked here, where JSON's own types are
known (``true`` is no integer, ``2.5`` no step count); values are then checked against the
artifact by the runtime's own request resolution, whose refusals become 422s.

Fields: ``prompt``, ``negative_prompt`` (text artifacts), ``class_label`` (class artifacts),
``images`` (how many, from one seed, as the Python API's batch), ``steps``, ``seed``,
``guidance``, ``height``, ``width`` or ``resolution``, ``scheduler``, and ``output``:
``"png"`` (the image's bytes, a grid when several) or ``"json"`` (base64 PNGs and timings).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from difforge.runtime import GenerateRequest
from difforge.runtime.request_types import MAX_SEED

#: the largest request body read (bytes): a request is a few fields, never an image
MAX_BODY = 64 * 1024
#: the most images one request may ask for
MAX_IMAGES = 16
OUTPUTS = ("png", "json")

#: field -> (JSON types accepted, what the error calls them)
_TEXT = ((str,), "text")
_INT = ((int,), "an integer")
_NUMBER = ((int, float), "a number")
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "prompt": _TEXT,
    "negative_prompt": _TEXT,
    "class_label": _INT,
    "images": _INT,
    "steps": _INT,
    "seed": _INT,
    "guidance": _NUMBER,
    "height": _INT,
    "width": _INT,
    "resolution": _INT,
    "scheduler": _TEXT,
    "output": _TEXT,
}


class RequestError(Exception):
    """A request refused: HTTP ``status`` and one line naming ``field`` (None: the body)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


@dataclass(frozen=True)
class ServeRequest:
    """A parsed request: what to generate and how to answer."""

    request: GenerateRequest
    output: str
    images: int


def _typed(name: str, value: Any) -> Any:
    types, what = FIELDS[name]
    if isinstance(value, bool) or not isinstance(value, types):
        raise RequestError(400, f"field '{name}' must be {what}, got {json.dumps(value)}", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(400, f"field '{name}' must be a finite number", name)
    return value


def parse_body(body: bytes) -> ServeRequest:
    """The request in ``body`` (a JSON object), types checked; values the artifact refuses
    are found later, by :func:`difforge.runtime.request.resolve_request`."""
    if len(body) > MAX_BODY:
        raise RequestError(413, f"request body of {len(body)} bytes is over {MAX_BODY} bytes")
    try:
        data = json.loads(body.decode("utf-8")) if body.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, an overlong integer
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RequestError(400, f"request body is not valid JSON ({line})") from None
    except RecursionError:
        raise RequestError(400, "request body is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object of fields")
    unknown = sorted(set(data) - FIELDS.keys())
    if unknown:
        known = ", ".join(FIELDS)
        raise RequestError(400, f"unknown field '{unknown[0]}' (known: {known})", unknown[0])
    fields = {name: _typed(name, value) for name, value in data.items() if value is not None}
    output = fields.pop("output", "png")
    if output not in OUTPUTS:
        raise RequestError(400, f"field 'output' must be 'png' or 'json', got {output!r}", "output")
    images = fields.pop("images", 1)
    if not 1 <= images <= MAX_IMAGES:
        raise RequestError(
            422, f"field 'images' must be between 1 and {MAX_IMAGES}, got {images}", "images"
        )
    seed = fields.get("seed", 0)
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(422, f"field 'seed' must be between 0 and 2^64 - 1, got {seed}", "seed")
    resolution = fields.pop("resolution", None)
    if resolution is not None:
        if "height" in fields or "width" in fields:
            raise RequestError(
                400, "field 'resolution' sets height and width; give it or them", "resolution"
            )
        fields["height"] = fields["width"] = resolution
    if "guidance" in fields:
        fields["guidance_scale"] = float(fields.pop("guidance"))
    return ServeRequest(GenerateRequest(**fields), output, images)


def runtime_refusal(message: str) -> RequestError:
    """A 422 for a value the artifact refused (the runtime's own line, its CLI flags read as
    the request's fields), naming the field by the words the line uses."""
    message = re.sub(r"--([a-z][a-z-]*)", r"\1", message)
    # what the user wrote is quoted in the line ('height-euler'): it names no field
    lowered = re.sub(r"'[^']*'", "''", message.lower())
    for words, name in _RUNTIME_FIELDS:
        if any(word in lowered for word in words):
            return RequestError(422, message, name)
    return RequestError(422, message)


_RUNTIME_FIELDS = (
    (("negative prompt",), "negative_prompt"),
    (("images in one call",), "images"),
    (("height",), "height"),
    (("width",), "width"),
    (("scheduler", "sampler"), "scheduler"),
    (("steps",), "steps"),
    (("guidance",), "guidance"),
    (("seed",), "seed"),
    (("class label",), "class_label"),
    (("prompt",), "prompt"),
)
