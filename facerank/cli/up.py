"""``facerank up``: the whole pipeline on this machine, in the foreground.

Each component runs as its own process through the entry point its container image uses, in
dependency order: the enroll, identify and notify functions, the local broker (which delivers
to them), the bucket event source (which sends to the broker and, at start, reconciles the
faces bucket against the gallery and the queries bucket against its results, so photos dropped
while facerank was down are handled), and the KServe predictor (which identify asks).
Ctrl-C stops everything; the next ``facerank up`` continues on the same data.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading

from facerank.broker.subscribers import SUBSCRIBERS_ENV
from facerank.demo import DemoInfo, prepare_demo
from facerank.errors import FacerankError
from facerank.gallery import Gallery
from facerank.predictor import READY_PATH, predict_url
from facerank.serving import loopback_url
from facerank.settings import Settings
from facerank.storage import ObjectStore, open_store
from facerank.supervisor import Component, Supervisor


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the facerank pipeline on this machine (Ctrl-C stops it)",
        description="Start the enroll function, the local broker, the bucket event source and "
        "the KServe predictor as processes, watch them, and stop them on Ctrl-C.",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="first upload demo faces (face-api's sample photos, fetched once with npm) "
        "and print a query to try",
    )
    parser.set_defaults(handler=run)


def embedded_components(settings: Settings) -> list[Component]:
    """The processes of the embedded default, in start order, wired like the cluster."""
    enroll = Component("enroll", "functions.enroll", settings.enroll_port)
    identify = Component("identify", "functions.identify", settings.identify_port)
    notify = Component("notify", "functions.notify", settings.notify_port)
    # The source and retrain start after the broker (they send to it): no Components yet.
    source_url = loopback_url(settings.source_port)
    retrain_url = loopback_url(settings.retrain_port)
    broker = Component(
        "broker",
        "facerank.broker",
        settings.broker_port,
        # The Triggers name Knative Services; locally each name maps to a loopback URL.
        env={
            SUBSCRIBERS_ENV: f"facerank-enroll={enroll.url},"
            f"facerank-source={source_url},facerank-retrain={retrain_url},"
            f"facerank-identify={identify.url},facerank-notify={notify.url}"
        },
    )
    retrain = Component(
        "retrain", "functions.retrain", settings.retrain_port, env={"K_SINK": broker.url + "/"}
    )
    source = Component(
        "source", "functions.source", settings.source_port, env={"K_SINK": broker.url + "/"}
    )
    predictor = Component(
        "predictor",
        "inference",
        settings.predictor_port,
        health_path=READY_PATH,
    )
    # After the predictor: the page forwards queries to it (at its settings port, by default).
    web = Component("web", "inference.web", settings.web_port)
    return [enroll, identify, notify, broker, retrain, source, predictor, web]


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    buckets = (
        settings.faces_bucket,
        settings.queries_bucket,
        settings.gallery_bucket,
        settings.models_bucket,
    )
    for bucket in buckets:
        store.ensure_bucket(bucket)
    counts = Gallery(store, settings.gallery_bucket).identities()
    faces = sum(counts.values())
    log(f"store: {store.description}; gallery: {len(counts)} identities, {faces} faces")
    # Uploaded before the components start, so the source's first reconcile enrolls them.
    demo = try_prepare_demo(settings, store) if args.demo else None

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    components = embedded_components(settings)
    # TensorFlow's C++ start-up banners would drown the components' own logs.
    quiet = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with Supervisor(components, env={**settings.to_env(), **quiet}) as supervisor:
        supervisor.start()
        print_welcome(settings, components)
        if demo is not None:
            print_demo(settings, demo)
        supervisor.watch(stop)
        log("stopping")
    log("stopped")
    return 0


def print_welcome(settings: Settings, components: list[Component]) -> None:
    urls = {c.name: c.url for c in components}
    grpc_port = settings.predictor_grpc_port  # 0: off
    lines = [
        "facerank is up",
        f"  drop photos into   {settings.buckets_dir / settings.faces_bucket}/<identity>/<file>",
        "  or upload them     facerank upload PATH... (identity folders)",
        "  see who is known   facerank gallery ls",
        f"  identify photos    {settings.buckets_dir / settings.queries_bucket}/<file> "
        "(result in results/<file>.json beside it)",
        f"  query a photo      facerank query PHOTO   (or curl {predict_url(urls['predictor'])})",
        f"  web page           {urls['web']}",
        f"  V2 over gRPC       127.0.0.1:{grpc_port}" if grpc_port else "",
        f"  broker             {urls['broker']}  (dead letters in {settings.data_dir / 'broker'})",
        f"  MinIO webhook      {urls['source']}/minio",
        "  Ctrl-C stops everything; the next `facerank up` continues on the same data",
    ]
    for line in filter(None, lines):
        log(line)


def try_prepare_demo(settings: Settings, store: ObjectStore) -> DemoInfo | None:
    """The demo data, or None after logging why not: a demo must never keep facerank down."""
    try:
        demo = prepare_demo(settings, store)
    except FacerankError as exc:
        log(f"demo: not prepared, starting without it: {exc.code}: {exc}")
        return None
    log(
        f"demo: {len(demo.identities)} face identities from the face-api sample photos "
        f"({len(demo.uploaded)} uploaded now, "
        f"{len(demo.identities) - len(demo.uploaded)} already there), "
        f"query written to {demo.query_path}"
    )
    return demo


def print_demo(settings: Settings, demo: DemoInfo) -> None:
    """The exact commands to try the demo query, once enrollment has caught up."""
    url = predict_url(loopback_url(settings.predictor_port))
    body = shlex.quote(f"@{demo.request_path}")
    lines = [
        "try the demo (the faces are enrolled within seconds):",
        f"  curl -s -H 'content-type: application/json' -d {body} {url}",
        f"  facerank query {shlex.quote(str(demo.query_path))}",
        f"  expected top identity: {demo.expected_identity}",
    ]
    for line in lines:
        log(line)


def log(message: str) -> None:
    print(f"facerank up: {message}", file=sys.stderr, flush=True)
