"""Soak: thousands of predict requests from concurrent clients while faces come and go.

    .venv/bin/python bench/bench_soak.py [--requests 1500] [--clients 8]

The real predictor (``python -m inference``, KServe's ModelServer) serves a gallery enrolled
through the real enroll handler. After a warm-up, two phases of ``--requests`` each are sent
by ``--clients`` threads (every fourth request V2, the rest V1, each a 320x320 JPEG of one
face), while a churn thread keeps enrolling and removing faces through the enroll handler, so
the predictor rebuilds its gallery snapshot every refresh all along. It reports:

* errors: any non-200 answer, any answer without exactly one face and its matches, any
  exception (must be 0), and the churn's failures (must be 0);
* latency percentiles of each phase side by side (phase 2 / phase 1), and throughput;
* the server's resident memory (RSS) after the warm-up, after N and after 2N requests: it must
  not grow with the request count, so phase 2 may add at most 5% (or 16 MiB, whichever is
  larger) to what phase 1 ended with.

Prints a table and writes ``bench/results/soak.json``; exits 1 when a verdict fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import psutil
import requests
from bench_predict import query_jpeg
from skimage import data as skdata

from facerank.events import ObjectChange, ObjectChangeData, object_event
from facerank.ports import reserved_ports
from facerank.settings import Settings
from facerank.storage import FolderStore
from functions.enroll.handler import EnrollHandler, build_handler

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "soak.json"
IDENTITIES = 12
WARMUP = 100
REFRESH_S = 0.5
READY_TIMEOUT_S = 120
GROWTH_LIMIT = 0.05
GROWTH_FLOOR_MB = 16.0
V2_EVERY = 4


def shots(count: int) -> Iterator[bytes]:
    """Distinct photos of one face (the astronaut): other crops, mirrored, exposures."""
    photo = skdata.astronaut()
    rng = np.random.default_rng(11)
    for i in range(count):
        top, left = rng.integers(0, 40, 2)
        shot = photo[top : top + 440, left : left + 440]
        shot = shot[:, ::-1] if i % 2 else shot
        shot = np.clip(shot.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(shot, cv2.COLOR_RGB2BGR))
        assert ok
        yield jpeg.tobytes()


def deliver(handler: EnrollHandler, kind: ObjectChange, key: str, etag: str = "") -> str:
    event = object_event(kind, "urn:soak", ObjectChangeData("faces", key, etag=etag))
    return handler.handle(event).verdict


@dataclass
class Churn:
    """Enrolls a photo, removes it, and again, until stopped: a gallery that never rests."""

    handler: EnrollHandler
    store: FolderStore
    photo: bytes
    enrolled: int = 0
    removed: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.05):
            key = f"churn-{n % 4}/{n}.jpg"
            etag = self.store.put("faces", key, self.photo).etag
            if (verdict := deliver(self.handler, "created", key, etag)) != "enrolled":
                self.failures.append(f"{key}: {verdict}")
            self.enrolled += 1
            self.store.delete("faces", key)
            if (verdict := deliver(self.handler, "deleted", key)) != "removed":
                self.failures.append(f"{key}: {verdict}")
            self.removed += 1
            n += 1


@dataclass
class Phase:
    latencies_ms: list[float]
    errors: list[str]
    seconds: float

    def summary(self) -> dict[str, float]:
        values = np.array(self.latencies_ms)
        return {
            "requests": len(values) + len(self.errors),
            "errors": len(self.errors),
            "p50_ms": float(np.percentile(values, 50)),
            "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)),
            "max_ms": float(values.max()),
            "throughput_rps": len(values) / self.seconds,
        }


def bodies(jpeg: bytes) -> tuple[bytes, bytes]:
    """The V1 and V2 bodies of one query, encoded once so clients spend no CPU on them."""
    b64 = base64.b64encode(jpeg).decode()
    v1 = {"instances": [{"image": {"b64": b64}, "top_k": 3}]}
    v2 = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}],
        "parameters": {"top_k": 3},
    }
    return json.dumps(v1).encode(), json.dumps(v2).encode()


def check(response: requests.Response, v2: bool) -> str | None:
    """Why an answer is wrong, or None: 200 with one face and three matches."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    reply = response.json()
    if v2:
        outputs = {o["name"]: o["data"] for o in reply["outputs"]}
        faces, matches = len(outputs["confidence"]), len(outputs["identity"])
    else:
        [prediction] = reply["predictions"]
        faces = len(prediction["faces"])
        matches = len(prediction["faces"][0]["matches"]) if faces else 0
    return None if (faces, matches) == (1, 3) else f"{faces} face(s), {matches} match(es)"


