"""The local broker: the embedded stand-in for a Knative Broker, driven by its manifests.

``python -m facerank.broker`` runs it. Modules, one job each: :mod:`~.manifests` (Broker and
Trigger YAML), :mod:`~.subscribers` (subscriber names to local URLs), :mod:`~.spool` (durable
queue and dead letters; CloudEvents on the wire and on disk are :mod:`facerank.cehttp`'s),
:mod:`~.schedule` (when a queued event is tried next), :mod:`~.delivery` (one attempt),
:mod:`~.broker` (routing and the delivery workers), :mod:`~.metrics` and :mod:`~.app` (HTTP).
"""

from facerank.broker.app import create_app
from facerank.broker.broker import LocalBroker, Route
from facerank.broker.manifests import (
    BrokerSpec,
    DeliverySpec,
    Destination,
    Eventing,
    ManifestError,
    TriggerSpec,
    load_eventing,
    parse_duration,
)

__all__ = [
    "BrokerSpec",
    "DeliverySpec",
    "Destination",
    "Eventing",
    "LocalBroker",
    "ManifestError",
    "Route",
    "TriggerSpec",
    "create_app",
    "load_eventing",
    "parse_duration",
]
