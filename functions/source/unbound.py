"""The event source before Knative has bound it to its sink.

A SinkBinding injects ``K_SINK`` by changing the Knative Service it names, which makes a new
revision; the first revision, created before the binding resolved the Broker's address, has
none. Exiting there (status 2, a configuration error) left a failed revision behind on every
fresh deploy. Under Knative (``K_SERVICE`` is set) the source instead starts unbound: it is
healthy, so the revision becomes ready and is replaced as soon as the bound one is, and it
answers every push 503, so MinIO keeps the notification queued and the Broker retries, and
the bound revision gets them. Outside Knative a missing ``K_SINK`` is still an error.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from facerank.errors import FacerankError
from functions.runtime import create_function_app
from functions.source.app import WEBHOOK_PATHS
from functions.source.emitter import SINK_ENV

KNATIVE_SERVICE_ENV = "K_SERVICE"


class SinkNotBoundError(FacerankError):
    """The source has no sink yet; the revision that has one will take the push."""

    code = "sink_not_bound"
    retryable = True


def awaiting_binding(env: Mapping[str, str]) -> bool:
    """Whether this is a Knative revision that its SinkBinding has not reached yet."""
    return not env.get(SINK_ENV, "").strip() and bool(env.get(KNATIVE_SERVICE_ENV))


def create_unbound_app(api_token: str) -> Flask:
    """``GET /healthz`` answers; ``POST /``, ``/minio`` and ``/sns`` answer 503."""
    app = create_function_app("facerank-source", api_token=api_token, own_auth=WEBHOOK_PATHS)

    @app.post("/")
    @app.post("/minio")
    @app.post("/sns")
    def unbound() -> None:
        raise SinkNotBoundError(
            f"{SINK_ENV} is not set yet: the SinkBinding has not reached this revision"
        )

    return app
