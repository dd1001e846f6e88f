"""``python -m functions.source``: the event source as its container and ``facerank up`` run it.

Configuration comes from the environment, as Knative provides it: ``FACERANK_*`` settings,
``K_SINK`` (the sink, required; a Knative revision without one waits for its SinkBinding,
see :mod:`functions.source.unbound`), ``PORT`` (else ``FACERANK_SOURCE_PORT``), and the listen
address ``FACERANK_SOURCE_HOST`` (else the functions' shared ``FACERANK_LISTEN_HOST``, else
127.0.0.1; containers set 0.0.0.0). SIGTERM and SIGINT stop it cleanly: the server closes,
then the watcher and the reconcile thread stop.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import ExitStack

from facerank.errors import ConfigError, FacerankError
from facerank.gallery import Gallery
from facerank.queries import QueryResults
from facerank.serving import listen_port, serve
from facerank.settings import Settings
from facerank.storage import FolderStore, ObjectStore, open_store
from functions.source.app import create_app
from functions.source.emitter import Emitter, sink_from_env
from functions.source.reconcile import Reconciler
from functions.source.unbound import awaiting_binding, create_unbound_app
from functions.source.verdicts import RejectedVersions
from functions.source.watcher import FolderWatcher, WatcherUnavailableError

log = logging.getLogger("functions.source")

_JOIN_TIMEOUT_S = 10.0


def main() -> int:
    try:
        settings = Settings.from_env()
        unbound = awaiting_binding(os.environ)
        emitter = None if unbound else Emitter(sink_from_env(os.environ), settings)
    except ConfigError as exc:
        print(f"facerank event source: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s source %(levelname)s %(name)s: %(message)s",
    )
    if emitter is None:
        log.warning("K_SINK is not set yet: answering 503 until the SinkBinding's revision is up")
        port = listen_port(settings.source_port)
        serve(
            create_unbound_app(settings.api_token),
            host=_host(settings),
            port=port,
            name="event source",
        )
        return 0
    try:
        run(settings, emitter)
    except (FacerankError, OSError) as exc:
        log.error("event source failed: %s", exc)
        return 1
    log.info("event source stopped")
    return 0


def run(settings: Settings, emitter: Emitter) -> None:
    """Run every feed until SIGTERM/SIGINT. The watchers start before the first reconcile
    passes, so nothing dropped during startup can fall between the two.

    Two buckets are fed alike: the faces bucket, reconciled against the gallery, and the
    queries bucket, reconciled against the results the identify function wrote.
    """
    store = open_store(settings)
    gallery = Gallery(store, settings.gallery_bucket)
    results = QueryResults(store, settings.queries_bucket)
    stop = threading.Event()
    rejected = RejectedVersions()  # filled by the app, read by the faces' reconcile thread
    with ExitStack() as cleanup:
        feeds = {
            settings.faces_bucket: Reconciler(store, gallery, emitter, rejected),
            settings.queries_bucket: Reconciler(
                store, gallery, emitter, bucket=settings.queries_bucket, processed=results.processed
            ),
        }
        for bucket, reconciler in feeds.items():
            _start_watcher(store, gallery, emitter, reconciler, cleanup)
            thread = threading.Thread(
                target=reconciler.run_periodically,
                args=(settings.reconcile_interval, stop),
                name=f"facerank-reconcile-{bucket}",
                daemon=True,
            )
            thread.start()
            cleanup.callback(thread.join, _JOIN_TIMEOUT_S)
        cleanup.callback(stop.set)  # last in, first out: threads are told before they are joined
        log.info("sending events for buckets %s to %s", " and ".join(feeds), emitter.sink)
        serve(
            create_app(settings, emitter, rejected),
            host=_host(settings),
            port=listen_port(settings.source_port),
            name="event source",
        )


def _host(settings: Settings) -> str:
    """The source's own address if set, else the one every process binds."""
    return settings.source_host or settings.listen_host


def _start_watcher(
    store: ObjectStore,
    gallery: Gallery,
    emitter: Emitter,
    reconciler: Reconciler,
    cleanup: ExitStack,
) -> None:
    """Watch a bucket's folder (folder store only); without inotify, reconcile alone remains."""
    if not isinstance(store, FolderStore):
        return
    store.ensure_bucket(reconciler.bucket)
    watcher = FolderWatcher(
        store, gallery, emitter, bucket=reconciler.bucket, processed=reconciler.processed
    )
    try:
        watcher.start()
    except WatcherUnavailableError as exc:
        log.warning("%s; new photos are found by reconcile passes only", exc)
        return
    cleanup.callback(watcher.stop)


if __name__ == "__main__":
    sys.exit(main())
