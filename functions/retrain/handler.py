"""Retrain events in, training runs started: by request, or after enough new enrollments.

The handler only decides and starts; the run itself goes on in the background
(:class:`~functions.retrain.orchestrator.RunOrchestrator`), so the reply comes at once:
``retrain.started`` (also for a redelivered request of a run already going) or
``retrain.refused`` (bad parameters, or another run in progress).

Automatic runs are level-triggered like enrollment: on each ``face.enrolled`` the handler
counts the gallery records written since the last run started (one listing, no reads), and
starts a run when there are ``FACERANK_RETRAIN_AFTER_ENROLLMENTS`` of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from cloudevents.http import CloudEvent

from facerank.cehttp import json_data
from facerank.errors import InvalidEventError
from facerank.events import (
    FACE_ENROLLED,
    RETRAIN_REFUSED,
    RETRAIN_REQUESTED,
    RETRAIN_STARTED,
    reply_event,
    run_id_of,
)
from facerank.gallery.gallery import RECORDS
from functions.retrain.orchestrator import SOURCE, RunOrchestrator, RunRefusedError
from functions.retrain.request import RetrainRequest

log = logging.getLogger(__name__)

Background = Callable[[Callable[[], object]], None]
"""Runs a callable outside the request (a thread in the function)."""


class RetrainHandler:
    def __init__(self, orchestrator: RunOrchestrator, background: Background) -> None:
        self.orchestrator = orchestrator
        self.settings = orchestrator.settings
        self.background = background

    def handle(self, event: CloudEvent) -> CloudEvent | None:
        """The reply to ``event``, or None (an empty 202) for events that start nothing."""
        if event["type"] == RETRAIN_REQUESTED:
            return self._requested(event)
        if event["type"] == FACE_ENROLLED:
            return self._enrolled(event)
        return None

    def _requested(self, event: CloudEvent) -> CloudEvent:
        run_id = run_id_of(event)
        try:
            request = RetrainRequest.parse(json_data(event), self.settings)
            started = self.orchestrator.claim(run_id, request)
        except (InvalidEventError, ValueError, RunRefusedError) as exc:
            reason = getattr(exc, "code", "invalid_request")
            log.info("retrain request %s refused: %s", event["id"], exc)
            data = {"run_id": run_id, "reason": reason, "message": str(exc)}
            return reply_event(RETRAIN_REFUSED, event, data, source=SOURCE)
        if started:
            self.background(lambda: self.orchestrator.run(run_id, request))
        data = {"run_id": run_id, **request.to_json()}
        return reply_event(RETRAIN_STARTED, event, data, source=SOURCE)

    def _enrolled(self, event: CloudEvent) -> CloudEvent | None:
        needed = self.settings.retrain_after_enrollments
        if needed == 0 or self.orchestrator.held_run() is not None:
            return None
        since = self._last_run_start()
        gallery = self.orchestrator.gallery
        fresh = sum(
            1
            for info in gallery.store.list(gallery.bucket, RECORDS)
            if since is None or info.last_modified > since
        )
        if fresh < needed:
            return None
        log.info("%d enrollments since the last run: starting one", fresh)
        run_id = run_id_of(event)
        request = RetrainRequest.parse({}, self.settings)
        try:
            if self.orchestrator.claim(run_id, request):
                self.background(lambda: self.orchestrator.run(run_id, request))
        except RunRefusedError:
            return None  # another enrollment's event started one just now
        data = {"run_id": run_id, "trigger": f"{fresh} new enrollments", **request.to_json()}
        return reply_event(RETRAIN_STARTED, event, data, source=SOURCE)

    def _last_run_start(self) -> datetime | None:
        starts = [
            datetime.fromisoformat(run["started_at"])
            for run in self.orchestrator.registry.runs()
            if isinstance(run.get("started_at"), str)
        ]
        return max(starts, default=None)
