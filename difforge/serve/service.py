"""What a generation server does, whatever serves it: read a request body into a job (or a
4xx naming the field), run queued jobs in batches, and turn each result into a response
(PNG bytes, or JSON with base64 PNGs), with per-stage timings for the headers.

Ray Serve's deployment (:mod:`difforge.serve.rayserve`) only moves bytes between HTTP and
this class, so everything here is tested without a cluster.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from difforge.errors import DifforgeError
from difforge.runtime import GenerateResult, Pipeline
from difforge.runtime.image import encode_image, grid
from difforge.serve.batching import Job, generate_together, groups, job
from difforge.serve.schema import RequestError, ServeRequest, parse_body, runtime_refusal

_log = logging.getLogger(__name__)


@dataclass
class Reply:
    """An HTTP response: status, content type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, "application/json", json.dumps(data).encode(), dict(headers or {}))

    @classmethod
    def error(cls, exc: RequestError) -> Reply:
        return cls.json(exc.status, exc.body())


@dataclass(frozen=True)
class Ticket:
    """A request that passed every check, waiting for its batch."""

    serve: ServeRequest
    job: Job
    received: float


class Service:
    """One artifact's generation service; :meth:`run` is not reentrant (one batch at a
    time: the pipeline keeps per-run state)."""

    def __init__(self, pipe: Pipeline, max_batch: int | None) -> None:
        """``max_batch``: most images one call holds on this server (None: what the artifact
        takes); a request for more is refused, as it could never be batched."""
        self.pipe = pipe
        self.max_batch = max_batch
        self.served = 0

    def admit(self, body: bytes) -> Ticket:
        """``body`` read and resolved against the artifact; a :class:`RequestError` (4xx)
        for anything it cannot generate."""
        received = time.perf_counter()
        parsed = parse_body(body)
        self._check_conditioning(parsed)
        request = parsed.request
        if parsed.images > 1 and self.pipe.text_conditioned:
            request = replace(request, prompt=[str(request.prompt)] * parsed.images)
        elif parsed.images > 1:
            label = request.class_label if isinstance(request.class_label, int) else 0
            request = replace(request, class_label=[label] * parsed.images)
        try:
            admitted = job(self.pipe, request)
        except DifforgeError as exc:
            raise runtime_refusal(str(exc)) from None
        if self.max_batch is not None and admitted.resolved.batch > self.max_batch:
            raise RequestError(
                422,
                f"{admitted.resolved.batch} images in one request, but this server batches at "
                f"most {self.max_batch} per call (its --max-batch)",
                "images",
            )
        return Ticket(parsed, admitted, received)

    def _check_conditioning(self, parsed: ServeRequest) -> None:
        req = parsed.request
        meta = self.pipe.manifest.pipeline
        if self.pipe.text_conditioned and req.class_label is not None:
            raise RequestError(
                422, f"this {meta.type} artifact takes a prompt, not a class label", "class_label"
            )
        if not self.pipe.text_conditioned and (req.prompt or req.negative_prompt):
            what = "prompt" if req.prompt else "negative_prompt"
            raise RequestError(
                422,
                f"this class-to-image artifact ({meta.num_classes} classes) takes a class "
                f"label, not a {what.replace('_', ' ')}",
                what,
            )

    def run(self, tickets: Sequence[Ticket]) -> list[Reply]:
        """Generate ``tickets`` in as few calls as they allow; one reply each, in order. A
        failure while generating (an engine error: the request was admitted) answers its own
        group with a 500, and the server keeps serving."""
        replies: list[Reply | None] = [None] * len(tickets)
        for members in groups(self.pipe, [t.job for t in tickets]):
            started = time.perf_counter()
            try:
                results = generate_together(self.pipe, [tickets[i].job for i in members])
            except Exception as exc:  # answered per group; the traceback goes to the log
                if not isinstance(exc, DifforgeError):
                    _log.exception("generation failed")
                line = " ".join(str(exc).split()) or type(exc).__name__
                for i in members:
                    replies[i] = Reply.error(RequestError(500, f"generation failed: {line}"))
                continue
            for i, result in zip(members, results, strict=True):
                queued = started - tickets[i].received
                replies[i] = self.reply(tickets[i].serve, result, queued, len(members))
                self.served += 1
        return [r for r in replies if r is not None]

    def reply(
        self, request: ServeRequest, result: GenerateResult, queued: float, batch: int
    ) -> Reply:
        """``result`` as the response ``request`` asked for; timings in ``Server-Timing``."""
        timings = {"queue": queued, **result.timings}
        headers = {
            "server-timing": ", ".join(f"{k};dur={v * 1000:.3f}" for k, v in timings.items()),
            "x-difforge-batch": str(batch),
        }
        images = result.images
        if request.output == "png":
            image = images[0] if len(images) == 1 else grid(images)
            return Reply(200, "image/png", encode_image(image), headers)
        data = {
            "images": [base64.b64encode(encode_image(img)).decode("ascii") for img in images],
            "format": "png",
            "timings": timings,
            "step_seconds": result.step_seconds,
            "batch": batch,
            "request": result.request,
        }
        return Reply.json(200, data, headers)

    def info(self) -> dict[str, Any]:
        """What this service serves (the readiness route's body)."""
        meta = self.pipe.manifest.pipeline
        res = meta.resolution
        info: dict[str, Any] = {
            "status": "ready",
            "kind": meta.type,
            "conditioning": "prompt" if self.pipe.text_conditioned else "class_label",
            "resolution": {"min": res.min, "max": res.max, "default": res.default},
            "steps": self.pipe.manifest.scheduler.default_steps,
            "scheduler": self.pipe.manifest.scheduler.name,
            "guidance": meta.default_guidance,
            "max_batch": self.max_batch,
            "images_per_call": self.pipe.images_per_call(meta.default_guidance),
            "served": self.served,
        }
        if not self.pipe.text_conditioned:
            info["classes"] = meta.num_classes
        return info
