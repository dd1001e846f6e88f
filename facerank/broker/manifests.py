"""Knative Broker and Trigger manifests, read the way the local broker needs them.

Why parse Knative's own YAML instead of keeping a local routing table: routing then has one
source of truth, so the embedded run and the cluster cannot disagree about which subscriber
gets which event or how often a failed delivery is retried. For the same reason a field the
local broker cannot honour (``spec.filters``, ``retryAfterMax``, TLS settings, ...) is an
error, not silently ignored: refusing to start beats behaving differently from the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import yaml

from facerank.errors import ConfigError

API_GROUP = "eventing.knative.dev"
API_VERSION = f"{API_GROUP}/v1"

BackoffPolicy = Literal["exponential", "linear"]
BACKOFF_POLICIES: tuple[BackoffPolicy, ...] = ("exponential", "linear")

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
"""A DNS-1123 subdomain, as Kubernetes requires of object names (safe as a folder name too)."""

_ATTRIBUTE = re.compile(r"[a-z0-9]+")
"""CloudEvents attribute names, which Knative enforces for filter keys."""

_NUMBER = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(
    rf"P(?:{_NUMBER}W)?(?:{_NUMBER}D)?(?:T(?=\d)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?"
)
_DURATION_UNITS = (7 * 86400, 86400, 3600, 60, 1)

_T = TypeVar("_T")


class ManifestError(ConfigError):
    """A Broker or Trigger manifest is malformed or asks for something the local broker lacks."""

    code = "invalid_manifest"


@dataclass(frozen=True)
class Destination:
    """A Knative Destination: a reference to an addressable object, or an absolute URI."""

    kind: str = ""
    name: str = ""
    uri: str = ""

    def __str__(self) -> str:
        return self.uri or f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class DeliverySpec:
    """Knative's ``spec.delivery``. Absent fields mean what Knative makes of them: no retries,
    no wait between tries, no per-attempt timeout, no dead-letter sink."""

    retry: int = 0
    backoff_policy: BackoffPolicy = "exponential"
    backoff_delay: float = 0.0
    """Seconds."""
    timeout: float | None = None
    """Seconds one attempt may take; ``None``: no limit."""
    dead_letter: Destination | None = None

    def backoff(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failed try, before the next one.

        Knative's dispatcher numbers tries from 0, so exponential waits delay, 2 delay,
        4 delay, ... and linear waits 0, delay, 2 delay, ... (its first retry is immediate).
        """
        index = failed_attempts - 1
        if self.backoff_policy == "linear":
            return self.backoff_delay * index
        return self.backoff_delay * 2**index


@dataclass(frozen=True)
class BrokerSpec:
    name: str
    delivery: DeliverySpec = DeliverySpec()


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    broker: str
    subscriber: Destination
    filter: Mapping[str, str] = field(default_factory=dict)
    """Attribute name -> required value; ``""`` requires only that the attribute exists."""
    delivery: DeliverySpec | None = None
    """Overrides the broker's delivery spec as a whole, as in Knative."""

    def matches(self, attributes: Mapping[str, str]) -> bool:
        """Knative's attribute filter: every listed attribute equal; an empty filter passes all."""
        return all(
            name in attributes and expected in ("", attributes[name])
            for name, expected in self.filter.items()
        )


