"""`difforge serve` for real: the CLI starts a local Ray cluster and Serve, and answers HTTP on
loopback. Images are compared with `difforge run` byte for byte; bad requests get 4xx and the
replica keeps serving; SIGTERM lets a request in flight finish. The last test serves on an
existing cluster (`ray start --head`, then `--address`)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difforge.runtime import GenerateRequest, load
from difforge.runtime.image import encode_image
from tests.digits_artifacts import shared_digits_artifact

pytestmark = pytest.mark.slow

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, artifact: Path, *options: str, env: dict[str, str] = ENV) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "difforge", "serve", str(artifact), "--port", str(self.port),
             *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until ready (or the process ends)
        if not line.startswith("ready "):
            self.proc.kill()
            pytest.fail(f"difforge serve did not start: {line!r} {self.proc.stderr.read()}")
        assert line.split()[1] == self.url

    def stop(self, timeout: float = 120) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


def call(url: str, body: Any = None, method: str = "POST", raw: bytes | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_digits_artifact(tmp_path_factory, "digits-unet")


@pytest.fixture(scope="module")
def server(artifact: Path) -> Iterator[Server]:
    running = Server(artifact, "--max-batch", "4", "--batch-wait-ms", "300")
    yield running
    if running.proc.poll() is None:
        running.stop()


def test_health_and_readiness(server: Server) -> None:
    assert call(server.url + "/health", method="GET")[:1] == (200,)
    status, _, body = call(server.url + "/ready", method="GET")
    info = json.loads(body)
    assert status == 200 and info["status"] == "ready" and info["max_batch"] == 4
    assert info["conditioning"] == "class_label"


def test_an_image_equals_difforge_run_byte_for_byte(
    server: Server, artifact: Path, tmp_path: Path
) -> None:
    status, headers, png = call(server.url + "/generate", {"class_label": 4, "seed": 21,
                                                           "steps": 8})
    assert status == 200 and headers["content-type"] == "image/png"
    out = tmp_path / "run.png"
    subprocess.run(
        [sys.executable, "-m", "difforge", "run", str(artifact), "--class-label", "4",
         "--seed", "21", "--steps", "8", "--out", str(out), "-q"],
        check=True, env=ENV, capture_output=True,
    )
    assert png == out.read_bytes()
    assert len(headers["x-request-id"]) >= 16
    stages = {part.split(";")[0] for part in headers["server-timing"].split(", ")}
    assert {"queue", "denoiser", "total"} <= stages
    status, _, body = call(server.url + "/generate", {"class_label": 4, "seed": 21, "steps": 8,
                                                      "output": "json"})
    data = json.loads(body)
    assert status == 200 and data["request"]["seed"] == 21 and data["timings"]["total"] > 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"prompt": "a cat"}, 422, "prompt"),
        ({"class_label": "four"}, 400, "class_label"),
        ({"resolution": 4096}, 422, "height"),
        ({"images": 9}, 422, "images"),
        ({"colour": 1}, 400, "colour"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(
    server: Server, body: dict, status: int, field: str
) -> None:
    got, _, answer = call(server.url + "/generate", body)
    error = json.loads(answer)
    assert (got, error["field"]) == (status, field) and "\n" not in error["error"]


def test_bad_bodies_and_routes_leave_the_replica_serving(server: Server) -> None:
    assert call(server.url + "/generate", raw=b"{oops")[0] == 400
    assert call(server.url + "/generate", raw=b"x" * (1 << 20))[0] == 413
    assert call(server.url + "/generate", method="GET")[0] == 405
    assert call(server.url + "/nowhere", method="GET")[0] == 404
    status, _, png = call(server.url + "/generate", {"class_label": 1, "steps": 3})
    assert status == 200 and png.startswith(b"\x89PNG")


def test_concurrent_clients_are_batched_each_with_its_seed(server: Server, artifact: Path) -> None:
    asks = [(label, 100 + label) for label in range(4)]
    replies: dict[int, tuple[int, dict[str, str], bytes]] = {}

    def client(label: int, seed: int) -> None:
        replies[label] = call(server.url + "/generate", {"class_label": label, "seed": seed,
                                                         "steps": 6})

    threads = [threading.Thread(target=client, args=ask) for ask in asks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    batches = [int(replies[label][1]["x-difforge-batch"]) for label, _ in asks]
    assert max(batches) > 1, batches  # the 300 ms window gathered clients into one call
    pipe = load(artifact)
    for label, seed in asks:
        alone = pipe(GenerateRequest(class_label=label, seed=seed, steps=6)).images[0]
        assert replies[label][0] == 200
        assert replies[label][2] == encode_image(alone)


def test_sigterm_finishes_the_request_in_flight(server: Server) -> None:
    slow: dict[str, Any] = {}
    body = {"class_label": 2, "resolution": 64, "images": 4, "steps": 120}
    thread = threading.Thread(target=lambda: slow.update(reply=call(server.url + "/generate",
                                                                   body)))
    thread.start()
    time.sleep(1.5)  # the request is in the replica
    code, err = server.stop()
    thread.join(timeout=120)
    status, _, png = slow["reply"]
    assert status == 200 and png.startswith(b"\x89PNG"), (status, png[:200])
    assert code == 0, err[-2000:]
    assert "stopped (requests in flight had up to 60 s to finish)" in err


def test_serves_on_an_existing_cluster(artifact: Path) -> None:
    head = free_port()
    # the cluster's token, shared by its nodes and clients (Ray's token authentication)
    env = {**ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    subprocess.run(
        [RAY, "start", "--head", f"--port={head}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=180,
    )
    try:
        server = Server(artifact, "--address", f"127.0.0.1:{head}", "--replicas", "2",
                        "--threads", "1", env=env)
        status, _, png = call(server.url + "/generate", {"class_label": 5, "seed": 3, "steps": 4})
        pipe = load(artifact)
        assert status == 200
        alone = pipe(GenerateRequest(class_label=5, seed=3, steps=4)).images[0]
        assert png == encode_image(alone)
        code, err = server.stop()
        assert code == 0, err[-2000:]
        # the cluster was not ours: it is still up
        alive = subprocess.run([RAY, "status", f"--address=127.0.0.1:{head}"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert alive.returncode == 0, alive.stderr
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)


def test_the_byte_comparison_sees_one_pixel() -> None:
    """Not vacuous: the encoder gives different bytes for different pixels."""
    a = np.zeros((4, 4, 1), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert encode_image(a) != encode_image(b)
