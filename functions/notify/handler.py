"""Notifications: a ``face.identified`` event that matches the filter becomes one webhook POST.

The body is what chat tools' incoming webhooks take (Slack, Mattermost, Rocket.Chat read
``text``; the structured summary under ``facerank`` is for programs). It names identities,
distances, boxes and where the photo and its result are; never pixels and never embeddings, so
a notification cannot leak a face to wherever the chat tool stores messages.

Retrying is the broker's job: a webhook that fails or cannot be reached makes the delivery
fail with 503 (retryable), so the Broker's delivery policy retries with backoff and finally
dead-letters the event; a webhook that refuses the body (4xx) is final, a 400 dead-lettered at
once. Delivery is at-least-once, so each event is claimed in the store before its post and
marked posted after it (:mod:`functions.notify.ledger`): a redelivery, to any replica, before
or after a restart, posts nothing again. Every body carries the event id for receivers that
deduplicate the rare repeat a crash between post and mark leaves.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.http import CloudEvent

from facerank.cehttp import json_data
from facerank.errors import FacerankError, InvalidEventError
from facerank.events import FACE_IDENTIFIED, describe
from facerank.settings import Settings
from facerank.storage import ObjectStore
from functions.notify.ledger import NotifyLedger

log = logging.getLogger(__name__)

ANY = "*"
UNKNOWN = "unknown"
TIMEOUT_S = 10.0


class WebhookUnavailableError(FacerankError):
    """The webhook failed or could not be reached; the broker retries the event."""

    code = "webhook_unavailable"
    retryable = True


class WebhookRefusedError(FacerankError):
    """The webhook refused the notification (4xx): sending it again cannot help."""

    code = "webhook_refused"


@dataclass(frozen=True)
class NotifyFilter:
    """Which identified photos are worth a notification."""

    identities: frozenset[str]
    unknown: bool
    everything: bool

    @classmethod
    def parse(cls, text: str) -> NotifyFilter:
        """``alice,bob,unknown`` or ``*``: identities, ``unknown`` for faces nobody matched."""
        names = {part.strip() for part in text.split(",") if part.strip()}
        return cls(frozenset(names - {ANY, UNKNOWN}), UNKNOWN in names, ANY in names)

    def reasons(self, data: Mapping[str, Any]) -> list[str]:
        """What in ``data`` (of face.identified) the filter asked for; empty: no notification."""
        identities = [i for i in data.get("identities", ()) if isinstance(i, str)]
        unknown = int(data.get("unknown_faces") or 0)
        if self.everything:
            return identities + ([UNKNOWN] if unknown else []) or [ANY]
        found = [i for i in identities if i in self.identities]
        if self.unknown and unknown:
            found.append(UNKNOWN)
        return found


def notification(event: CloudEvent, data: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body for one identified photo: a line of text and a summary, nothing else."""
    faces = [
        {
            "identity": face.get("identity"),
            "distance": face.get("distance"),
            "box": face.get("box"),
        }
        for face in data.get("faces", ())
        if isinstance(face, Mapping)
    ]
    known = [f"{f['identity']} ({f['distance']:.2f})" for f in faces if f["identity"]]
    unknown = sum(1 for f in faces if not f["identity"])
    parts = known + ([f"{unknown} unknown face{'s' if unknown != 1 else ''}"] if unknown else [])
    where = f"{data.get('bucket')}/{data.get('key')}"
    return {
        "text": f"facerank: {', '.join(parts) or 'no face'} in {where}",
        "facerank": {
            "event_id": event["id"],
            "bucket": data.get("bucket"),
            "key": data.get("key"),
            "etag": data.get("etag"),
            "result_key": data.get("result_key"),
            "model_version": data.get("model_version"),
            "identities": list(data.get("identities", ())),
            "unknown_faces": unknown,
            "faces": faces,
        },
    }


class NotifyHandler:
    """Posts matching ``face.identified`` events to one webhook."""

    def __init__(self, webhook_url: str, notify_filter: NotifyFilter, ledger: NotifyLedger) -> None:
        self.webhook_url = webhook_url
        self.filter = notify_filter
        self.ledger = ledger

    def handle(self, event: CloudEvent) -> str:
        """Post if the event matches; the verdict for the log. Raises on a failed post."""
        if event["type"] != FACE_IDENTIFIED:
            return f"skipped: not face.identified ({event['type']})"
        data = json_data(event)
        if not isinstance(data, Mapping):
            raise InvalidEventError("face.identified data must be a JSON object")
        reasons = self.filter.reasons(data)
        if not reasons or not self.webhook_url:
            verdict = "no webhook configured" if reasons else "filtered out"
        elif (claim := self.ledger.claim(event["id"])) is None:
            verdict = "already posted"
        else:
            try:
                self._post(notification(event, data))
            except FacerankError:
                self._release(event["id"], claim)
                raise
            self.ledger.posted(event["id"])
            verdict = f"posted ({', '.join(reasons)})"
        log.info("%s: %s", describe(event), verdict)
        return verdict

    def _post(self, body: Mapping[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - the operator configures the webhook
            self.webhook_url,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            # Never the URL in messages: a chat webhook's URL is its secret.
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise WebhookRefusedError(
                    f"the webhook refused the notification: HTTP {exc.code}"
                ) from None
            raise WebhookUnavailableError(f"the webhook answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WebhookUnavailableError(f"the webhook could not be reached: {reason}") from None

    def _release(self, event_id: str, claim: str) -> None:
        """Free the claim of a failed post so the broker's retry posts; if the store fails
        too, the claim expires (ledger.LEASE) before the broker's last retry."""
        try:
            self.ledger.release(event_id, claim)
        except FacerankError as exc:
            log.warning("event %s: could not release its claim (%s); it expires", event_id, exc)


def build_handler(settings: Settings, store: ObjectStore) -> NotifyHandler:
    """Markers of notified events go to the gallery bucket (see :mod:`.ledger`)."""
    return NotifyHandler(
        settings.notify_webhook_url,
        NotifyFilter.parse(settings.notify_filter),
        NotifyLedger(store, settings.gallery_bucket),
    )
