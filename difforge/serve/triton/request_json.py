"""The pipeline model's request tensor: one BYTES element holding the JSON request that
``difforge serve`` takes over HTTP (:mod:`difforge.serve.schema`), read the same way."""

from __future__ import annotations

from typing import Any

import numpy as np

from difforge.serve.schema import RequestError


def request_bytes(raw: Any) -> bytes:
    """The ``request`` tensor's one element (bytes, as Triton's BYTES tensors hold them)."""
    array = np.asarray(raw, dtype=object).ravel()
    if array.size != 1:
        raise RequestError(
            400, f"the 'request' input must hold one JSON object, got {array.size} elements"
        )
    value = array[0]
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    raise RequestError(400, f"the 'request' input must hold JSON text, got {type(value).__name__}")
