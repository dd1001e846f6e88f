"""The event source's HTTP face: MinIO's webhook, SNS subscriptions, and a health check.

A push is answered 200 only after the sink accepted every event it produced, and 503 when the
sink did not: MinIO then keeps the notification in its queue and SNS retries it, so a broker
outage delays photos instead of losing them. Redelivered notifications yield the same event
ids, so the retries are harmless downstream. Malformed bodies are 400 with the reason.
"""

from __future__ import annotations

import base64
import binascii
import logging

from flask import Flask, Response, jsonify, request

from facerank.auth import same_token
from facerank.cehttp import json_data
from facerank.errors import UnauthorizedError
from facerank.events import FACE_REJECTED
from facerank.settings import Settings
from functions.runtime import (
    create_function_app,
    empty_response,
    error_response,
    read_cloudevent,
    token_refused,
)
from functions.source.aws import (
    ConfirmationRefusedError,
    confirm_subscription,
    confirmation_allowed,
    parse_sns,
    s3_changes,
)
from functions.source.emitter import Emitter, Tally
from functions.source.minio import parse_minio
from functions.source.records import Batch
from functions.source.verdicts import RejectedVersions

log = logging.getLogger(__name__)

Reply = tuple[Response, int]


WEBHOOK_PATHS = ("/minio", "/sns")
"""Where MinIO and SNS push: they present the webhook token, never the API token."""


def create_app(
    settings: Settings, emitter: Emitter, rejected: RejectedVersions | None = None
) -> Flask:
    """The source's Flask app: ``POST /minio``, ``POST /sns``, ``POST /`` (verdicts from the
    broker) and ``GET /healthz``."""
    # The push endpoints check the webhook token (MinIO and SNS cannot send the API token).
    app = create_function_app(
        "facerank-source", api_token=settings.api_token, own_auth=WEBHOOK_PATHS
    )
    token = settings.webhook_token
    verdicts = rejected if rejected is not None else RejectedVersions()

    @app.post("/")
    def verdict() -> Response:
        """``face.rejected.v1`` from enroll, via the Trigger: remember the rejected version."""
        event = read_cloudevent(request)
        data = json_data(event) if event["type"] == FACE_REJECTED else None
        if isinstance(data, dict) and data.get("bucket") == emitter.bucket:
            key, etag = data.get("key"), data.get("etag")
            if isinstance(key, str) and isinstance(etag, str) and etag:
                verdicts.add(key, etag)
        return empty_response()

    @app.errorhandler(UnauthorizedError)
    def unauthorized(exc: UnauthorizedError) -> Reply:
        if request.path not in WEBHOOK_PATHS:
            return token_refused(exc)  # the API token, checked for every other path
        log.info(
            "refused a notification without a valid webhook token from %s", request.remote_addr
        )
        response, status = error_response(exc, 401)
        response.headers["WWW-Authenticate"] = 'Bearer, Basic realm="facerank"'
        return response, status

    @app.errorhandler(ConfirmationRefusedError)
    def refused(exc: ConfirmationRefusedError) -> Reply:
        log.warning("%s", exc)
        return error_response(exc, 403)

    @app.post("/minio")
    def minio() -> Reply:
        _require_token(token)
        return _emit(emitter, parse_minio(request.get_data()))

    @app.post("/sns")
    def sns() -> Reply:
        _require_token(token)
        envelope = parse_sns(request.get_data())
        if envelope.type == "Notification":
            return _emit(emitter, s3_changes(envelope.message))
        if envelope.type == "SubscriptionConfirmation":
            if not confirmation_allowed(envelope.subscribe_url, settings):
                raise ConfirmationRefusedError(
                    f"not confirming the SNS subscription to {envelope.topic_arn[:200]}: its "
                    "SubscribeURL is neither loopback nor the S3 endpoint; confirm it by hand"
                )
            confirm_subscription(envelope.subscribe_url)
            log.info("confirmed the SNS subscription to %s", envelope.topic_arn[:200])
            return jsonify(status="confirmed"), 200
        log.info("SNS unsubscribed this endpoint from %s", envelope.topic_arn[:200])
        return jsonify(status="ok"), 200

    return app


def _emit(emitter: Emitter, batch: Batch) -> Reply:
    tally = emitter.emit_all(batch.changes, Tally(ignored=batch.ignored))
    return jsonify(tally.to_json()), 200


def _require_token(token: str) -> None:
    """Raise UnauthorizedError unless the request carries the token (when one is set).

    MinIO sends it as ``Bearer`` (its ``auth_token``); SNS can only send HTTP basic auth
    (credentials in the subscription URL), so it is also accepted as the basic password.
    Compared in constant time (:func:`facerank.auth.same_token`), and never logged.
    """
    if not token:
        return
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    presented = credentials.strip()
    if scheme.lower() == "basic":
        presented = _basic_password(presented)
    elif scheme.lower() != "bearer":
        presented = ""
    if not same_token(presented, token):
        raise UnauthorizedError("a valid webhook token is required")


def _basic_password(credentials: str) -> str:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]
