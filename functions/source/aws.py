"""Amazon S3 event notifications delivered by an SNS HTTP(S) subscription.

SNS wraps every message in an envelope whose ``Type`` says what it is:

* ``SubscriptionConfirmation``: SNS asks the endpoint to prove it wants the messages by
  fetching ``SubscribeURL``. That URL comes from the request body, so fetching it blindly
  would let anyone make this pod call any address it can reach (SSRF, e.g. a cloud metadata
  service): it is fetched only when it points at a loopback address or at the configured S3
  endpoint's host, with redirects refused.
* ``Notification``: ``Message`` is a string holding the S3 event JSON (``Records`` with
  ``eventName`` such as ``ObjectCreated:Put``, no ``s3:`` prefix), or S3's ``s3:TestEvent``
  sent when the bucket's notification configuration is saved.
* ``UnsubscribeConfirmation``: nothing to do.

SNS posts with ``Content-Type: text/plain``, so the body is parsed whatever the header says.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from facerank.errors import FacerankError
from facerank.settings import Settings
from functions.source.records import Batch, PayloadError, load_json, parse_records

log = logging.getLogger(__name__)

SnsType = Literal["SubscriptionConfirmation", "Notification", "UnsubscribeConfirmation"]
SNS_TYPES: tuple[SnsType, ...] = get_args(SnsType)
S3_TEST_EVENT = "s3:TestEvent"
CONFIRM_TIMEOUT_S = 5.0


class ConfirmationError(FacerankError):
    """Fetching an allowed SubscribeURL failed; SNS resends the confirmation, so retry."""

    code = "confirmation_failed"
    retryable = True


class ConfirmationRefusedError(FacerankError):
    """A SubscribeURL outside the allowed hosts: fetching it could reach anything (SSRF)."""

    code = "confirmation_refused"


@dataclass(frozen=True)
class SnsEnvelope:
    type: SnsType
    topic_arn: str
    message: str
    subscribe_url: str


def parse_sns(body: bytes) -> SnsEnvelope:
    """The SNS envelope of a POST; PayloadError when it is not one."""
    document = load_json(body, "SNS message")
    type_ = document.get("Type")
    if type_ not in SNS_TYPES:
        raise PayloadError(f"SNS message 'Type' must be one of {', '.join(SNS_TYPES)}")
    envelope = SnsEnvelope(
        type=type_,
        topic_arn=_text(document, "TopicArn"),
        message=_text(document, "Message"),
        subscribe_url=_text(document, "SubscribeURL"),
    )
    if type_ == "SubscriptionConfirmation" and not envelope.subscribe_url:
        raise PayloadError("SNS SubscriptionConfirmation needs a 'SubscribeURL'")
    return envelope


def s3_changes(message: str) -> Batch:
    """The changes in the S3 event JSON an SNS Notification carries (none for a test event)."""
    document = load_json(message.encode(), "SNS 'Message'")
    if document.get("Event") == S3_TEST_EVENT:
        log.info("S3 test event for bucket %r received", str(document.get("Bucket"))[:80])
        return Batch()
    if "Records" not in document:
        raise PayloadError("SNS 'Message' is neither an S3 event notification nor a test event")
    return parse_records(document["Records"])


def confirmation_allowed(url: str, settings: Settings) -> bool:
    """Whether ``url`` may be fetched: http(s) to a loopback IP, ``localhost``, or the S3 host.

    Only literal addresses count as loopback: a DNS name resolving to 127.0.0.1 is refused,
    since resolving it would be the very request the check is there to prevent.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost" or host == urlsplit(settings.s3_endpoint).hostname:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def confirm_subscription(url: str, *, timeout: float = CONFIRM_TIMEOUT_S) -> None:
    """GET ``url`` (already allowed), refusing redirects; ConfirmationError if it fails."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ConfirmationError(
            f"confirming the SNS subscription at {urlsplit(url).hostname} failed: "
            f"{getattr(exc, 'reason', exc)}"
        ) from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would take the request to a host the allow-list never saw."""

    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name, "")
    if not isinstance(value, str):
        raise PayloadError(f"SNS message field {name!r} must be a string")
    return value
