"""``python -m inference``: entry point of the predictor container and of ``facerank up``.

Loads before serving: KServe's ModelServer refuses to start without a ready model, so the
pipeline and the first gallery snapshot are in memory before the ports open: REST on
``PORT``, and gRPC (V2) on ``FACERANK_PREDICTOR_GRPC_PORT`` unless that is 0.
"""

from __future__ import annotations

import logging
import sys
import warnings

from kserve.model_server import app as kserve_app

from facerank.auth import BearerTokenMiddleware
from facerank.serving import listen_port
from facerank.settings import Settings
from facerank.storage import open_store
from inference import access_log
from inference.model import MODEL_NAME, FacerankModel
from inference.search import one_blas_thread
from inference.server import GRPCPortError, PredictorServer

log = logging.getLogger("inference")

OPEN_PATHS = frozenset(
    {
        "/",
        "/metrics",
        "/v1/models",
        f"/v1/models/{MODEL_NAME}",
        "/v2/health/live",
        "/v2/health/ready",
        f"/v2/models/{MODEL_NAME}/ready",
    }
)
"""What GET and HEAD reach without the API token: liveness and readiness (kubelet, Knative's
queue-proxy and ``facerank up`` probe them holding no secret) and Prometheus' scrape. They tell
that the model is loaded and count requests; no face, identity or ranking is behind them."""


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s predictor %(levelname)s %(message)s"
    )
    one_blas_thread()
    model = FacerankModel(settings, open_store(settings))
    # Readiness waits for this (seconds with TensorFlow, longer while the store is away).
    log.info("loading the active model and its gallery")
    model.load()
    access_log.install(kserve_app, quiet_paths=OPEN_PATHS)
    # KServe 0.21's own routes use a response class FastAPI now deprecates: nothing to act on.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    if settings.api_token:
        # KServe serves this module-level FastAPI app; a middleware added before start wraps
        # every route it registers (predict, infer, model load/unload), present and future.
        kserve_app.add_middleware(
            BearerTokenMiddleware, token=settings.api_token, open_paths=OPEN_PATHS
        )
    grpc_port = settings.predictor_grpc_port
    server = PredictorServer(
        http_port=listen_port(settings.predictor_port),
        grpc_address=(settings.listen_host, grpc_port) if grpc_port else None,
        token=settings.api_token,
        max_message_bytes=grpc_message_limit(settings.max_image_bytes),
    )
    try:
        server.start([model])
    except GRPCPortError as exc:
        log.error("%s", exc)
        sys.exit(1)


def grpc_message_limit(max_image_bytes: int) -> int:
    """The largest gRPC message: one image of the largest size, as base64, and 1 MiB besides.
    gRPC holds a whole message in memory before the model sees it; more images than that go
    in more requests (REST refuses them one by one, after reading the body)."""
    return (max_image_bytes + 2) // 3 * 4 + (1 << 20)


if __name__ == "__main__":
    main()
