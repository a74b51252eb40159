"""Load and fault test of ``difforge serve`` on loopback (bounded in requests and time).

    python scripts/serve_load.py [--artifact ART] [--requests 48] [--concurrency 8]
                                 [--steps 20] [--out docs/perf.md]

Without ``--artifact`` the digits U-Net (models/digits-unet) is compiled into a temporary
folder first. Then, each on a fresh ``difforge serve`` (a local Ray cluster):

- **baseline**: the runtime in-process, one request after another (which also makes the
  reference images);
- **load**: 1 and 2 replicas, batching off (``--max-batch 1``) and on (the artifact's
  default), ``--requests`` requests from ``--concurrency`` client threads; throughput, p50 and
  p99 latency, errors, and whether every image equals the one the runtime makes in-process
  for the same class and seed (byte for byte);
- **fault**: 2 replicas with batching, one replica killed (SIGKILL) once a third of the
  requests are answered; clients retry a failed request with the same body (the seed makes it
  idempotent). Reported: requests answered, lost (none, or the goal is missed), retries,
  identical images, and how long Ray Serve took to start a replacement replica.

The results go to stdout as a markdown block (and between the ``serve:`` markers of ``--out``
when given), with the machine and its CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
REPLICA = "ServeReplica:difforge:difforge"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``difforge serve`` in a subprocess, ready when it prints its URL."""

    def __init__(self, artifact: Path, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/generate"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "difforge", "serve", str(artifact), "--port",
             str(self.port), *options],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV,
        )
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().startswith("ready "):
            self.proc.kill()
            raise SystemExit("difforge serve did not start")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=180)
        return self.proc.returncode


def replicas() -> list[int]:
    done = subprocess.run(["pgrep", "-f", REPLICA], capture_output=True, text=True)
    return sorted(int(p) for p in done.stdout.split())


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    retries: int = 0
    mismatched: int = 0
    batches: list[int] = field(default_factory=list)


def post(url: str, body: bytes) -> tuple[int, bytes, int]:
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.read(), int(resp.headers.get("x-difforge-batch", "0"))
    except urllib.error.HTTPError as err:
        return err.code, err.read(), 0
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b"", 0


def load(url: str, bodies: list[bytes], expected: list[bytes], concurrency: int,
         retries: int, on_answer: Callable[[int], None] | None = None) -> tuple[Outcome, float]:
    outcome = Outcome()
    lock = threading.Lock()
    answered = [0]

    def client(i: int) -> None:
        start = time.perf_counter()
        for attempt in range(retries + 1):
            status, png, batch = post(url, bodies[i])
            if status == 200 or 400 <= status < 500:
                break
            time.sleep(0.5)
            with lock:
                outcome.retries += attempt < retries
        with lock:
            outcome.latencies.append(time.perf_counter() - start)
            outcome.errors += status != 200
            outcome.mismatched += status == 200 and png != expected[i]
            outcome.batches.append(batch)
            answered[0] += 1
            count = answered[0]
        if on_answer is not None:
            on_answer(count)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(len(bodies))))
    return outcome, time.perf_counter() - start


def compile_digits(work: Path) -> Path:
    out = work / "digits"
    subprocess.run(
        [sys.executable, "-m", "difforge", "compile", "--model", str(ROOT / "models/digits-unet"),
         "-o", str(out), "--max-batch", "4", "-q"], check=True, env=ENV,
    )
    return out


def references(artifact: Path, asks: list[dict]) -> list[bytes]:
    from difforge.runtime import GenerateRequest
    from difforge.runtime import load as load_artifact
    from difforge.runtime.image import encode_image

    pipe = load_artifact(artifact)
    return [encode_image(pipe(GenerateRequest(**ask)).images[0]) for ask in asks]


