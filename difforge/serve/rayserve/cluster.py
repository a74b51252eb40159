"""Starting and stopping a Ray Serve application for an artifact: on a local Ray cluster made
for it, or on an existing cluster (``address``), which is how it scales past one machine.

Everything the replicas would refuse is checked here first (the artifact, the batch size, the
port), so a bad option is one line before any cluster starts. Stopping deletes the
application, whose replicas finish their in-flight requests (up to ``shutdown_timeout_s``)
before they exit; a cluster started here is then shut down, an existing one is left running.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from difforge.artifact.manifest import read_manifest
from difforge.config import ServeOptions
from difforge.errors import DifforgeError
from difforge.runtime.request import images_per_call

APP_NAME = "difforge"


@dataclass(frozen=True)
class Plan:
    """The options checked and filled in."""

    options: ServeOptions
    max_batch: int
    threads: int
    cpus: float


def check(options: ServeOptions) -> Plan:
    """Refuse what would fail on the cluster; fill in the batch size and threads."""
    manifest = read_manifest(options.artifact, verify=True)
    if options.replicas < 1:
        raise DifforgeError(f"--replicas must be at least 1, got {options.replicas}")
    most = images_per_call(manifest, 0.0)  # without guidance's doubled calls
    max_batch = options.max_batch
    if max_batch is None:
        max_batch = images_per_call(manifest, manifest.pipeline.default_guidance)
    if not 1 <= max_batch <= most:
        raise DifforgeError(
            f"--max-batch {max_batch}: this artifact takes 1 to {most} images per call "
            "(rebuild with a larger --max-batch to batch more)"
        )
    if options.batch_wait_ms < 0:
        raise DifforgeError(f"--batch-wait-ms must be 0 or more, got {options.batch_wait_ms:g}")
    if not 0 < options.port < 65536:
        raise DifforgeError(f"--port must be between 1 and 65535, got {options.port}")
    if options.shutdown_timeout_s < 0:
        raise DifforgeError(
            f"--shutdown-timeout must be 0 or more, got {options.shutdown_timeout_s:g}"
        )
    if options.threads is not None and options.threads < 1:
        raise DifforgeError(f"--threads must be at least 1, got {options.threads}")
    if options.address is None:
        _check_port_free(options.host, options.port)
        # Replicas share this machine's cores.
        cores = os.cpu_count() or 1
        threads = options.threads or max(1, cores // options.replicas)
        cpus = min(float(threads), cores / options.replicas)
        if options.threads is None and _tensorrt(manifest):
            threads = 0  # TensorRT engines take no thread count
    else:
        _check_reachable(options.address)
        # The nodes' sizes are not known here: each replica asks Ray for its threads' cores,
        # or for one core and ONNX Runtime's default threads on its node.
        threads = options.threads or 0
        cpus = float(threads or 1)
    return Plan(options, max_batch, threads, cpus)


def _tensorrt(manifest: Any) -> bool:
    return any(
        c.engine is not None and c.engine.backend == "tensorrt"
        for c in manifest.components.values()
    )


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc})"
            raise DifforgeError(f"port {port} on {host} {why} (choose --port)") from None


def _check_reachable(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that nothing answers on is one line now, not minutes
    of Ray's own retries; 'auto' and other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise DifforgeError(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if "DifforgeError" in ln]
    return (lines or [" ".join(str(exc).split())[:300]])[0]


class Stopper:
    """Set by SIGINT or SIGTERM (when ``signals``) or by a caller's ``event.set()``: the
    server drains and stops. The handlers are installed once Ray is up, as Ray's core
    installs its own SIGTERM handler in the driver when it starts."""

    def __init__(self, signals: bool = True) -> None:
        self.event = threading.Event()
        self.signals = signals
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if not self.signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.event.is_set():  # a second Ctrl-C: stop now, without waiting for the drain
            raise KeyboardInterrupt
        self.event.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def wait(self) -> None:
        while not self.event.wait(0.5):
            pass


def start(plan: Plan) -> bool:
    """Connect to (or start) the cluster and Serve; whether a local cluster was started."""
    import ray
    from ray import serve

    options = plan.options
    local = options.address is None
    if local:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    else:
        try:
            ray.init(address=options.address, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise DifforgeError(
                f"cannot reach a Ray cluster at {options.address}: {' '.join(str(exc).split())}"
            ) from None
    serve.start(http_options={"host": options.host, "port": options.port})
    return local


def serve_artifact(
    options: ServeOptions, on_ready: Callable[[str, Plan], None], stopper: Stopper
) -> None:
    """Serve until ``stopper`` is set, then drain and stop."""
    import ray
    from ray import serve

    from difforge.serve.rayserve.deployment import application

    plan = check(options)
    local = start(plan)
    stopper.install()
    try:
        if APP_NAME in serve.status().applications:
            raise DifforgeError(
                f"an application named '{APP_NAME}' already runs on this cluster (stop it, or "
                "serve from another cluster)"
            )
        app: Any = application(
            options.artifact,
            replicas=options.replicas,
            threads=plan.threads,
            cpus=plan.cpus,
            max_batch=plan.max_batch,
            batch_wait_s=options.batch_wait_ms / 1000,
            shutdown_timeout_s=options.shutdown_timeout_s,
        )
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # a replica refused to start (the artifact on its node)
            raise DifforgeError(f"the deployment did not start: {_first_line(exc)}") from None
        on_ready(f"http://{options.host}:{options.port}", plan)
        stopper.wait()
        serve.delete(APP_NAME)  # replicas finish their requests in flight, then exit
    finally:
        stopper.restore()
        if local:
            serve.shutdown()
            ray.shutdown()
