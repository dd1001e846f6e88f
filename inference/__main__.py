"""``python -m inference``: entry point of the predictor container and of ``facerank up``.

Loads before serving: KServe's ModelServer refuses to start without a ready model, so the
pipeline and the first gallery snapshot are in memory before the port opens.
"""

from __future__ import annotations

import logging

from kserve import ModelServer

from facerank.serving import listen_port
from facerank.settings import Settings
from facerank.storage import open_store
from inference.model import FacerankModel


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s predictor %(levelname)s %(message)s"
    )
    model = FacerankModel(
        settings,
        open_store(settings),
        refresh_s=settings.gallery_refresh_s,
        threshold=settings.match_threshold,
    )
    model.load()
    port = listen_port(settings.predictor_port)
    # One worker: the model and its refresher live in this process; gRPC is not offered yet.
    ModelServer(http_port=port, workers=1, enable_grpc=False).start([model])


if __name__ == "__main__":
    main()