@dataclass(frozen=True)
class Eventing:
    """Every Broker and Trigger of a manifest folder, cross-checked."""

    brokers: Mapping[str, BrokerSpec]
    triggers: tuple[TriggerSpec, ...]

    def broker(self, name: str | None = None) -> BrokerSpec:
        """The broker called ``name``; without a name, the only one there is."""
        if name is None:
            if len(self.brokers) != 1:
                raise ManifestError(
                    f"several Brokers ({', '.join(sorted(self.brokers))}): name the one to run"
                )
            return next(iter(self.brokers.values()))
        if name not in self.brokers:
            raise ManifestError(f"no Broker {name!r} (have: {', '.join(sorted(self.brokers))})")
        return self.brokers[name]

    def triggers_of(self, broker: BrokerSpec) -> tuple[TriggerSpec, ...]:
        return tuple(t for t in self.triggers if t.broker == broker.name)


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration such as ``PT0.5S``, ``PT2M`` or ``P1DT1H30M``.

    Years and months are refused: their length depends on the calendar, which no retry delay
    should. Raises ``ValueError``.
    """
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        raise ValueError(f"not an ISO-8601 duration (like PT0.5S or PT1H30M): {text!r}")
    return sum(
        float(number.replace(",", ".")) * unit
        for number, unit in zip(match.groups(), _DURATION_UNITS, strict=True)
        if number is not None
    )


def is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def load_eventing(folder: Path) -> Eventing:
    """Parse every Broker and Trigger in the ``*.yaml`` / ``*.yml`` files of ``folder``.

    Other kinds are skipped. A Trigger of a broker that is not defined here is an error: in
    the cluster it would never receive an event, which is a mistake to report, not to mimic.
    """
    brokers: dict[str, BrokerSpec] = {}
    triggers: dict[str, TriggerSpec] = {}
    for resource in _eventing_resources(folder):
        if resource.kind == "Broker":
            _add_unique(brokers, resource, _broker(resource))
        else:
            _add_unique(triggers, resource, _trigger(resource))
    if not brokers:
        raise ManifestError(f"no Broker manifest in {folder}")
    for trigger in triggers.values():
        if trigger.broker not in brokers:
            raise ManifestError(
                f"Trigger {trigger.name}: spec.broker {trigger.broker!r} is not defined "
                f"(have: {', '.join(sorted(brokers))})"
            )
    return Eventing(brokers, tuple(triggers.values()))


def _add_unique(table: dict[str, _T], resource: _Resource, spec: _T) -> None:
    if resource.name in table:
        raise resource.error(f"a second {resource.kind} with this name")
    table[resource.name] = spec


class _Node:
    """A mapping from a manifest that knows where it is, so each error names its field."""

    def __init__(self, data: Mapping[str, Any], path: str, where: str) -> None:
        self.data = data
        self.path = path
        self.where = where

    def error(self, message: str, key: str = "") -> ManifestError:
        path = ".".join(p for p in (self.path, key) if p)
        return ManifestError(f"{self.where}: {path + ': ' if path else ''}{message}")

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise self.error(
                f"unsupported field(s) {', '.join(unknown)} (the local broker knows "
                f"{', '.join(allowed)})"
            )

    def child(self, key: str) -> _Node | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error("must be a mapping", key)
        return _Node(value, f"{self.path}.{key}" if self.path else key, self.where)

    def require(self, key: str) -> _Node:
        node = self.child(key)
        if node is None:
            raise self.error("is required", key)
        return node

    def string(self, key: str, *, required: bool = False) -> str:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise self.error("is required", key)
            return ""
        if not isinstance(value, str):
            raise self.error(f"must be a string, not {value!r}", key)
        return value

    def duration(self, key: str) -> float | None:
        text = self.string(key)
        if not text:
            return None
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise self.error(str(exc), key) from None


@dataclass(frozen=True)
class _Resource:
    kind: str
    name: str
    spec: _Node

    def error(self, message: str) -> ManifestError:
        return ManifestError(f"{self.spec.where}: {message}")


def _eventing_resources(folder: Path) -> Iterator[_Resource]:
    if not folder.is_dir():
        raise ManifestError(f"manifest folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        for index, document in enumerate(_documents(path)):
            resource = _resource(document, f"{path.name} (document {index + 1})")
            if resource is not None:
                yield resource


def _documents(path: Path) -> Iterator[Mapping[str, Any]]:
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path.name}: cannot read YAML: {exc}") from None
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, Mapping):
            raise ManifestError(f"{path.name}: a document is not a mapping")
        yield document


def _resource(document: Mapping[str, Any], where: str) -> _Resource | None:
    """The Broker or Trigger in ``document``; ``None`` for kinds that are not ours."""
    root = _Node(document, "", where)
    api_version, kind = root.string("apiVersion", required=True), root.string("kind", required=True)
    if api_version.split("/")[0] != API_GROUP or kind not in ("Broker", "Trigger"):
        return None
    if api_version != API_VERSION:
        raise root.error(f"{kind} must be {API_VERSION}, not {api_version}", "apiVersion")
    metadata = root.require("metadata")
    name = metadata.string("name", required=True)
    if len(name) > 253 or not _NAME.fullmatch(name):
        raise metadata.error(f"{name!r} is not a valid Kubernetes name", "name")
    named = _Node(document, "", f"{where}: {kind} {name}")
    spec = named.require("spec") if kind == "Trigger" else named.child("spec")
    return _Resource(kind, name, spec or _Node({}, "spec", named.where))


def _broker(resource: _Resource) -> BrokerSpec:
    spec = resource.spec
    spec.only("config", "delivery")  # config picks the cluster's channel; nothing to do locally
    delivery = spec.child("delivery")
    return BrokerSpec(resource.name, _delivery(delivery) if delivery else DeliverySpec())


def _trigger(resource: _Resource) -> TriggerSpec:
    spec = resource.spec
    spec.only("broker", "filter", "subscriber", "delivery")
    delivery = spec.child("delivery")
    return TriggerSpec(
        name=resource.name,
        broker=spec.string("broker", required=True),
        subscriber=_destination(spec.require("subscriber")),
        filter=_filter(spec.child("filter")),
        delivery=_delivery(delivery) if delivery else None,
    )


def _filter(node: _Node | None) -> dict[str, str]:
    if node is None:
        return {}
    node.only("attributes")
    attributes = node.child("attributes")
    if attributes is None:
        return {}
    for name in attributes.data:
        if not isinstance(name, str) or not _ATTRIBUTE.fullmatch(name):
            raise attributes.error(f"{name!r} is not a CloudEvents attribute name ([a-z0-9]+)")
    return {name: attributes.string(name) for name in attributes.data}


def _delivery(node: _Node) -> DeliverySpec:
    node.only("retry", "backoffPolicy", "backoffDelay", "timeout", "deadLetterSink")
    retry = node.data.get("retry")
    retry = 0 if retry is None else retry
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise node.error(f"must be a non-negative integer, not {retry!r}", "retry")
    policy = node.string("backoffPolicy") or "exponential"
    if policy not in BACKOFF_POLICIES:
        raise node.error(f"must be exponential or linear, not {policy!r}", "backoffPolicy")
    timeout = node.duration("timeout")
    if timeout == 0:
        raise node.error("must be longer than zero", "timeout")
    sink = node.child("deadLetterSink")
    return DeliverySpec(
        retry=retry,
        backoff_policy=cast(BackoffPolicy, policy),
        backoff_delay=node.duration("backoffDelay") or 0.0,
        timeout=timeout,
        dead_letter=_destination(sink) if sink else None,
    )


def _destination(node: _Node) -> Destination:
    node.only("ref", "uri")
    ref, uri = node.child("ref"), node.string("uri")
    if (ref is None) == (not uri):
        raise node.error("needs exactly one of ref or uri")
    if ref is None:
        if not is_http_url(uri):
            raise node.error(f"must be an absolute http(s) URL, not {uri!r}", "uri")
        return Destination(uri=uri)
    ref.only("apiVersion", "kind", "name", "namespace")
    ref.string("apiVersion", required=True)
    return Destination(
        kind=ref.string("kind", required=True), name=ref.string("name", required=True)
    )
