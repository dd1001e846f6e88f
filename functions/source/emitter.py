"""Turn object changes into CloudEvents and deliver them to the sink, whatever noticed them.

Every feed (MinIO webhook, SNS, folder watcher, reconcile) hands its changes to one
:class:`Emitter`, so the rules about what is worth forwarding live in one place: only the
watched buckets (faces and queries) matter, keys no store would accept are refused here
rather than forwarded as junk, and names that are never photos (dotfiles, editor swap
files, partial downloads, the identify function's results) are skipped by every feed
alike, so reconcile does not resurrect what the watcher ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from facerank.auth import authorization_header
from facerank.errors import ConfigError, InvalidKeyError
from facerank.events import (
    ObjectChange,
    ObjectChangeData,
    bucket_source,
    describe,
    object_event,
    send_event,
)
from facerank.queries import is_result_key
from facerank.settings import Settings
from facerank.storage.keys import check_key, shown

log = logging.getLogger(__name__)

SINK_ENV = "K_SINK"
"""Where Knative's SinkBinding / ContainerSource put the URL events must be posted to."""

_JUNK_SUFFIXES = ("~", ".swp", ".swx", ".swo", ".part", ".crdownload", ".tmp")
"""Editor backups and swap files, and browsers' downloads in progress (renamed when done)."""


@dataclass(frozen=True)
class Change:
    """One object created (in the version ``data.etag``) or deleted, as some feed saw it."""

    kind: ObjectChange
    data: ObjectChangeData

    @classmethod
    def created(
        cls, bucket: str, key: str, etag: str, size: int | None = None, sequencer: str = ""
    ) -> Change:
        return cls("created", ObjectChangeData(bucket, key, etag, size, sequencer))

    @classmethod
    def deleted(cls, bucket: str, key: str, sequencer: str = "") -> Change:
        """A deletion carries no ETag or size, whichever feed saw it (MinIO sends none), so
        the same deletion reads the same from every feed."""
        return cls("deleted", ObjectChangeData(bucket, key, sequencer=sequencer))


class Outcome(StrEnum):
    EMITTED = "emitted"
    IGNORED = "ignored"
    """Not our business: another bucket, or a name that is never a photo."""
    REJECTED = "rejected"
    """A key no store would accept (path tricks, control characters, too long)."""


@dataclass
class Tally:
    """How many changes of a batch ended each way; the push endpoints return it as JSON."""

    emitted: int = 0
    ignored: int = 0
    rejected: int = 0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)

    def to_json(self) -> dict[str, int]:
        return {"emitted": self.emitted, "ignored": self.ignored, "rejected": self.rejected}


def sink_from_env(env: Mapping[str, str]) -> str:
    """The sink URL from ``K_SINK``; :class:`ConfigError` when missing or not http(s)."""
    url = env.get(SINK_ENV, "").strip()
    if not url:
        raise ConfigError(
            f"{SINK_ENV} is not set: the event source needs the URL to post CloudEvents to "
            "(Knative's SinkBinding sets it; locally, the broker's URL)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{SINK_ENV} must be an http(s) URL, not {shown(url)}")
    return url


def is_junk_name(key: str) -> bool:
    """Whether some segment of ``key`` is a dotfile or a temporary/backup file name.

    Dotfiles cover the store's own ``.facerank-tmp-*``, Emacs lock files ``.#*``, vim's
    ``.name.swp``, and macOS ``.DS_Store`` / ``._photo.jpg`` that Finder copies along.
    """
    return any(
        segment.startswith(".") or segment.endswith(_JUNK_SUFFIXES) for segment in key.split("/")
    )


class Emitter:
    """Posts object.created / object.deleted events for changes in the watched buckets.

    The watched buckets are the faces bucket (``bucket``) and the queries bucket, whose
    ``results/`` are the identify function's own writes and never photos. Thread-safe: it
    keeps no state between calls, so the HTTP handlers, the watchers and the reconcile
    threads share one instance.
    """

    def __init__(
        self, sink: str, settings: Settings, *, attempts: int = 5, backoff: float = 0.2
    ) -> None:
        self.sink = sink
        self.bucket = settings.faces_bucket
        self.queries_bucket = settings.queries_bucket
        self._sources = {
            bucket: bucket_source(settings, bucket)
            for bucket in (settings.faces_bucket, settings.queries_bucket)
        }
        self._attempts = attempts
        self._backoff = backoff
        # The sink may be a facerank function itself (no broker between): present the token.
        self._headers = authorization_header(settings.api_token)

    def screen(self, bucket: str, key: str) -> Outcome | None:
        """Why a change to ``bucket/key`` must not be emitted, or None if it may be.

        Callers that must do I/O to describe a change (the watcher stats the file) ask first.
        """
        if bucket not in self._sources:
            log.debug(
                "ignoring change in bucket %s (only %s are watched)",
                shown(bucket),
                " and ".join(self._sources),
            )
            return Outcome.IGNORED
        try:
            check_key(key)
        except InvalidKeyError as exc:
            log.warning("rejected change: %s", exc)
            return Outcome.REJECTED
        if is_junk_name(key) or (bucket == self.queries_bucket and is_result_key(key)):
            log.debug("ignoring change of %s: not a photo", shown(key))
            return Outcome.IGNORED
        return None

    def emit(self, change: Change) -> Outcome:
        """Deliver one change; raises DeliveryError when the sink does not accept it."""
        refused = self.screen(change.data.bucket, change.data.key)
        if refused is not None:
            return refused
        event = object_event(change.kind, self._sources[change.data.bucket], change.data)
        send_event(
            self.sink, event, attempts=self._attempts, backoff=self._backoff, headers=self._headers
        )
        log.info("emitted %s", describe(event))
        return Outcome.EMITTED

    def emit_all(self, changes: Iterable[Change], tally: Tally | None = None) -> Tally:
        """Deliver changes in order, counting into ``tally``; stops at the first the sink
        refuses, raising DeliveryError: the sender retries the batch, ids make that harmless."""
        tally = Tally() if tally is None else tally
        for change in changes:
            tally.add(self.emit(change))
        return tally
