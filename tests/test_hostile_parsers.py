"""Fuzzing every parser of a request: whatever arrives, a parsed value or a typed refusal.

The decoder has its own fuzz tests (``tests/test_decode_fuzz.py``); these cover the code that
reads requests before any pixel: the CloudEvents HTTP binding, object event data and the enroll
handler behind it, MinIO and SNS notifications, the predictor's V1 and V2 request bodies, and
object keys and identity names. Inputs mix arbitrary values with the shapes each parser
expects (so examples get past the first check and into the deeper ones). The contract is
always the same: a result that satisfies the parser's promises, or the one error type the
caller handles; anything else would be a 500 or a dead process in production.

``FACERANK_FUZZ_EXAMPLES`` sets the examples per test (default 200, a few seconds in all);
``python -m bench.fuzz --minutes 3`` runs these and the decoder's for minutes.
"""

from __future__ import annotations

import base64
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve import InferInput, InferRequest
from kserve.errors import InvalidInput

from facerank.cehttp import from_http
from facerank.errors import InvalidEventError, InvalidIdentityError, InvalidKeyError
from facerank.events import OBJECT_CREATED, OBJECT_DELETED, ObjectChangeData
from facerank.gallery import identity_from_key
from facerank.gallery.identity import MAX_IDENTITY_LENGTH
from facerank.settings import Settings
from facerank.storage import FolderStore
from facerank.storage.keys import check_key
from functions.enroll.handler import EnrollHandler, build_handler
from functions.source.aws import parse_sns, s3_changes
from functions.source.minio import parse_minio
from functions.source.records import PayloadError
from inference.model import MAX_INSTANCES, MAX_TOP_K, FacerankModel, Query
from tests.plugins.hostile import store_digest

