"""`difforge serve`'s bad options: one line and exit 2, before any cluster starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.cli.test_errors import assert_user_error, difforge
from tests.digits_artifacts import shared_digits_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_digits_artifact(tmp_path_factory, "digits-unet")


def test_a_missing_artifact(tmp_path: Path) -> None:
    assert_user_error(difforge("serve", str(tmp_path / "nope")), "nope")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (("--max-batch", "64"), "takes 1 to 8 images per call"),
        (("--max-batch", "0"), "takes 1 to 8 images per call"),
        (("--replicas", "0"), "--replicas must be at least 1"),
        (("--port", "70000"), "--port must be between 1 and 65535"),
        (("--batch-wait-ms", "-1"), "--batch-wait-ms must be 0 or more"),
        (("--threads", "0"), "--threads must be at least 1"),
        (("--shutdown-timeout", "-1"), "--shutdown-timeout must be 0 or more"),
    ],
)
def test_bad_options(artifact: Path, options: tuple[str, ...], needle: str) -> None:
    assert_user_error(difforge("serve", str(artifact), *options), needle)


def test_a_port_in_use(artifact: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = difforge("serve", str(artifact), "--port", str(port))
    assert_user_error(done, f"port {port} on 127.0.0.1 is in use")


def test_an_unreachable_cluster(artifact: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    done = difforge("serve", str(artifact), "--address", f"127.0.0.1:{port}", timeout=200)
    assert_user_error(done, f"cannot reach a Ray cluster at 127.0.0.1:{port}")
