"""The broker's durable state: queued deliveries and dead letters, one JSON file each.

Why files: an accepted event must survive a crash or a reboot (Knative's brokers sit on durable
channels for the same reason), and a folder of small JSON documents needs no database and can
be read, fixed or replayed by hand. Every write goes to a temporary file that is fsynced and
renamed into place, so a reader never sees half a document. Layout under the state folder::

    queue/<trigger>/<event>.json        waiting for its next delivery attempt
    dead-letter/<trigger>/<event>.json  given up on: the event, every attempt and why

``<event>`` is the event id when that is a safe file name, else its SHA-256. One file per
(trigger, event id) also means a redelivered event replaces its queued copy instead of
being queued twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facerank.files import atomic_writer

log = logging.getLogger(__name__)

_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TEMP_PREFIX = ".tmp-"


def now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Attempt:
    at: str
    status: int | None
    error: str


@dataclass
class Envelope:
    """One event queued for one trigger, with its delivery history."""

    trigger: str
    event: dict[str, Any]
    """Structured-mode document (:func:`facerank.cehttp.to_document`)."""
    ttl: int
    """Reply hops left: an event replying to itself forever is dropped when it reaches 0."""
    received: str
    history: list[Attempt] = field(default_factory=list)

    @property
    def event_id(self) -> str:
        return str(self.event["id"])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Envelope:
        """Raises ``KeyError`` or ``TypeError`` for documents that are not envelopes."""
        return cls(
            trigger=str(data["trigger"]),
            event=dict(data["event"]),
            ttl=int(data["ttl"]),
            received=str(data["received"]),
            history=[Attempt(**attempt) for attempt in data["history"]],
        )


class Spool:
    def __init__(self, root: Path) -> None:
        self.queue_dir = root / "queue"
        self.dead_letter_dir = root / "dead-letter"

    def queue_path(self, trigger: str, event_id: str) -> Path:
        return self.queue_dir / trigger / f"{_file_stem(event_id)}.json"

    def put(self, envelope: Envelope) -> Path:
        """Write (or rewrite) ``envelope`` durably; returns its queue file."""
        path = self.queue_path(envelope.trigger, envelope.event_id)
        _write_atomically(path, envelope.to_json())
        return path

    def load(self, path: Path) -> Envelope | None:
        """The envelope in ``path``; ``None`` if it is gone or unreadable (set aside, logged)."""
        try:
            return Envelope.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = path.with_suffix(".corrupt")
            log.error("unreadable queue file %s (%s): moved to %s", path, exc, aside.name)
            with suppress(OSError):
                path.replace(aside)
            return None

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def dead_letter(self, envelope: Envelope, details: Mapping[str, Any]) -> Path:
        """Record ``envelope`` as undeliverable, then drop it from the queue (in that order)."""
        path = self.dead_letter_dir / envelope.trigger / f"{_file_stem(envelope.event_id)}.json"
        _write_atomically(path, {**details, **envelope.to_json()})
        self.remove(self.queue_path(envelope.trigger, envelope.event_id))
        return path

    def recover(self) -> list[Path]:
        """Queue files left by an earlier run, oldest first; clears its unfinished temp files.

        Call it before anything writes to the queue: a temp file is taken as a crash's leftover.
        """
        for temp in self.queue_dir.glob(f"*/{_TEMP_PREFIX}*"):
            temp.unlink(missing_ok=True)
        return sorted(self.queue_dir.glob("*/*.json"), key=lambda p: p.stat().st_mtime_ns)


def _file_stem(event_id: str) -> str:
    if _SAFE_STEM.fullmatch(event_id):
        return event_id
    return "sha256-" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def _write_atomically(path: Path, document: Mapping[str, Any]) -> None:
    with atomic_writer(path, temp_prefix=_TEMP_PREFIX) as file:
        file.write(json.dumps(document, ensure_ascii=False, indent=1).encode())
