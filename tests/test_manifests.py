"""The eventing manifests: what the local broker reads from them, and that a cluster accepts them.

The real files in ``infra/base/eventing`` are parsed and routed here, and validated against
Knative's own CRD schemas (committed in ``tests/schemas``), made strict the way
``kubectl --validate=strict`` would be: the CRDs allow unknown fields, which the API server
silently drops, so a typo would otherwise pass and change nothing but behaviour.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudevents.http import CloudEvent
from jsonschema import Draft7Validator

from facerank.broker import DeliverySpec, ManifestError, TriggerSpec, load_eventing, parse_duration
from facerank.cehttp import filter_attributes
from facerank.errors import ConfigError
from facerank.events import (
    FACE_ENROLLED,
    FACE_IDENTIFIED,
    FACE_REJECTED,
    MODEL_PROMOTED,
    OBJECT_CREATED,
    OBJECT_DELETED,
    RETRAIN_REQUESTED,
)
from tests.plugins.schemas import custom_resource_schema

ROOT = Path(__file__).resolve().parent.parent
EVENTING = ROOT / "infra" / "base" / "eventing"


def event(type_: str, **extra: str) -> CloudEvent:
    return CloudEvent({"type": type_, "source": "test", "id": "1", **extra}, None)


# --- the real manifests ------------------------------------------------------------------


def test_real_manifests_parse() -> None:
    eventing = load_eventing(EVENTING)
    broker = eventing.broker()
    assert broker.name == "facerank"
    assert broker.delivery.retry == 5
    assert broker.delivery.backoff_policy == "exponential"
    assert broker.delivery.backoff_delay == 0.5
    assert broker.delivery.timeout == 150.0  # above enroll's own 120 s (see the manifest)
    assert str(broker.delivery.dead_letter) == "Service/facerank-dead-letter"
    assert {t.name for t in eventing.triggers_of(broker)} == {
        "enroll-on-object-created",
        "enroll-on-object-deleted",
        "source-on-face-rejected",
        "retrain-on-requested",
        "retrain-on-face-enrolled",
        "identify-on-object-created",
        "identify-on-object-deleted",
        "notify-on-face-identified",
    }


def test_real_backoff_matches_the_comment_in_broker_yaml() -> None:
    delivery = load_eventing(EVENTING).broker().delivery
    assert [delivery.backoff(n) for n in range(1, delivery.retry + 1)] == [0.5, 1, 2, 4, 8]


@pytest.mark.parametrize(
    ("type_", "subscribers"),
    [
        (OBJECT_CREATED, ["facerank-enroll"]),
        (OBJECT_DELETED, ["facerank-enroll"]),
        (FACE_ENROLLED, ["facerank-retrain"]),
        (FACE_REJECTED, ["facerank-source"]),
        (RETRAIN_REQUESTED, ["facerank-retrain"]),
        (MODEL_PROMOTED, []),
    ],
)
def test_real_triggers_route_events_to_their_subscribers(
    type_: str, subscribers: list[str]
) -> None:
    eventing = load_eventing(EVENTING)
    attributes = filter_attributes(event(type_))
    matched = [t for t in eventing.triggers if t.matches(attributes)]
    assert [t.subscriber.name for t in matched] == subscribers


# --- semantics ---------------------------------------------------------------------------


def test_filter_semantics_follow_knative() -> None:
    def trigger(**attributes: str) -> TriggerSpec:
        return TriggerSpec("t", "b", load_eventing(EVENTING).triggers[0].subscriber, attributes)

    created = filter_attributes(event(OBJECT_CREATED, subject="k", tenant="a"))
    assert trigger().matches(created), "an empty filter passes everything"
    assert trigger(type=OBJECT_CREATED, tenant="a").matches(created)
    assert not trigger(type=OBJECT_CREATED, tenant="b").matches(created), "all must be equal"
    assert trigger(tenant="").matches(created), "'' requires only that the attribute exists"
    assert not trigger(region="").matches(created)
    assert trigger(dataschema="").matches(created), "context attributes always exist"


@pytest.mark.parametrize(
    ("policy", "waits"),
    [("exponential", [0.1, 0.2, 0.4, 0.8]), ("linear", [0.0, 0.1, 0.2, 0.3])],
)
def test_backoff_policies(policy: Any, waits: list[float]) -> None:
    delivery = DeliverySpec(retry=4, backoff_policy=policy, backoff_delay=0.1)
    assert [delivery.backoff(n) for n in range(1, 5)] == pytest.approx(waits)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT0.5S", 0.5),
        ("PT0,5S", 0.5),
        ("PT2S", 2),
        ("PT2M", 120),
        ("PT1.5M", 90),
        ("PT1H30M", 5400),
        ("PT1H2M3S", 3723),
        ("P1D", 86400),
        ("P1DT12H", 129600),
        ("P2W", 1209600),
        ("PT0S", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "P", "PT", "T1S", "0.5S", "PT-1S", "PT1S ", "pt1s", "PT1H2S3M", "P1Y", "P1M", "PT.5S"],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_duration(text)


# --- malformed manifests -----------------------------------------------------------------

BROKER = {
    "apiVersion": "eventing.knative.dev/v1",
    "kind": "Broker",
    "metadata": {"name": "b"},
    "spec": {"delivery": {"retry": 1, "backoffPolicy": "linear", "backoffDelay": "PT1S"}},
}
TRIGGER = {
    "apiVersion": "eventing.knative.dev/v1",
    "kind": "Trigger",
    "metadata": {"name": "t"},
    "spec": {
        "broker": "b",
        "filter": {"attributes": {"type": OBJECT_CREATED}},
        "subscriber": {"uri": "http://127.0.0.1:9/"},
    },
}


def with_field(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the dotted ``path`` set (``None``: removed)."""
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last)
    else:
        node[last] = value
    return changed


