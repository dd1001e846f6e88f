"""Prometheus counters of the local broker, per trigger.

Each broker owns its registry rather than using the process-wide default, so several brokers
can live in one process (tests, restarts) without clashing registrations.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest


class BrokerMetrics:
    def __init__(self, triggers: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.accepted = self._per_trigger("accepted", "Events queued for delivery")
        self.delivered = self._per_trigger("delivered", "Events the subscriber accepted")
        self.retried = self._per_trigger("retried", "Failed attempts scheduled for a retry")
        self.dead_lettered = self._per_trigger("dead_lettered", "Events given up on")
        self.dropped = Counter(
            "facerank_broker_events_dropped",
            "Events no trigger matched",
            registry=self.registry,
        )
        for trigger in triggers:  # every series exists from the start, at zero
            for counter in (self.accepted, self.delivered, self.retried, self.dead_lettered):
                counter.labels(trigger=trigger)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _per_trigger(self, outcome: str, description: str) -> Counter:
        return Counter(
            f"facerank_broker_events_{outcome}",
            f"{description}, per trigger",
            ["trigger"],
            registry=self.registry,
        )
