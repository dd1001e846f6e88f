"""Predictor benchmark: facerank's search against a NumPy brute-force scan, end to end over HTTP.

    .venv/bin/python bench/bench_predict.py [--quick] [--rounds N] [--seconds S]

For galleries of 1k, 100k and 1M faces (``--quick``: 1k and 100k, shorter cells) prints
predict latency (p50, p99) and throughput at 1, 4 and 16 concurrent clients, and writes
``bench/results/predict.json``. Each client is a thread with its own ``requests.Session``
posting V1 requests carrying a real 320x320 JPEG face photo (scikit-image's astronaut), so
decoding, detection, embedding, search and HTTP all count.

Two servers per gallery size, each the real KServe ModelServer (``bench/predict_server.py``):
one with ``inference.search.search``, one with the naive scan of
:func:`predict_server.brute_force_search` in its place; same gallery, same requests. Every
cell alternates them in rounds (ABBA order) so background load hits both alike, and the
latencies of all rounds are pooled. Search alone, in this process without HTTP, is timed per
size too: detection dominates small galleries end to end, and that figure shows the ratio the
search step itself achieves.

Why synthetic 128-D: see ``predict_server.py``; the gallery is seeded unit vectors,
:data:`~predict_server.FACES_PER_IDENTITY` faces per identity, and the figures say so.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import requests
from predict_server import (
    DIM,
    FACES_PER_IDENTITY,
    MODEL_VERSION,
    SEED,
    brute_force_search,
    synthetic_index,
)
from sidebyside import Ratio, time_pair
from skimage import data as skdata

from facerank.embedding.lbp import LBP_MATCH_THRESHOLD
from facerank.ports import reserve_port, reserved_port
from inference.search import GalleryIndex, search

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "predict.json"
SERVER_SCRIPT = HERE / "predict_server.py"
SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
CLIENTS = (1, 4, 16)
TOP_K = 3
CONTENDERS = ("facerank", "brute")
"""Server names as ``predict_server.py --search`` spells them, facerank first."""
READY_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 120


def query_jpeg() -> bytes:
    """The astronaut photo (one face) downscaled to 320x320: a small, realistic upload."""
    small = cv2.resize(skdata.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


def v1_body(jpeg: bytes) -> bytes:
    """Encoded once: clients only send bytes, so the bench's own CPU use stays small."""
    instance = {"image": {"b64": base64.b64encode(jpeg).decode()}, "top_k": TOP_K}
    return json.dumps({"instances": [instance]}).encode()


# --- search alone --------------------------------------------------------------------------


