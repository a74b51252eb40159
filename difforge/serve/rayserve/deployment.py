"""The Ray Serve deployment: HTTP routes over :class:`difforge.serve.service.Service`.

Routes: ``POST /generate`` (a JSON request; PNG bytes or JSON back), ``GET /health``
(liveness: the replica answers), ``GET /ready`` (readiness: what the artifact serves). Requests
wait in Serve's batch queue (``serve.batch``, sized in images, not requests) and each batch
runs on a worker thread, so the replica's event loop keeps taking requests into the queue and
answering Serve's own health checks while the engine works (``/health`` requests count against
``max_ongoing_requests`` like any other). Ray Serve adds an ``x-request-id`` header to every
response (a client's own is kept); difforge adds ``Server-Timing`` (queue and each stage, in
ms) and ``x-difforge-batch`` (how many requests shared the call).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from difforge.errors import DifforgeError
from difforge.serve.schema import MAX_BODY, RequestError
from difforge.serve.service import Reply, Service, Ticket


def manifest_digest(artifact: Path) -> str:
    """The sha256 of an artifact's manifest (which holds every file's hash): replicas refuse
    another artifact found at the same path on their node."""
    return hashlib.sha256((artifact / "manifest.json").read_bytes()).hexdigest()


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it passes :data:`MAX_BODY`, whatever its
    ``content-length`` says."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise RequestError(413, f"request body of {declared} bytes is over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise RequestError(413, f"request body is over {MAX_BODY} bytes")
    return bytes(body)


def _images(items: list[Ticket]) -> int:
    return sum(t.job.resolved.batch for t in items)


class Generator:
    """One replica: the artifact loaded once, requests batched across clients."""

    def __init__(
        self,
        artifact: str,
        digest: str,
        threads: int | None,
        max_batch: int,
        batch_wait_s: float,
    ) -> None:
        from difforge.runtime import load

        root = Path(artifact)
        if not (root / "manifest.json").is_file() or manifest_digest(root) != digest:
            raise DifforgeError(
                f"{artifact} on this node is not the artifact being served (copy it to every "
                "node at the same path)"
            )
        self.service = Service(load(root, threads=threads or None), max_batch)
        self._generate.set_max_batch_size(max_batch)
        self._generate.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0, batch_size_fn=_images)
    async def _generate(self, tickets: list[Ticket]) -> list[Reply]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.service.run, tickets)

    async def __call__(self, request: Request) -> Response:
        route = (request.method, request.url.path.rstrip("/") or "/")
        try:
            if route == ("POST", "/generate"):
                ticket = self.service.admit(await read_body(request))
                reply = await self._generate(ticket)
            elif route == ("GET", "/health"):
                reply = Reply.json(200, {"status": "ok"})
            elif route in (("GET", "/ready"), ("GET", "/")):
                reply = Reply.json(200, self.service.info())
            elif route[1] in ("/generate", "/health", "/ready"):
                raise RequestError(405, f"{route[1]} does not take {request.method}")
            else:
                raise RequestError(
                    404, f"no route {route[1]} (POST /generate, GET /health, GET /ready)"
                )
        except RequestError as exc:
            reply = Reply.error(exc)
        return Response(
            reply.body, status_code=reply.status, media_type=reply.content_type,
            headers=reply.headers,
        )



def application(
    artifact: Path,
    *,
    replicas: int,
    threads: int | None,
    cpus: float,
    max_batch: int,
    batch_wait_s: float,
    shutdown_timeout_s: float,
) -> Any:
    """The Serve application for ``artifact`` (bound, ready for ``serve.run``)."""
    deployment = serve.deployment(
        Generator,
        name="difforge",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus},
        # a replica holds its batch queue and the batch in flight
        max_ongoing_requests=max(8, 4 * max_batch),
        graceful_shutdown_timeout_s=shutdown_timeout_s,
        graceful_shutdown_wait_loop_s=0.5,
        health_check_period_s=5.0,
    )
    return deployment.bind(
        str(artifact.resolve()), manifest_digest(artifact), threads, max_batch, batch_wait_s
    )
