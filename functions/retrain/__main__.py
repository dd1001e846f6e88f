"""``python -m functions.retrain``: entry point of the retrain container and of ``facerank up``.

Configuration from the environment: ``FACERANK_*`` settings (``FACERANK_TRAINING_BACKEND``
picks local worker processes or Kubernetes Jobs), ``K_SINK`` (where run events go: the broker),
``PORT`` (else ``FACERANK_RETRAIN_PORT``). A run left unfinished by a restart is resumed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from cloudevents.http import CloudEvent

from facerank.events import send_event
from facerank.gallery import Gallery
from facerank.registry import ModelRegistry, ServingModels
from facerank.serving import listen_port, serve
from facerank.settings import Settings
from facerank.storage import open_store
from functions.retrain.app import create_app
from functions.retrain.handler import RetrainHandler
from functions.retrain.orchestrator import Launcher, RunOrchestrator
from functions.retrain.training_run import SharedVolumeTrainer

log = logging.getLogger("functions.retrain")


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s retrain %(levelname)s %(message)s"
    )
    store = open_store(settings)
    gallery = Gallery(store, settings.gallery_bucket)
    models = ServingModels(ModelRegistry(store, settings.models_bucket), settings)
    models.registry.ensure()
    orchestrator = RunOrchestrator(
        settings,
        models,
        gallery,
        SharedVolumeTrainer(settings, gallery),
        make_launcher(settings),
        sender(os.environ.get("K_SINK", "")),
    )
    held = orchestrator.held_run()
    if held is not None:
        log.info("resuming run %s", held)
        in_background(lambda: orchestrator.resume(held))
    serve(
        create_app(RetrainHandler(orchestrator, in_background), api_token=settings.api_token),
        host=settings.listen_host,
        port=listen_port(settings.retrain_port),
        name="retrain",
    )


def make_launcher(settings: Settings) -> Launcher:
    if settings.training_backend == "kubernetes":
        from functions.retrain.kubernetes import KubernetesTrainingLauncher

        return KubernetesTrainingLauncher(settings.namespace, settings.training_template)
    from training.launcher import LocalTrainingLauncher

    return LocalTrainingLauncher(settings.shared_dir)


def sender(sink: str) -> Callable[[CloudEvent], None]:
    """Events to ``sink`` (K_SINK); without one they are only logged."""

    def send(event: CloudEvent) -> None:
        log.info("event %s for run %s", event["type"], event.get("subject"))
        if sink:
            send_event(sink, event)

    return send


def in_background(work: Callable[[], object]) -> None:
    threading.Thread(target=work, name="retrain-run", daemon=True).start()


if __name__ == "__main__":
    main()