def bench_search_only(index: GalleryIndex, repeat: int) -> dict[str, float]:
    """Median ms of one single-face query through each search, after checking they agree.

    The query is a perturbed gallery face, so it has a real nearest identity as in use.
    """
    rng = np.random.default_rng(SEED + 1)
    noisy = index.vectors[rng.integers(len(index))] + rng.normal(0, 0.02, DIM)
    query = (noisy / np.linalg.norm(noisy)).astype(np.float32)[None, :]
    [ours] = search(index, query, TOP_K, LBP_MATCH_THRESHOLD)
    [naive] = brute_force_search(index, query, TOP_K, LBP_MATCH_THRESHOLD)
    # Same faces, same order; distances agree to float32 rounding (GEMM and GEMV sum apart).
    assert [(m.identity, m.face_id) for m in ours] == [(m.identity, m.face_id) for m in naive]
    assert np.allclose([m.distance for m in ours], [m.distance for m in naive], atol=1e-5)
    timing = time_pair(
        lambda: search(index, query, TOP_K, LBP_MATCH_THRESHOLD),
        lambda: brute_force_search(index, query, TOP_K, LBP_MATCH_THRESHOLD),
        repeat,
    )
    return {
        "repeat": repeat,
        "facerank_ms": timing.ours_s * 1e3,
        "brute_ms": timing.baseline_s * 1e3,
        **timing.ratio.to_json(),
    }


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """One ``predict_server.py`` subprocess and where to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: IO[bytes]

    @property
    def predict_url(self) -> str:
        return f"{self.url}/v1/models/facerank:predict"

    def ready(self) -> bool:
        if self.process.poll() is not None:
            self.log.seek(0)
            raise RuntimeError(f"{self.name} server exited:\n{self.log.read().decode()[-4000:]}")
        try:
            return requests.get(f"{self.url}/v1/models/facerank", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the server process so far (Linux ``VmHWM``)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
        return int(line.split()[1]) / 1024


@contextmanager
def running_servers(faces: int) -> Iterator[dict[str, Server]]:
    """Both servers over a ``faces``-face gallery, ready; stopped (and logs removed) after."""
    with ExitStack() as stack:
        servers = {}
        for name in CONTENDERS:
            port = reserved_port(stack.enter_context(reserve_port()))  # held while it runs
            log = stack.enter_context(tempfile.TemporaryFile())
            command = [sys.executable, str(SERVER_SCRIPT), "--faces", str(faces)]
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
                [*command, "--search", name, "--port", str(port)], stdout=log, stderr=log
            )
            stack.callback(stop, process)
            servers[name] = Server(name, process, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all([server.ready() for server in servers.values()]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"servers not ready within {READY_TIMEOUT_S} s")
            time.sleep(0.5)
        yield servers


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- load --------------------------------------------------------------------------------------


def post(session: requests.Session, url: str, body: bytes) -> None:
    """One predict; anything but one face with ``TOP_K`` matches aborts the benchmark."""
    response = session.post(
        url, data=body, headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S
    )
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:500]}")
    [prediction] = response.json()["predictions"]
    faces = prediction["faces"]
    if prediction["model_version"] != MODEL_VERSION or len(faces) != 1:
        raise RuntimeError(f"{url}: unexpected prediction {prediction}")
    if len(faces[0]["matches"]) != TOP_K:
        raise RuntimeError(f"{url}: expected {TOP_K} matches, got {faces[0]['matches']}")


def drive(url: str, body: bytes, clients: int, seconds: float) -> tuple[list[float], float]:
    """Latencies (s) of every request ``clients`` closed-loop clients completed, and the wall
    time until the last one returned; requests started before the deadline all count."""

    def client() -> list[float]:
        latencies = []
        with requests.Session() as session:
            while (started := time.perf_counter()) < deadline:
                post(session, url, body)
                latencies.append(time.perf_counter() - started)
        return latencies

    begin = time.perf_counter()
    deadline = begin + seconds
    with ThreadPoolExecutor(clients) as pool:
        per_client = list(pool.map(lambda _: client(), range(clients)))
    wall = time.perf_counter() - begin
    return [latency for latencies in per_client for latency in latencies], wall


def measure_cell(
    servers: dict[str, Server], body: bytes, clients: int, rounds: int, seconds: float
) -> dict[str, Any]:
    """Both servers under ``clients`` clients, alternated ABBA over ``rounds`` rounds."""
    latencies: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    elapsed = dict.fromkeys(CONTENDERS, 0.0)
    round_p50: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    round_cost: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    """Per round: median latency, and wall seconds per request (less is better for both)."""
    for round_ in range(rounds):
        for name in CONTENDERS if round_ % 2 == 0 else CONTENDERS[::-1]:
            done, wall = drive(servers[name].predict_url, body, clients, seconds)
            latencies[name].extend(done)
            elapsed[name] += wall
            round_p50[name].append(float(np.median(done)))
            round_cost[name].append(wall / len(done))
    cell: dict[str, Any] = {"clients": clients}
    for name in CONTENDERS:
        p50, p99 = np.percentile(latencies[name], [50, 99]) * 1e3
        cell[name] = {
            "requests": len(latencies[name]),
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "req_per_s": len(latencies[name]) / elapsed[name],
        }
    cell["p50_speedup"] = cell["brute"]["p50_ms"] / cell["facerank"]["p50_ms"]
    cell["req_per_s_speedup"] = cell["facerank"]["req_per_s"] / cell["brute"]["req_per_s"]
    # The spread of the per-round ratios: a speed-up inside it is no measurable difference.
    cell["p50_speedup_rounds"] = Ratio.of(round_p50["facerank"], round_p50["brute"]).to_json()
    cell["req_per_s_speedup_rounds"] = Ratio.of(
        round_cost["facerank"], round_cost["brute"]
    ).to_json()
    return cell


# --- one gallery size ---------------------------------------------------------------------


def bench_size(faces: int, body: bytes, rounds: int, seconds: float) -> dict[str, Any]:
    """Search-only figures in this process, then the end-to-end cells through both servers.

    The in-process index is dropped before the servers start, so at most two galleries (one
    per server) are in memory at once.
    """
    started = time.perf_counter()
    index = synthetic_index(faces)
    build_s = time.perf_counter() - started
    identities = len(index.names)
    search_only = bench_search_only(index, repeat=max(10, min(200, 20_000_000 // faces)))
    del index
    started = time.perf_counter()
    with running_servers(faces) as servers:
        ready_s = time.perf_counter() - started
        for server in servers.values():  # warm-up: first-request costs out of the figures
            with requests.Session() as session:
                for _ in range(3):
                    post(session, server.predict_url, body)
        cells = [measure_cell(servers, body, n, rounds, seconds) for n in CLIENTS]
        peaks = {name: server.peak_rss_mb() for name, server in servers.items()}
    return {
        "faces": faces,
        "identities": identities,
        "index_build_s": build_s,
        "servers_ready_s": ready_s,
        "search_only": search_only,
        "cells": cells,
        "server_peak_rss_mb": peaks,
    }


def print_size(result: dict[str, Any]) -> None:
    only = result["search_only"]
    print(
        f"\n{result['faces']:,} faces ({result['identities']:,} identities): index build "
        f"{result['index_build_s']:.1f} s, both servers ready in {result['servers_ready_s']:.1f} s"
    )
    print(
        f"  search only, 1 query, median of {only['repeat']}: facerank {only['facerank_ms']:.2f}"
        f" ms, brute force {only['brute_ms']:.2f} ms ({only['verdict']})"
    )
    print(
        f"  {'clients':>7} | {'facerank p50':>12} {'p99 ms':>8} {'req/s':>7} | "
        f"{'brute p50':>9} {'p99 ms':>8} {'req/s':>7} | {'p50 x':>6} {'req/s x':>7}"
    )
    for cell in result["cells"]:
        ours, naive = cell["facerank"], cell["brute"]
        print(
            f"  {cell['clients']:>7} | {ours['p50_ms']:>12.1f} {ours['p99_ms']:>8.1f} "
            f"{ours['req_per_s']:>7.1f} | {naive['p50_ms']:>9.1f} {naive['p99_ms']:>8.1f} "
            f"{naive['req_per_s']:>7.1f} | {cell['p50_speedup']:>6.2f} "
            f"{cell['req_per_s_speedup']:>7.2f}  p50 per round: "
            f"{cell['p50_speedup_rounds']['verdict']}"
        )


def peak_rss_self_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 100k faces, short cells")
    parser.add_argument("--rounds", type=int, help="ABBA rounds per cell (default 4, quick 2)")
    parser.add_argument("--seconds", type=float, help="load per server per round (default 4)")
    parser.add_argument("--sizes", type=int, nargs="+", help="gallery sizes instead (smoke test)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 4)
    seconds = args.seconds or (1.5 if args.quick else 4.0)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    jpeg = query_jpeg()
    body = v1_body(jpeg)
    print(
        f"synthetic gallery: seeded {DIM}-D unit vectors, {FACES_PER_IDENTITY} faces per "
        f"identity; query: one {len(jpeg):,}-byte 320x320 JPEG (1 face), V1, top_k={TOP_K}; "
        f"{rounds} ABBA rounds x {seconds:g} s per server per cell"
    )
    load_before = os.getloadavg()
    runs = []
    for faces in sizes:
        runs.append(bench_size(faces, body, rounds, seconds))
        print_size(runs[-1])
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "kserve": version("kserve"),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "gallery": {
            "synthetic": True,
            "dim": DIM,
            "faces_per_identity": FACES_PER_IDENTITY,
            "seed": SEED,
            "sizes": list(sizes),
            "embedder": f"{MODEL_VERSION}: lbp-v0 projected to {DIM}-D by a seeded matrix",
        },
        "query": {
            "image": "skimage astronaut, 320x320 JPEG",
            "bytes": len(jpeg),
            "protocol": "v1",
            "top_k": TOP_K,
        },
        "method": {
            "clients": list(CLIENTS),
            "rounds": rounds,
            "seconds_per_round": seconds,
            "brute": "dot product, full argsort, Python loop until top_k distinct identities",
        },
        "bench_peak_rss_mb": peak_rss_self_mb(),
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nbench process peak RSS {results['bench_peak_rss_mb']:,.0f} MB; "
        f"load average {load_before[0]:.2f} -> {results['machine']['loadavg_after'][0]:.2f}"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