def load(url: str, count: int, clients: int, query: tuple[bytes, bytes]) -> Phase:
    """``count`` requests from ``clients`` threads, each with its own session."""
    v1_url, v2_url = f"{url}/v1/models/facerank:predict", f"{url}/v2/models/facerank/infer"
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(share: int, offset: int) -> None:
        with requests.Session() as session:
            for i in range(share):
                v2 = (i + offset) % V2_EVERY == 0
                started = time.perf_counter()
                try:
                    response = session.post(
                        v2_url if v2 else v1_url,
                        data=query[1 if v2 else 0],
                        headers={"Content-Type": "application/json"},
                        timeout=120,
                    )
                    problem = check(response, v2)
                except (requests.RequestException, ValueError, KeyError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - started) * 1e3
                with lock:
                    if problem:
                        errors.append(problem)
                    else:
                        latencies.append(elapsed)

    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, share, i) for i, share in enumerate(shares)]:
            future.result()
    return Phase(latencies, errors, time.perf_counter() - started)


@contextmanager
def predictor(data_dir: Path, log: IO[bytes]) -> Iterator[tuple[str, psutil.Process]]:
    """``python -m inference`` on ``data_dir``, ready; its URL and process."""
    with reserved_ports(2) as [port, grpc_port]:  # held until the predictor is gone
        yield from _predictor(data_dir, log, port, grpc_port)


def _predictor(
    data_dir: Path, log: IO[bytes], port: int, grpc_port: int
) -> Iterator[tuple[str, psutil.Process]]:
    env = {
        **os.environ,
        "FACERANK_DATA_DIR": str(data_dir),
        "FACERANK_GALLERY_REFRESH_S": str(REFRESH_S),
        "FACERANK_LOG_LEVEL": "WARNING",
        "FACERANK_ALIGN": "eyes",
        "PORT": str(port),
        "FACERANK_PREDICTOR_GRPC_PORT": str(grpc_port),  # served as in production, idle
    }
    process = subprocess.Popen([sys.executable, "-m", "inference"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"predictor did not start:\n{log.read().decode()[-3000:]}")
            time.sleep(0.2)
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/v1/models/facerank", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="facerank-soak-") as work,
        tempfile.TemporaryFile() as log,
    ):
        data_dir = Path(work)
        settings = Settings(data_dir=data_dir, model="lbp-v0", align="eyes")
        store = FolderStore(settings.buckets_dir)
        store.ensure_bucket("faces")
        handler = build_handler(settings, store)
        handler.gallery.ensure()
        photos = list(shots(IDENTITIES + 1))
        for i, photo in enumerate(photos[:IDENTITIES]):
            key = f"person-{i}/1.jpg"
            assert (
                deliver(handler, "created", key, store.put("faces", key, photo).etag) == "enrolled"
            )
        query = bodies(query_jpeg())
        churn = Churn(handler, store, photos[IDENTITIES])
        with predictor(data_dir, log) as (url, server):
            warmup = load(url, WARMUP, args.clients, query)
            rss = {"start": rss_mb(server)}
            churn.start()
            first = load(url, args.requests, args.clients, query)
            rss["after_n"] = rss_mb(server)
            second = load(url, args.requests, args.clients, query)
            rss["after_2n"] = rss_mb(server)
            churn.stop()

    phases = {"phase_1": first.summary(), "phase_2": second.summary()}
    errors = len(warmup.errors) + len(first.errors) + len(second.errors)
    growth = rss["after_2n"] - rss["after_n"]
    allowed = max(GROWTH_LIMIT * rss["after_n"], GROWTH_FLOOR_MB)
    verdicts = {
        "zero_errors": errors == 0 and not churn.failures,
        "rss_flat": growth <= allowed,
    }
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "clients": args.clients,
        "requests": {"warmup": WARMUP, "per_phase": args.requests, "measured": 2 * args.requests},
        "v2_share": 1 / V2_EVERY,
        "gallery": {"identities": IDENTITIES, "refresh_s": REFRESH_S},
        "churn": {"enrolled": churn.enrolled, "removed": churn.removed, "failures": churn.failures},
        "errors": errors,
        "error_samples": (warmup.errors + first.errors + second.errors)[:5],
        **phases,
        "p99_ratio_phase2_over_phase1": phases["phase_2"]["p99_ms"] / phases["phase_1"]["p99_ms"],
        "rss_mb": rss,
        "rss_growth_mb_phase2": growth,
        "rss_growth_allowed_mb": allowed,
        "rss_ratio_2n_over_n": rss["after_2n"] / rss["after_n"],
        "verdicts": verdicts,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print(f"{'':<16}{'phase 1':>12}{'phase 2':>12}{'2 / 1':>8}")
    for name in ("requests", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms", "throughput_rps"):
        a, b = phases["phase_1"][name], phases["phase_2"][name]
        print(f"{name:<16}{a:>12.1f}{b:>12.1f}{(b / a if a else 0):>8.2f}")
    print(
        f"RSS MiB: start {rss['start']:.1f}, after {args.requests} {rss['after_n']:.1f}, "
        f"after {2 * args.requests} {rss['after_2n']:.1f} "
        f"(2N / N = {report['rss_ratio_2n_over_n']:.3f}, "
        f"phase 2 added {growth:+.1f}, allowed {allowed:.1f})"
    )
    print(
        f"churn: {churn.enrolled} enrolled, {churn.removed} removed, {len(churn.failures)} failed"
    )
    print(f"verdicts: {verdicts}; wrote {RESULTS}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