EXAMPLES = int(os.environ.get("FACERANK_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --- strategies ---------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
"""Anything ``json.loads`` could hand a parser (NaN and huge integers included)."""

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", "..", "/", "a/../b", "a\x00b/c", "a/\x1b[31m", "\u202e", "x" * 1100, "alice/1.jpg/x"]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12).map(lambda t: f"{t}/{t}.jpg"),
)
"""Keys and names: arbitrary text, path tricks, and ``<identity>/<file>`` shapes."""


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``value``, or any JSON value in its place."""
    return st.one_of(value, json_values)


object_data = st.fixed_dictionaries(
    {"bucket": maybe(st.sampled_from(["faces", "gallery", ""])), "key": maybe(hostile_text)},
    optional={
        "etag": maybe(st.text(alphabet="0123456789abcdef", max_size=32)),
        "size": maybe(st.integers()),
        "sequencer": json_values,
    },
)
s3_record = st.fixed_dictionaries(
    {
        "eventName": maybe(
            st.sampled_from(
                ["s3:ObjectCreated:Put", "ObjectCreated:Copy", "s3:ObjectRemoved:Delete", "x"]
            )
        ),
        "s3": maybe(
            st.fixed_dictionaries(
                {
                    "bucket": maybe(st.fixed_dictionaries({"name": maybe(st.just("faces"))})),
                    "object": maybe(
                        st.fixed_dictionaries(
                            {"key": maybe(hostile_text)},
                            optional={"eTag": json_values, "size": json_values},
                        )
                    ),
                }
            )
        ),
    }
)
notification = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda records: json.dumps({"Records": records}).encode(), maybe(st.lists(s3_record))
    ),
    json_values.map(lambda value: json.dumps(value).encode()),
)


# --- the CloudEvents binding and the enroll handler ---------------------------------------

ce_headers = st.dictionaries(
    st.sampled_from(
        ["ce-id", "ce-source", "ce-type", "ce-specversion", "ce-subject", "ce-time", "content-type"]
    ),
    st.one_of(st.text(max_size=30), st.sampled_from(["1.0", "0.3", "%zz", "application/json"])),
    max_size=7,
)


@FUZZ
@given(headers=ce_headers, body=st.one_of(st.binary(max_size=64), notification))
def test_cloudevents_binding_parses_or_refuses(headers: dict[str, str], body: bytes) -> None:
    try:
        event = from_http(headers, body)
    except InvalidEventError:
        return
    assert all(event.get(name) for name in ("id", "source", "type"))
    assert event.get_data() is None or isinstance(event.get_data(), bytes)


@FUZZ
@given(data=maybe(object_data))
def test_object_event_data_parses_or_refuses(data: Any) -> None:
    try:
        parsed = ObjectChangeData.from_json(data)
    except ValueError:
        return
    assert isinstance(parsed.bucket, str)
    assert isinstance(parsed.key, str)
    assert parsed.size is None or parsed.size >= 0


@pytest.fixture(scope="module")
def enroll(tmp_path_factory: pytest.TempPathFactory) -> EnrollHandler:
    """The real enroll handler over a folder store holding one photo that is not a face."""
    root = tmp_path_factory.mktemp("enroll-fuzz")
    store = FolderStore(root / "buckets")
    store.ensure_bucket("faces")
    store.put("faces", "alice/1.jpg", b"not a photo at all")
    handler = build_handler(Settings(data_dir=root), store)
    handler.gallery.ensure()
    return handler


@settings(FUZZ, max_examples=max(20, EXAMPLES // 4))
@given(
    kind=st.sampled_from([OBJECT_CREATED, OBJECT_DELETED]),
    data=st.one_of(object_data, json_values),
)
def test_enroll_handler_answers_every_event_and_changes_nothing(
    enroll: EnrollHandler, kind: str, data: Any
) -> None:
    """Arbitrary event data reaches the handler (the broker forwards whatever it accepted)."""
    before = store_digest(enroll.store, ["gallery"])
    event = CloudEvent({"type": kind, "source": "urn:fuzz", "id": "1"}, json.dumps(data).encode())
    outcome = enroll.handle(event)
    assert outcome.verdict in ("rejected", "skipped")
    assert store_digest(enroll.store, ["gallery"]) == before


# --- the event source's notifications -----------------------------------------------------


@FUZZ
@given(body=notification)
def test_minio_notifications_parse_or_refuse(body: bytes) -> None:
    try:
        batch = parse_minio(body)
    except PayloadError:
        return
    assert batch.ignored >= 0
    for change in batch.changes:
        assert change.kind in ("created", "deleted")
        assert isinstance(change.data.key, str)


sns_envelope = st.fixed_dictionaries(
    {"Type": maybe(st.sampled_from(["Notification", "SubscriptionConfirmation", "x"]))},
    optional={
        "TopicArn": json_values,
        "Message": maybe(notification.map(lambda b: b.decode("utf-8", "replace"))),
        "SubscribeURL": maybe(st.sampled_from(["http://127.0.0.1:9/", "http://169.254.169.254/"])),
    },
)


@FUZZ
@given(body=st.one_of(st.binary(max_size=64), sns_envelope.map(lambda d: json.dumps(d).encode())))
def test_sns_messages_parse_or_refuse(body: bytes) -> None:
    try:
        envelope = parse_sns(body)
        if envelope.type == "Notification":
            s3_changes(envelope.message)
    except PayloadError:
        return
    assert envelope.type in ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")


# --- the predictor's request bodies -------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> FacerankModel:
    """The KServe model, unloaded: parsing needs no pipeline or gallery."""
    root = tmp_path_factory.mktemp("predictor-fuzz")
    return FacerankModel(Settings(data_dir=root, max_image_bytes=4096), FolderStore(root))


b64_text = st.one_of(
    st.text(max_size=24),
    st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode()),
    st.just("A" * 8000),
)
v1_instance = st.fixed_dictionaries(
    {"image": maybe(st.fixed_dictionaries({"b64": maybe(b64_text)}))},
    optional={"top_k": json_values},
)
v1_body = st.one_of(
    json_values,
    st.fixed_dictionaries({"instances": maybe(st.lists(maybe(v1_instance), max_size=18))}),
    st.builds(
        lambda data: {"specversion": "1.0", "data": data},
        st.one_of(st.text(max_size=20), st.fixed_dictionaries({"instances": st.just([])})),
    ),
)


def _check_queries(queries: list[Query], limit: int) -> None:
    assert 1 <= len(queries) <= MAX_INSTANCES
    for query in queries:
        assert isinstance(query.image, bytes)
        assert len(query.image) <= limit
        assert 1 <= query.top_k <= MAX_TOP_K


@FUZZ
@given(body=v1_body)
def test_v1_bodies_parse_or_refuse(model: FacerankModel, body: Any) -> None:
    try:
        queries = model._v1_queries(body)
    except InvalidInput:
        return
    _check_queries(queries, model.settings.max_image_bytes)


v2_tensor = st.tuples(
    st.sampled_from(["image", "img", ""]),
    st.sampled_from(["BYTES", "FP32", "INT8"]),
    st.lists(st.one_of(b64_text, st.integers(), st.binary(max_size=8)), max_size=18),
)


@FUZZ
@given(
    tensors=st.lists(v2_tensor, max_size=3),
    parameters=maybe(st.dictionaries(st.sampled_from(["top_k", "other"]), json_values, max_size=2)),
)
def test_v2_requests_parse_or_refuse(
    model: FacerankModel, tensors: list[tuple[str, str, list[Any]]], parameters: Any
) -> None:
    try:
        inputs = [InferInput(name, [len(data)], datatype, data) for name, datatype, data in tensors]
        request = InferRequest("facerank", inputs, parameters=parameters)
    except Exception:  # KServe refuses it before facerank could see it (a 4xx there)
        return
    try:
        queries = model._v2_queries(request)
    except InvalidInput:
        return
    _check_queries(queries, model.settings.max_image_bytes)


# --- keys and identities ------------------------------------------------------------------


@FUZZ
@given(key=hostile_text)
def test_keys_and_identities_parse_or_refuse(key: str) -> None:
    try:
        check_key(key)
        identity = identity_from_key(key)
    except (InvalidKeyError, InvalidIdentityError):
        return
    assert identity == unicodedata.normalize("NFC", identity)
    assert 0 < len(identity) <= MAX_IDENTITY_LENGTH
    assert not identity.startswith((".", " "))
    assert "/" not in identity
    assert Path(identity).name == identity  # one plain path segment, nothing to traverse