def run(args: argparse.Namespace, artifact: Path) -> str:
    from difforge.profile.machine import describe_machine, flag_summary
    from difforge.profile.stats import summarize

    asks = [{"class_label": i % 10, "seed": i, "steps": args.steps}
            for i in range(args.requests)]
    bodies = [json.dumps(ask).encode() for ask in asks]
    start = time.perf_counter()
    expected = references(artifact, asks)
    alone = time.perf_counter() - start  # the baseline: the runtime in-process, one by one
    rows = []
    for count in (1, 2):
        for batching in (False, True):
            threads = str(max(1, (os.cpu_count() or 1) // count))
            options = ["--replicas", str(count), "--threads", threads]
            options += [] if batching else ["--max-batch", "1"]
            server = Server(artifact, *options)
            outcome, wall = load(server.url, bodies, expected, args.concurrency, retries=0)
            server.stop()
            rows.append((count, batching, outcome, wall))
            print(f"{count} replica(s), batching {'on' if batching else 'off'}: "
                  f"{len(bodies) / wall:.2f} req/s", file=sys.stderr)
    fault = run_fault(artifact, bodies, expected, args.concurrency)
    machine = describe_machine(0)
    lines = [
        f"Measured {date.today()} by `scripts/serve_load.py` on `models/digits-unet` (32x32, "
        f"{args.steps} steps, one image per request; {args.requests} requests from "
        f"{args.concurrency} client threads on loopback; each replica "
        f"{max(1, (os.cpu_count() or 1) // 2)}-{os.cpu_count()} intra-op threads, the cores "
        f"shared among replicas): {machine['cpu_model']}, {machine['logical_cpus']} logical "
        f"CPUs, flags {flag_summary(machine)}.",
        "",
        "| replicas | batching | requests | throughput (req/s) | p50 (s) | p99 (s) | mean batch "
        "| errors | images equal to the runtime's |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
        f"| — (the runtime in-process, one request after another, no server) | — | "
        f"{len(bodies)} | {len(bodies) / alone:.2f} | — | — | 1.0 | 0 | (the reference) |",
    ]
    for count, batching, outcome, wall in rows:
        latency = summarize(outcome.latencies)
        lines.append(
            f"| {count} | {'on' if batching else 'off'} | {len(bodies)} | "
            f"{len(bodies) / wall:.2f} | {latency['p50']:.3f} | "
            f"{latency['p99']:.3f} | {statistics.mean(outcome.batches):.1f} "
            f"| {outcome.errors} | {len(bodies) - outcome.mismatched - outcome.errors}"
            f"/{len(bodies)} |"
        )
    lines += ["", fault]
    return "\n".join(lines)


def run_fault(artifact: Path, bodies: list[bytes], expected: list[bytes], concurrency: int
              ) -> str:
    from difforge.profile.stats import summarize

    server = Server(artifact, "--replicas", "2", "--threads", "1")
    before = replicas()
    killed: dict[str, float | int] = {}

    def kill_one(answered: int) -> None:
        if answered == len(bodies) // 3 and not killed and before:
            os.kill(before[0], signal.SIGKILL)
            killed.update(pid=before[0], at=time.perf_counter())

    outcome, wall = load(server.url, bodies, expected, concurrency, retries=8,
                         on_answer=kill_one)
    replaced = None
    while killed and time.perf_counter() - float(killed["at"]) < 120:
        now = replicas()
        if len(now) == len(before) and killed["pid"] not in now:
            replaced = time.perf_counter() - float(killed["at"])
            break
        time.sleep(0.25)
    code = server.stop()
    lost = outcome.errors
    identical = len(bodies) - outcome.mismatched - outcome.errors
    return (
        f"Fault test: 2 replicas with batching, replica pid {killed.get('pid')} killed (SIGKILL) "
        f"after {len(bodies) // 3} of {len(bodies)} answers; clients retry a failed request "
        f"with the same body. **{len(bodies) - lost} of {len(bodies)} answered, {lost} lost**, "
        f"{outcome.retries} retries, {identical}/{len(bodies)} images identical to the "
        f"runtime's; throughput {len(bodies) / wall:.2f} req/s, p99 "
        f"{summarize(outcome.latencies)['p99']:.2f} s; replacement replica up "
        + (f"{replaced:.1f} s after the kill" if replaced is not None else "**not seen**")
        + f"; the server then stopped with exit code {code}."
    )


def write_block(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    begin, end = "<!-- serve:begin -->", "<!-- serve:end -->"
    if begin not in text:
        raise SystemExit(f"{path} has no {begin} marker")
    head, rest = text.split(begin, 1)
    path.write_text(f"{head}{begin}\n{block}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        artifact = args.artifact or compile_digits(Path(work))
        block = run(args, artifact)
    print(block)
    if args.out:
        write_block(args.out, block)


if __name__ == "__main__":
    main()