def write_manifests(folder: Path, *documents: Any, name: str = "eventing.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([BROKER, with_field(TRIGGER, "spec.subscriber", None)], "spec.subscriber: is required"),
        ([BROKER, with_field(TRIGGER, "spec.broker", "other")], "'other' is not defined"),
        (
            [with_field(BROKER, "spec.delivery.backoffPolicy", "fibonacci"), TRIGGER],
            "backoffPolicy: must be exponential or linear",
        ),
        ([with_field(BROKER, "spec.delivery.backoffDelay", "1s"), TRIGGER], "ISO-8601"),
        ([with_field(BROKER, "spec.delivery.timeout", "PT0S"), TRIGGER], "longer than zero"),
        ([with_field(BROKER, "spec.delivery.retry", -1), TRIGGER], "retry: must be a non-neg"),
        ([with_field(BROKER, "spec.delivery.retry", "5"), TRIGGER], "retry: must be a non-neg"),
        (
            [with_field(BROKER, "spec.delivery.retries", 5), TRIGGER],
            "unsupported field(s) retries",
        ),
        (
            [BROKER, with_field(TRIGGER, "spec.filters", [{"exact": {"type": "x"}}])],
            "unsupported field(s) filters",
        ),
        (
            [BROKER, with_field(TRIGGER, "spec.subscriber.ref", {"kind": "Service", "name": "s"})],
            "exactly one of ref or uri",
        ),
        ([BROKER, with_field(TRIGGER, "spec.subscriber.uri", "/relative")], "absolute http"),
        (
            [BROKER, with_field(TRIGGER, "spec.subscriber", {"ref": {"name": "s"}})],
            "ref.apiVersion: is required",
        ),
        (
            [BROKER, with_field(TRIGGER, "spec.filter.attributes.type", 5)],
            "type: must be a string",
        ),
        (
            [BROKER, with_field(TRIGGER, "spec.filter.attributes.Type", "x")],
            "not a CloudEvents attribute name",
        ),
        ([BROKER, TRIGGER, TRIGGER], "a second Trigger with this name"),
        ([BROKER, with_field(TRIGGER, "metadata.name", "To_A")], "not a valid Kubernetes name"),
        (
            [BROKER, with_field(TRIGGER, "apiVersion", "eventing.knative.dev/v1beta1")],
            "must be eventing.knative.dev/v1",
        ),
        ([TRIGGER], "no Broker manifest"),
        ([BROKER, ["a", "list"]], "a document is not a mapping"),
        ([BROKER, {"kind": "Trigger"}], "apiVersion: is required"),
    ],
)
def test_malformed_manifests_are_refused(
    tmp_path: Path, documents: list[Any], message: str
) -> None:
    folder = write_manifests(tmp_path, *documents)
    with pytest.raises(ManifestError, match=re.escape(message)) as caught:
        load_eventing(folder)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.code == "invalid_manifest"


def test_unreadable_yaml_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("kind: [Broker\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"broken\.yaml: cannot read YAML"):
        load_eventing(tmp_path)
    with pytest.raises(ManifestError, match="manifest folder not found"):
        load_eventing(tmp_path / "absent")


def test_other_kinds_and_other_brokers(tmp_path: Path) -> None:
    service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {}}
    second = with_field(BROKER, "metadata.name", "second")
    folder = write_manifests(
        tmp_path, service, BROKER, second, with_field(TRIGGER, "spec.broker", "second")
    )
    eventing = load_eventing(folder)
    assert eventing.triggers_of(eventing.broker("b")) == ()
    assert [t.name for t in eventing.triggers_of(eventing.broker("second"))] == ["t"]
    with pytest.raises(ManifestError, match="several Brokers"):
        eventing.broker()
    with pytest.raises(ManifestError, match="no Broker 'third'"):
        eventing.broker("third")


