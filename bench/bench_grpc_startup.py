"""Predictor start-up with and without gRPC: does serving V2 over gRPC cost start-up time?

    .venv/bin/python bench/bench_grpc_startup.py [--rounds N]

``facerank up`` serves gRPC by default unless that costs start-up time one can measure. Each
round starts ``python -m inference`` twice on the same empty folder store (lbp-v0 and Haar: an
empty model cache and gallery, the fastest start and so the strictest baseline), once
with ``FACERANK_PREDICTOR_GRPC_PORT=0`` and once with a free port, in alternating order (ABBA),
and times spawn to ready: REST ``GET /v1/models/facerank`` answering 200, and with gRPC also
``ServerReady`` answering true over gRPC. Prints the medians and the ratio of the paired
rounds with its spread, and writes ``bench/results/grpc_startup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from kserve.inference_client import InferenceGRPCClient
from sidebyside import Ratio

from facerank.ports import reserved_ports

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "grpc_startup.json"
READY_S = 120.0
POLL_S = 0.02


def rest_ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/v1/models/facerank", timeout=1).ok
    except requests.RequestException:
        return False


def grpc_ready(port: int) -> bool:
    async def ask() -> bool:
        async with InferenceGRPCClient(f"127.0.0.1:{port}", retries=0, timeout=1) as client:
            return bool(await client.is_server_ready())

    try:
        return asyncio.run(ask())
    except Exception:  # not listening yet: any failure means "not ready"
        return False


def start_to_ready(data_dir: Path, cache_dir: Path, *, grpc: bool) -> float:
    """Seconds from spawning the predictor to every port it serves answering ready."""
    with reserved_ports(2) as [port, grpc_port]:  # held until the predictor is gone
        return _start_to_ready(data_dir, cache_dir, port, grpc_port if grpc else 0)


def _start_to_ready(data_dir: Path, cache_dir: Path, port: int, grpc_port: int) -> float:
    grpc = grpc_port != 0
    env = {
        **os.environ,
        "FACERANK_DATA_DIR": str(data_dir),
        "FACERANK_CACHE_DIR": str(cache_dir),
        "FACERANK_LOG_LEVEL": "WARNING",
        "FACERANK_PREDICTOR_GRPC_PORT": str(grpc_port),
        "PORT": str(port),
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "inference"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (rest_ready(port) and (not grpc or grpc_ready(grpc_port))):
            if process.poll() is not None:
                raise RuntimeError(f"the predictor exited with {process.returncode}")
            if time.perf_counter() - started > READY_S:
                raise RuntimeError(f"the predictor was not ready in {READY_S:.0f} s")
            time.sleep(POLL_S)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="paired starts (ABBA order)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpc-startup-") as scratch:
        data_dir, cache_dir = Path(scratch) / "data", Path(scratch) / "cache"
        cache_dir.mkdir()
        start_to_ready(data_dir, cache_dir, grpc=True)  # warm the file cache for both
        samples: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for grpc in (True, False) if r % 2 == 0 else (False, True):
                samples[grpc].append(start_to_ready(data_dir, cache_dir, grpc=grpc))
                print(f"round {r + 1}: gRPC {'on ' if grpc else 'off'} {samples[grpc][-1]:.2f} s")
    # baseline / ours, above 1 when starting with gRPC is faster: "no measurable difference"
    # when the spread of the paired rounds includes 1.
    ratio = Ratio.of(samples[True], samples[False])
    results = {
        "what": "python -m inference, spawn to ready (REST readiness; with gRPC also gRPC "
        "ServerReady), lbp-v0 + Haar, empty gallery",
        "with_grpc_s": statistics.median(samples[True]),
        "without_grpc_s": statistics.median(samples[False]),
        "samples_s": {"with_grpc": samples[True], "without_grpc": samples[False]},
        "without_over_with": ratio.to_json(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(
        f"start to ready: with gRPC {results['with_grpc_s']:.2f} s, without "
        f"{results['without_grpc_s']:.2f} s (medians of {args.rounds}); "
        f"without/with: {ratio.verdict}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
