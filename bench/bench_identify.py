"""Identify on upload under ``facerank up``, end to end: accuracy, strangers, groups, latency.

    .venv/bin/python bench/bench_identify.py [--datasets att,lfw] [--latency-photos 100]
        [--att-people 40] [--att-photos 10]

Development data only (``../shared/data``), never committed. For each data set, a fresh
``facerank up`` (the pretrained descriptor from the user's model cache, every component its own
process) is given:

* AT&T (40 people x 10): photos 1-5 of s1-s20 dropped into ``faces/<person>/``; photos 6-10 of
  all 40 people dropped into the queries bucket (``--att-people`` and ``--att-photos`` take
  fewer, halved the same way: a smoke run's sizes, never a figure to quote);
* LFW View 1: it has nobody with 10 photos (8 at most), so people with at least 6 are taken,
  sorted by name: the first half enrolled with their first 3 photos, every later photo of
  everyone (enrolled or not) is a query.

Query photos are dropped one at a time, each only after the previous one's answer arrived, so
the latency is the unloaded time from the photo landing in the bucket folder to its
``face.identified`` event reaching a webhook (through the notify function, filter ``*``);
refused photos answer with a result holding an error and no event. From the results beside
the photos and the unknown groups it reports:

* identification accuracy: enrolled people's query photos whose largest face matched the right
  identity (no face, a wrong identity or no match count as failures);
* false matches: never-enrolled people's query photos where any face matched an identity, with
  the gallery size (identities) it was measured at;
* the unknown groups' pairwise precision and recall against the true people, over the faces
  kept as unknown;
* latency p50 / p95 over the first ``--latency-photos`` identified photos;
* the same accuracy and false matches at the model's pair threshold and at the open-set
  threshold the predictor derives for that gallery (``facerank/openset.py``), both computed
  from each query's nearest identities in the same run.

Writes ``bench/results/identify.json``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, request
from PIL import Image
from werkzeug.serving import make_server

from facerank.gallery import Gallery
from facerank.openset import open_set_threshold
from facerank.ports import reserved_ports
from facerank.queries import result_key
from facerank.registry import ModelRegistry, ServingModels
from facerank.settings import Settings
from facerank.storage import FolderStore
from facerank.unknown import UnknownFaces

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("FACERANK_BENCH_DATA") or ROOT.parent / "shared" / "data")
"""``../shared/data`` beside the checkout; ``FACERANK_BENCH_DATA`` names it elsewhere."""
RESULTS = ROOT / "bench" / "results" / "identify.json"
PORTS = ("BROKER", "SOURCE", "ENROLL", "IDENTIFY", "NOTIFY", "RETRAIN", "PREDICTOR", "WEB")
PORTS += ("PREDICTOR_GRPC",)
ANSWER_TIMEOUT_S = 120.0
REFUSED_POLL_S = 0.1


@dataclass(frozen=True)
class Photo:
    person: str
    path: Path
    name: str
    """The file name it gets in the bucket (AT&T's PGM files become PNG)."""


@dataclass(frozen=True)
class Split:
    name: str
    enrolled: list[Photo]
    queries: list[Photo]

    @property
    def people_enrolled(self) -> set[str]:
        return {p.person for p in self.enrolled}


def att_split(people: int = 40, photos: int = 10) -> Split:
    """The first half of ``people`` enrolled with the first half of their ``photos``."""
    root = DATA / "att_faces"
    enrolled, queries = [], []
    for number in range(1, people + 1):
        person = f"s{number}"
        for index in range(1, photos + 1):
            photo = Photo(person, root / person / f"{index:02d}.pgm", f"{index:02d}.png")
            if index <= photos // 2 and number <= people // 2:
                enrolled.append(photo)
            elif index > photos // 2:
                queries.append(photo)
    return Split("att", enrolled, queries)


def lfw_split(min_photos: int = 6, enrolled_photos: int = 3) -> Split:
    root = DATA / "lfw_view1" / "images"
    people = sorted(p for p in root.iterdir() if len(list(p.glob("*.jpg"))) >= min_photos)
    enrolled, queries = [], []
    for rank, folder in enumerate(people):
        files = sorted(folder.glob("*.jpg"))
        for index, path in enumerate(files):
            photo = Photo(folder.name, path, path.name)
            if index < enrolled_photos and rank < len(people) // 2:
                enrolled.append(photo)
            elif index >= enrolled_photos:
                queries.append(photo)
    return Split("lfw", enrolled, queries)


def photo_bytes(photo: Photo) -> bytes:
    """The file as dropped: PGM re-encoded as PNG (what a person would upload)."""
    if photo.path.suffix != ".pgm":
        return photo.path.read_bytes()
    buffer = io.BytesIO()
    Image.open(photo.path).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


# --- the running system ------------------------------------------------------------------


class Webhook:
    """Records when each notified photo key arrived, and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Condition()

    def app(self) -> Flask:
        app = Flask(__name__)

        @app.post("/hook")
        def hook() -> tuple[str, int]:
            now = time.monotonic()
            body = request.get_json()
            with self.lock:
                self.arrived.setdefault(body["facerank"]["key"], now)
                self.lock.notify_all()
            return "ok", 200

        return app


@contextmanager
def facerank_up(data_dir: Path, webhook_url: str) -> Iterator[subprocess.Popen[str]]:
    with reserved_ports(len(PORTS)) as ports:  # held until its components are gone
        yield from _facerank_up(data_dir, webhook_url, dict(zip(PORTS, ports, strict=True)))


def _facerank_up(
    data_dir: Path, webhook_url: str, ports: dict[str, int]
) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        **{f"FACERANK_{name}_PORT": str(port) for name, port in ports.items()},
        "FACERANK_DATA_DIR": str(data_dir),
        "FACERANK_NOTIFY_WEBHOOK_URL": webhook_url,
        "FACERANK_NOTIFY_FILTER": "*",
        "FACERANK_GALLERY_REFRESH_S": "0.5",
        "FACERANK_LOG_LEVEL": "WARNING",
    }
    log = (data_dir.parent / "up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "facerank.cli.main", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "facerank is up" not in (data_dir.parent / "up.log").read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir.parent / "up.log").read_text()[-3000:])
            time.sleep(0.5)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(120)
        log.close()


def wait_for_enrollment(data_dir: Path, expected: int) -> int:
    """Records once all photos are enrolled, or the count stopped moving (rejections)."""
    gallery = Gallery(FolderStore(data_dir / "buckets"), "gallery")
    last, since = -1, time.monotonic()
    while True:
        count = len(gallery.sources())
        if count != last:
            last, since = count, time.monotonic()
        if count >= expected or time.monotonic() - since > 30:
            return count
        time.sleep(0.5)


# --- measuring ---------------------------------------------------------------------------


def run_split(split: Split, latency_photos: int) -> dict[str, Any]:
    webhook = Webhook()
    server = make_server("127.0.0.1", 0, webhook.app(), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    work = Path(tempfile.mkdtemp(prefix=f"bench-identify-{split.name}-"))
    data_dir = work / "data"
    buckets = data_dir / "buckets"
    try:
        with facerank_up(data_dir, url):
            for photo in split.enrolled:
                target = buckets / "faces" / photo.person / photo.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(photo_bytes(photo))
            enrolled = wait_for_enrollment(data_dir, len(split.enrolled))
            time.sleep(3)  # the predictor's next gallery polls
            latencies, answers = drop_queries(split, buckets, webhook)
            time.sleep(1)
            results = {key: read_result(buckets, key) for key in answers}
            groups = UnknownFaces(FolderStore(buckets), "gallery").groups()
            thresholds = calibration(buckets, results)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    figures = score(split, enrolled, results, groups, latencies[:latency_photos])
    figures["thresholds"] = {
        name: {"threshold": t, **at_threshold(split, results, t)} for name, t in thresholds.items()
    }
    figures["curve"] = [
        {"threshold": t, **at_threshold(split, results, t)}
        for t in np.round(np.arange(0.25, 0.451, 0.01), 2).tolist()
    ]
    return figures


def calibration(buckets: Path, results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The model's pair threshold and the open-set one the predictor derives for this gallery
    (``facerank/openset.py``, ``FACERANK_OPEN_SET_FAR``), computed as the predictor does."""
    settings = Settings.from_env(data_dir=buckets.parent)  # the model cache up was given
    store = FolderStore(buckets)
    version = next(r["model_version"] for r in results.values() if "model_version" in r)
    matrix = Gallery(store, "gallery").matrix(version)
    embedder = ServingModels(ModelRegistry(store, "models"), settings).current()[1][version]
    codes = np.unique(np.asarray(matrix.identities), return_inverse=True)[1]
    pair = embedder.match_threshold
    return {
        "pair (model card)": pair,
        f"open-set (far {settings.open_set_far})": open_set_threshold(
            matrix.vectors, codes, pair_threshold=pair, target=settings.open_set_far
        ),
    }


def at_threshold(split: Split, results: dict[str, dict[str, Any]], threshold: float) -> dict:
    """Accuracy and stranger false matches had ``match`` used ``threshold``, from each query's
    nearest identity (the top match of every face, as the predictor ranked it)."""
    known = split.people_enrolled
    hits = known_total = strangers = false_matches = 0
    for key, result in results.items():
        person = key.split("/", 1)[0]
        tops = [f["matches"][0] for f in result.get("faces", []) if f["matches"]]
        if person in known:
            known_total += 1
            hits += (
                bool(tops) and tops[0]["identity"] == person and tops[0]["distance"] <= threshold
            )
        else:
            strangers += 1
            false_matches += any(m["distance"] <= threshold for m in tops)
    return {
        "identification_accuracy": hits / known_total if known_total else None,
        "stranger_false_match_rate": false_matches / strangers if strangers else None,
    }


def drop_queries(
    split: Split, buckets: Path, webhook: Webhook
) -> tuple[list[float], dict[str, Photo]]:
    """Drop each query photo and wait for its answer; latencies of the identified ones."""
    latencies, answers = [], {}
    for photo in split.queries:
        key = f"{photo.person}/{photo.name}"
        data = photo_bytes(photo)
        target = buckets / "queries" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        target.write_bytes(data)
        deadline = started + ANSWER_TIMEOUT_S
        while True:
            # The webhook stamps the arrival itself, so waking late costs no accuracy; the
            # result file of a refused photo (no event) is looked at every REFUSED_POLL_S.
            with webhook.lock:
                webhook.lock.wait_for(lambda key=key: key in webhook.arrived, REFUSED_POLL_S)
                arrived = webhook.arrived.get(key)
            if arrived is not None:
                latencies.append(arrived - started)
                break
            if (buckets / "queries" / result_key(key)).is_file() and _is_error(buckets, key):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer for {key} after {ANSWER_TIMEOUT_S:.0f} s")
        answers[key] = photo
    return latencies, answers


def _is_error(buckets: Path, key: str) -> bool:
    try:
        return "error" in json.loads((buckets / "queries" / result_key(key)).read_text())
    except (OSError, ValueError):
        return False


def read_result(buckets: Path, key: str) -> dict[str, Any]:
    return json.loads((buckets / "queries" / result_key(key)).read_text())


def score(
    split: Split,
    enrolled_records: int,
    results: dict[str, dict[str, Any]],
    groups: Any,
    latencies: Sequence[float],
) -> dict[str, Any]:
    known = split.people_enrolled
    hits = known_total = strangers = false_matches = no_face = 0
    for key, result in results.items():
        person = key.split("/", 1)[0]
        faces = result.get("faces", [])
        no_face += "error" in result
        if person in known:
            known_total += 1
            hits += bool(faces) and faces[0]["identity"] == person
        else:
            strangers += 1
            false_matches += any(f["identity"] is not None for f in faces)
    precision, recall, unknown_faces = pairwise(groups)
    return {
        "dataset": split.name,
        "gallery_identities": len(known),
        "enrolled_photos": len(split.enrolled),
        "enrolled_records": enrolled_records,
        "queries": len(results),
        "queries_without_a_usable_face": no_face,
        "identification_accuracy": hits / known_total if known_total else None,
        "enrolled_queries": known_total,
        "stranger_queries": strangers,
        "stranger_false_match_rate": false_matches / strangers if strangers else None,
        "unknown_faces": unknown_faces,
        "unknown_groups": len(groups.members()),
        "group_pairwise_precision": precision,
        "group_pairwise_recall": recall,
        "latency_photos": len(latencies),
        "latency_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
    }


def pairwise(groups: Any) -> tuple[float | None, float | None, int]:
    """Pairwise precision and recall of the groups against the people the photos show."""
    faces = [(f.group, f.key.split("/", 1)[0]) for f in groups.faces.values()]
    same_group = same_person = both = 0
    for (g1, p1), (g2, p2) in itertools.combinations(faces, 2):
        same_group += g1 == g2
        same_person += p1 == p2
        both += g1 == g2 and p1 == p2
    precision = both / same_group if same_group else None
    recall = both / same_person if same_person else None
    return precision, recall, len(faces)


def pipeline_label(settings: Settings) -> str:
    """The pipeline the figures were measured with, read from the settings the components
    run with (this process sees the same environment ``facerank up`` is started with)."""
    return (
        "dlib-r34-v1 (pretrained, from the model cache), "
        f"{settings.detector} detector, {settings.align} alignment"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="att,lfw")
    parser.add_argument("--latency-photos", type=int, default=100)
    parser.add_argument("--att-people", type=int, default=40, help="AT&T's s1 ... sN")
    parser.add_argument("--att-photos", type=int, default=10, help="AT&T's photos 1 ... N")
    args = parser.parse_args(argv)
    splits = {"att": partial(att_split, args.att_people, args.att_photos), "lfw": lfw_split}
    figures = []
    for name in args.datasets.split(","):
        started = time.monotonic()
        figures.append(run_split(splits[name](), args.latency_photos))
        figures[-1]["wall_s"] = round(time.monotonic() - started, 1)
        print(json.dumps(figures[-1], indent=1), flush=True)
    report = {
        "command": "bench/bench_identify.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model": pipeline_label(Settings.from_env()),
        "results": figures,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