def test_trigger_delivery_overrides_and_defaults(tmp_path: Path) -> None:
    own = with_field(TRIGGER, "spec.delivery", {"retry": 9, "deadLetterSink": {"uri": "http://d/"}})
    eventing = load_eventing(write_manifests(tmp_path, with_field(BROKER, "spec", None), own))
    assert eventing.broker().delivery == DeliverySpec()
    delivery = eventing.triggers[0].delivery
    assert delivery is not None
    assert (delivery.retry, delivery.backoff_delay, str(delivery.dead_letter)) == (
        9,
        0,
        "http://d/",
    )


# --- Knative CRD schemas -----------------------------------------------------------------


def crd_schema(kind: str) -> dict[str, Any]:
    """Knative's schema for ``kind`` with the root fields it lacks, strict where it can be."""
    return custom_resource_schema("eventing.knative.dev/v1", kind)


FEATURE_GATED = {"delivery": {"timeout"}}
"""Fields a Knative feature flag adds, so the CRD cannot list them: ``delivery.timeout`` is flag
``delivery-timeout`` (beta, on by default). Their values are checked by the local parser."""


def _unlisted_fields(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    """Fields the schema does not list, also under preserve-unknown nodes (a Trigger's ``spec``,
    any ``delivery``): the API server would keep a typo there, so it is checked by hand."""
    if isinstance(value, dict) and "properties" in schema:
        listed = schema["properties"]
        gated = FEATURE_GATED.get(path.rsplit(".", 1)[-1], set())
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if key not in listed and key not in gated:
                yield f"{where}: not a field of this object"
            elif key in listed:
                yield from _unlisted_fields(listed[key], child, where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            yield from _unlisted_fields(schema["items"], child, f"{path}[{index}]")


def schema_problems(document: dict[str, Any]) -> list[str]:
    """Everything a strict apply of ``document`` would object to."""
    schema = crd_schema(document.get("kind", "?"))
    problems = [
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in Draft7Validator(schema).iter_errors(document)
    ]
    problems += _unlisted_fields(schema, document, "")
    if document["kind"] == "Trigger":
        spec = document.get("spec", {})
        problems += [f"spec.{f}: required" for f in ("broker", "subscriber") if f not in spec]
        attributes = spec.get("filter", {}).get("attributes", {})
        problems += [
            f"filter {k}: not a string" for k, v in attributes.items() if type(v) is not str
        ]
    return problems


def real_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(EVENTING.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document
    ]


@pytest.mark.parametrize("document", real_documents(), ids=lambda d: d["metadata"]["name"])
def test_real_manifests_match_knative_crd_schemas(document: dict[str, Any]) -> None:
    assert schema_problems(document) == []


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (with_field(BROKER, "spec.delivery.retries", 5), "spec.delivery.retries"),
        (with_field(BROKER, "spec.delivery.retry", "5"), "'5' is not of type 'integer'"),
        (with_field(BROKER, "spec.delivery.deadLetterSink", {"reff": {}}), "'reff' was unexpected"),
        (with_field(BROKER, "spek", {}), "'spek' was unexpected"),
        (with_field(TRIGGER, "spec.filtr", {}), "spec.filtr"),
        (with_field(TRIGGER, "spec.subscriber.url", "http://x/"), "'url' was unexpected"),
        (with_field(TRIGGER, "spec.filter.attributes.type", 1), "filter type: not a string"),
        (with_field(TRIGGER, "spec.subscriber", None), "spec.subscriber: required"),
        (with_field(TRIGGER, "metadata.name", None), "'name' is a required property"),
    ],
)
def test_schema_check_rejects_typos(document: dict[str, Any], problem: str) -> None:
    assert any(problem in found for found in schema_problems(document)), schema_problems(document)


def test_the_queries_bucket_routes_to_identify_and_identified_photos_to_notify() -> None:
    """Object events carry their bucket (an extension attribute), which Triggers filter on."""
    eventing = load_eventing(EVENTING)

    def subscribers(type_: str, **extra: str) -> list[str]:
        attributes = filter_attributes(event(type_, **extra))
        return sorted(t.subscriber.name for t in eventing.triggers if t.matches(attributes))

    for type_ in (OBJECT_CREATED, OBJECT_DELETED):
        assert subscribers(type_, bucket="queries") == ["facerank-enroll", "facerank-identify"]
        assert subscribers(type_, bucket="faces") == ["facerank-enroll"]
    assert subscribers(FACE_IDENTIFIED) == ["facerank-notify"]
