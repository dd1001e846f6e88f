"""The local broker: Knative's Broker and Triggers, on one machine, from the same manifests.

It keeps the contract the functions are written against (ARCHITECTURE.md, event catalogue):

* an event is queued durably for every matching Trigger before the ingress answers 202, so an
  accepted event survives a crash and is delivered at least once, across restarts too;
* each Trigger's subscriber gets a binary-mode POST, retried on 5xx, 404, 408, 409, 429 and
  connection errors as the delivery spec says (count, backoff policy and delay, timeout);
  any other answer is final;
* a 2xx whose body is a CloudEvent is a reply: it enters the broker again and is routed by
  the Triggers like any event;
* an event given up on lands in the dead-letter folder with its delivery history, the local
  stand-in for the ``deadLetterSink``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudevents.http import CloudEvent

from facerank.broker.delivery import AttemptResult, attempt
from facerank.broker.manifests import DeliverySpec, TriggerSpec, load_eventing
from facerank.broker.metrics import BrokerMetrics
from facerank.broker.schedule import DueQueue
from facerank.broker.spool import Attempt, Envelope, Spool, now
from facerank.broker.subscribers import parse_subscribers, resolve_subscribers
from facerank.cehttp import (
    InvalidEventError,
    filter_attributes,
    from_document,
    to_document,
)
from facerank.events import describe
from facerank.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_TTL = 255
"""Reply hops an event may cause, like Knative's broker TTL: a subscriber that answers every
event with one its own Trigger matches would otherwise loop forever."""

UNEXPECTED_ERROR_DELAY = 5.0
"""Seconds before a delivery that failed on our side (say, a full disk) is tried again."""


@dataclass(frozen=True)
class Route:
    """A Trigger with what delivering to it takes: the resolved URL and the delivery spec."""

    trigger: TriggerSpec
    url: str
    delivery: DeliverySpec


class LocalBroker:
    """Routes accepted events to Triggers and delivers them from the durable queue."""

    def __init__(
        self,
        name: str,
        routes: Sequence[Route],
        spool: Spool,
        *,
        api_token: str,
        workers: int = 4,
    ) -> None:
        self.name = name
        self.spool = spool
        self._api_token = api_token
        """Presented to every subscriber: facerank's functions require it when one is set."""
        self.metrics = BrokerMetrics(route.trigger.name for route in routes)
        self._routes = {route.trigger.name: route for route in routes}
        self._due = DueQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"broker-delivery-{i}", daemon=True)
            for i in range(workers)
        ]

    @classmethod
    def from_settings(cls, settings: Settings, *, workers: int = 4) -> LocalBroker:
        """The broker the manifests in ``settings.eventing_dir`` describe (the one
        ``broker_name`` picks), subscriber URLs from ``broker_subscribers``, state in
        ``<data_dir>/broker``."""
        eventing = load_eventing(settings.eventing_dir)
        broker = eventing.broker(settings.broker_name or None)
        triggers = eventing.triggers_of(broker)
        urls = resolve_subscribers(triggers, parse_subscribers(settings.broker_subscribers))
        routes = [Route(t, urls[t.name], t.delivery or broker.delivery) for t in triggers]
        spool = Spool(settings.data_dir / "broker")
        return cls(broker.name, routes, spool, api_token=settings.api_token, workers=workers)

    def start(self) -> None:
        """Schedule what an earlier run left queued, then start delivering. Call it before
        the ingress accepts events."""
        for path in self.spool.recover():
            self._due.push(path)
        for worker in self._workers:
            worker.start()
        log.info(
            "broker %s: %d trigger(s), %d worker(s), state in %s",
            self.name,
            len(self._routes),
            len(self._workers),
            self.spool.queue_dir.parent,
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop delivering: attempts under way get ``grace`` seconds to finish; everything not
        delivered stays queued for the next start."""
        self._due.close()
        deadline = time.monotonic() + grace
        for worker in self._workers:
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))

    def ingest(self, event: CloudEvent, *, ttl: int = DEFAULT_TTL) -> list[str]:
        """Queue ``event`` durably for every matching Trigger; returns their names.

        ``event`` must come from :mod:`facerank.cehttp` (data as raw bytes). Raises
        ``OSError`` when the queue cannot be written: then nothing may be acknowledged.
        """
        attributes = filter_attributes(event)
        matched = [name for name, r in self._routes.items() if r.trigger.matches(attributes)]
        if not matched:
            self.metrics.dropped.inc()
            log.debug("no trigger matches %s: dropped", describe(event))
            return matched
        document, received = to_document(event), now()
        for name in matched:
            path = self.spool.put(Envelope(name, document, ttl, received))
            self.metrics.accepted.labels(trigger=name).inc()
            self._due.push(path)
        return matched

    def _work(self) -> None:
        while (path := self._due.take()) is not None:
            try:
                self._deliver(path)
            except Exception:
                log.exception("delivery of %s failed on our side; retrying", path)
                self._due.retry(path, UNEXPECTED_ERROR_DELAY)

    def _deliver(self, path: Path) -> None:
        """One attempt for the queue file ``path``, and what follows from its outcome."""
        envelope = self.spool.load(path)
        if envelope is None:  # delivered meanwhile, or set aside as unreadable
            self._due.release(path)
            return
        route = self._routes.get(envelope.trigger)
        try:
            event = from_document(envelope.event)
        except InvalidEventError as exc:
            self._undeliverable(path, envelope, route, f"the queued event is invalid: {exc}")
            return
        if route is None:
            self._undeliverable(path, envelope, route, "its trigger is no longer defined")
            return
        result = attempt(
            route.url, event, timeout=route.delivery.timeout, api_token=self._api_token
        )
        envelope.history.append(Attempt(now(), result.status, result.error))
        tries = len(envelope.history)
        if result.delivered:
            self._delivered(path, envelope, event, result)
        elif result.retryable and tries <= route.delivery.retry:
            self.spool.put(envelope)
            delay = route.delivery.backoff(tries)
            self.metrics.retried.labels(trigger=route.trigger.name).inc()
            _log_attempt(logging.WARNING, f"retry in {delay:.3g}s:", event, envelope, result)
            self._due.retry(path, delay)
        else:
            why = "retries exhausted" if result.retryable else "not retryable"
            self._give_up(path, envelope, route, why)
            _log_attempt(logging.ERROR, f"dead-lettered ({why}):", event, envelope, result)

    def _delivered(
        self, path: Path, envelope: Envelope, event: CloudEvent, result: AttemptResult
    ) -> None:
        if result.reply is not None:
            self._forward_reply(result.reply, envelope)
        self.spool.remove(path)
        self._due.release(path)
        self.metrics.delivered.labels(trigger=envelope.trigger).inc()
        _log_attempt(logging.INFO, "delivered", event, envelope, result)

    def _forward_reply(self, reply: CloudEvent, envelope: Envelope) -> None:
        if envelope.ttl <= 1:
            log.warning("reply %s dropped: broker TTL used up (a reply loop?)", describe(reply))
            return
        routed = self.ingest(reply, ttl=envelope.ttl - 1)
        log.info("reply %s routed to %s", describe(reply), ", ".join(routed) or "no trigger")

    def _give_up(self, path: Path, envelope: Envelope, route: Route | None, reason: str) -> None:
        """Move ``envelope`` to the dead-letter folder with why and how it was tried."""
        history = envelope.history
        details: dict[str, Any] = {
            "broker": self.name,
            "reason": reason,
            "subscriber": route.url if route else None,
            "dead_letter_sink": str(route.delivery.dead_letter or "") if route else None,
            "attempts": len(history),
            "last_status": history[-1].status if history else None,
            "last_error": history[-1].error if history else reason,
            "first_attempt": history[0].at if history else None,
            "last_attempt": history[-1].at if history else None,
            "dead_lettered": now(),
        }
        self.spool.dead_letter(envelope, details)
        self._due.release(path)
        self.metrics.dead_lettered.labels(trigger=envelope.trigger).inc()

    def _undeliverable(
        self, path: Path, envelope: Envelope, route: Route | None, reason: str
    ) -> None:
        """Dead-letter a queue file no attempt can be made for (a run with other manifests
        queued it, or it was edited by hand)."""
        self._give_up(path, envelope, route, reason)
        log.error("dead-lettered %s of trigger %s: %s", path.name, envelope.trigger, reason)


def _log_attempt(
    level: int, outcome: str, event: CloudEvent, envelope: Envelope, result: AttemptResult
) -> None:
    """One line per attempt outcome: what, for whom, how it went; never the event data."""
    log.log(
        level,
        "%s %s trigger=%s status=%s attempt=%d%s",
        outcome,
        describe(event),
        envelope.trigger,
        result.status or "-",
        len(envelope.history),
        f" error={result.error!r}" if result.error else "",
    )
