"""The event source's push endpoints, served over real HTTP, posting to a real sink.

MinIO payloads are built as MinIO documents them (webhook target, event format 2.0). The
AWS path goes through moto for real: S3 -> SNS topic -> HTTP subscription on this server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from cloudevents.http import CloudEvent

from facerank.cehttp import to_binary
from facerank.events import (
    FACE_ENROLLED,
    FACE_REJECTED,
    OBJECT_CREATED,
    OBJECT_DELETED,
    ObjectChange,
    ObjectChangeData,
    bucket_source,
    object_event,
)
from facerank.settings import Settings
from facerank.storage import FolderStore, S3Store
from functions.runtime import MAX_EVENT_BYTES
from functions.source.app import create_app
from functions.source.aws import confirmation_allowed
from functions.source.emitter import Emitter
from functions.source.verdicts import RejectedVersions
from tests.plugins.http import serving
from tests.plugins.s3_server import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.plugins.sink import EventSink

TOKEN = "s3cret-token"
ETAG = "f1671feacb8bbf7b0397c6e9364e8c92"
SEQUENCER = "17A2C1B7D8A0E5F3"

Push = Callable[[list[dict[str, Any]]], requests.Response]


# --- payloads, as the servers document them ----------------------------------------------


def s3_record(event: str, key: str, *, bucket: str = "faces") -> dict[str, Any]:
    """One S3 event record as MinIO sends it; ``key`` escaped, as it travels.

    Removals carry no eTag or size; the access key MinIO puts in ``userIdentity`` and
    ``requestParameters`` is no credential, but it is not echoed anywhere either.
    """
    obj: dict[str, Any] = {"key": key, "sequencer": SEQUENCER}
    if "ObjectCreated" in event:
        obj |= {"size": 1234, "eTag": ETAG, "contentType": "image/jpeg"}
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2024-05-01T12:00:00.000Z",
        "eventName": event,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "sourceIPAddress": "10.0.0.7"},
        "responseElements": {"x-amz-request-id": "17A2C1B7D8A0E5F3", "x-amz-id-2": "dd9025"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": "10.0.0.7", "port": "", "userAgent": "MinIO (linux; amd64)"},
    }


def aws_record(record: dict[str, Any]) -> dict[str, Any]:
    """The same change as Amazon S3 reports it: no ``s3:`` prefix, no MinIO ``source``."""
    aws = {name: value for name, value in record.items() if name != "source"}
    aws |= {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1"}
    if isinstance(record.get("eventName"), str):
        aws["eventName"] = record["eventName"].removeprefix("s3:")
    return aws


def minio_body(records: list[dict[str, Any]]) -> bytes:
    """MinIO's webhook document: EventName and Key (bucket/escaped-key) repeat record 0."""
    first = records[0] if records else {}
    bucket = first.get("s3", {}).get("bucket", {}).get("name", "")
    key = first.get("s3", {}).get("object", {}).get("key", "")
    document = {"EventName": first.get("eventName", ""), "Key": f"{bucket}/{key}"}
    return json.dumps({**document, "Records": records}).encode()


def sns_body(message_type: str = "Notification", **fields: str) -> bytes:
    """An SNS HTTP(S) delivery envelope (signature fields present, as SNS sends them)."""
    envelope = {
        "Type": message_type,
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:faces-events",
        "Timestamp": "2024-05-01T12:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem",
        **fields,
    }
    return json.dumps(envelope).encode()


def sns_notification(records: list[dict[str, Any]]) -> bytes:
    """SNS delivering S3's notification of the changes MinIO-style ``records`` describe."""
    return sns_body(Message=json.dumps({"Records": [aws_record(r) for r in records]}))


def expected_id(settings: Settings, kind: ObjectChange, key: str) -> str:
    """The id of the event for a change of ``key`` in the sample records' version."""
    data = ObjectChangeData("faces", key, ETAG if kind == "created" else "", None, SEQUENCER)
    return object_event(kind, bucket_source(settings, "faces"), data)["id"]


# --- the source under test -----------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def verdicts() -> RejectedVersions:
    """What the module's source servers learn from face.rejected.v1 events."""
    return RejectedVersions()


@pytest.fixture(scope="module")
def start_source(
    sink_server: EventSink, verdicts: RejectedVersions
) -> Iterator[Callable[[Settings], str]]:
    """Serve the source app with given settings over real HTTP; returns its base URL.

    One server per distinct settings for the whole module: stopping a server takes a while.
    """
    started: dict[Settings, str] = {}
    with ExitStack() as stack:

        def start(settings: Settings) -> str:
            if settings not in started:
                emitter = Emitter(sink_server.url, settings, attempts=2, backoff=0.01)
                app = create_app(settings, emitter, verdicts)
                started[settings] = stack.enter_context(serving(app))
            return started[settings]

        yield start


@pytest.fixture
def source(start_source: Callable[[Settings], str], settings: Settings) -> str:
    return start_source(settings)


@pytest.fixture(params=["minio", "sns"])
def push(request: pytest.FixtureRequest, source: str) -> Push:
    """POST MinIO-style records the way MinIO's webhook does, or as SNS delivers S3's."""
    endpoint = request.param

    def post(records: list[dict[str, Any]]) -> requests.Response:
        body = sns_notification(records) if endpoint == "sns" else minio_body(records)
        return requests.post(f"{source}/{endpoint}", data=body, timeout=10)

    return post


# --- both push endpoints ------------------------------------------------------------------


def test_put_becomes_one_created_event(
    push: Push, event_sink: EventSink, settings: Settings
) -> None:
    response = push([s3_record("s3:ObjectCreated:Put", "alice%2F1.jpg")])
    assert response.status_code == 200
    assert response.json() == {"emitted": 1, "ignored": 0, "rejected": 0}
    [event] = event_sink.wait_for(1)
    assert event["type"] == OBJECT_CREATED
    assert event["subject"] == "alice/1.jpg"
    assert event["source"] == bucket_source(settings, "faces")
    assert event["id"] == expected_id(settings, "created", "alice/1.jpg")
    assert event.get_data() == {
        "bucket": "faces",
        "key": "alice/1.jpg",
        "etag": ETAG,
        "size": 1234,
        "sequencer": SEQUENCER,
    }


def test_several_records_in_one_post_become_events_in_order(
    push: Push, event_sink: EventSink
) -> None:
    names = [
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "s3:ObjectCreated:Copy",
    ]
    records = [s3_record(name, f"bob%2F{i}.jpg") for i, name in enumerate(names)]
    assert push(records).json()["emitted"] == 3
    events = event_sink.wait_for(3)
    assert [e["subject"] for e in events] == ["bob/0.jpg", "bob/1.jpg", "bob/2.jpg"]


@pytest.mark.parametrize(
    ("escaped", "key"),
    [
        ("alice%2F1.jpg", "alice/1.jpg"),
        ("zo%C3%AB+smith%2Fbeach+day.jpg", "zoë smith/beach day.jpg"),
        ("alice%2F1%2B1.jpg", "alice/1+1.jpg"),
        ("%E6%9D%8E%E9%9B%B7%2F%E7%85%A7%E7%89%87.png", "李雷/照片.png"),
        ("o%27brien%2F50%25.jpg", "o'brien/50%.jpg"),
    ],
)
def test_escaped_keys_are_decoded(
    push: Push, event_sink: EventSink, escaped: str, key: str
) -> None:
    assert push([s3_record("s3:ObjectCreated:Put", escaped)]).status_code == 200
    [event] = event_sink.wait_for(1)
    assert event["subject"] == key
    assert event.get_data()["key"] == key


@pytest.mark.parametrize(
    "name", ["s3:ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated"]
)
def test_removal_without_etag_or_size_becomes_deleted_event(
    push: Push, event_sink: EventSink, settings: Settings, name: str
) -> None:
    record = s3_record(name, "alice%2F1.jpg")
    assert "eTag" not in record["s3"]["object"]
    push([record])
    [event] = event_sink.wait_for(1)
    assert event["type"] == OBJECT_DELETED
    assert event["id"] == expected_id(settings, "deleted", "alice/1.jpg")
    assert event.get_data() == {"bucket": "faces", "key": "alice/1.jpg", "sequencer": SEQUENCER}


@pytest.mark.parametrize(
    "record",
    [
        s3_record("s3:ObjectAccessed:Get", "alice%2F1.jpg"),
        s3_record("s3:ObjectCreated:PutTagging", "alice%2F1.jpg"),
        s3_record("s3:ObjectCreated:Put", "alice%2F1.jpg", bucket="gallery"),
        s3_record("s3:ObjectCreated:Put", "alice%2F.DS_Store"),
        s3_record("s3:ObjectCreated:Put", "alice%2F._1.jpg"),
    ],
    ids=["accessed", "tagging", "other-bucket", "ds-store", "appledouble"],
)
def test_records_of_no_concern_are_ignored(
    push: Push, event_sink: EventSink, record: dict[str, Any]
) -> None:
    good = s3_record("s3:ObjectCreated:Put", "alice%2Fgood.jpg")
    response = push([record, good])
    assert response.status_code == 200
    assert response.json() == {"emitted": 1, "ignored": 1, "rejected": 0}
    assert [e["subject"] for e in event_sink.wait_for(1)] == ["alice/good.jpg"]


HOSTILE_KEYS = [
    "..%2F..%2Fetc%2Fpasswd",
    "alice%2F..%2F..%2Fgallery%2Fx.json",
    "alice%2F%00.jpg",
    "alice%2F%1B%5B31mred.jpg",
    "alice%2F%E2%80%AEgpj.exe",
    "alice%2F%FF%FE.jpg",
    "%2Falice%2F1.jpg",
    "alice%2F" + "a" * 1100 + ".jpg",
    "alice%2F.facerank-tmp-0123.jpg",
]


def test_hostile_keys_are_rejected_and_the_rest_emitted(
    push: Push, event_sink: EventSink, caplog: pytest.LogCaptureFixture
) -> None:
    records = [s3_record("s3:ObjectCreated:Put", key) for key in HOSTILE_KEYS]
    records.insert(3, s3_record("s3:ObjectCreated:Put", "alice%2Fgood.jpg"))
    with caplog.at_level(logging.WARNING):
        response = push(records)
    assert response.status_code == 200
    assert response.json() == {"emitted": 1, "ignored": 0, "rejected": len(HOSTILE_KEYS)}
    assert [e["subject"] for e in event_sink.wait_for(1)] == ["alice/good.jpg"]
    assert caplog.text.count("rejected change") == len(HOSTILE_KEYS)
    assert "a" * 200 not in caplog.text  # long keys are shortened in logs


def test_redelivery_yields_the_same_ids(push: Push, event_sink: EventSink) -> None:
    records = [
        s3_record("s3:ObjectCreated:Put", "alice%2F1.jpg"),
        s3_record("s3:ObjectRemoved:Delete", "alice%2F2.jpg"),
    ]
    push(records)
    push(records)
    first, second = event_sink.wait_for(4)[:2], event_sink.events[2:]
    assert [e["id"] for e in first] == [e["id"] for e in second]
    assert first[0]["id"] != first[1]["id"]


def test_sink_down_answers_503_then_succeeds_once_it_is_back(
    push: Push, event_sink: EventSink
) -> None:
    records = [s3_record("s3:ObjectCreated:Put", "alice%2F1.jpg")]
    event_sink.status = 503
    response = push(records)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "delivery_failed"
    event_sink.status = 202
    assert push(records).status_code == 200
    assert len(event_sink.wait_for(1)) == 1


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda r: r.pop("eventName"), "Records[0].eventName must be a JSON string"),
        (lambda r: r["s3"].pop("object"), "Records[0].s3.object must be a JSON object"),
        (lambda r: r["s3"]["object"].pop("key"), "Records[0].s3.object.key must be"),
        (lambda r: r["s3"]["bucket"].update(name=7), "Records[0].s3.bucket.name must be"),
        (lambda r: r["s3"]["object"].update(size="12"), "size must be a JSON integer"),
        (lambda r: r["s3"]["object"].update(size=-1), "size must not be negative"),
        (lambda r: r["s3"]["object"].update(eTag=[]), "eTag must be a JSON string"),
    ],
)
def test_malformed_record_is_refused_whole(
    push: Push, event_sink: EventSink, mutate: Callable[[dict[str, Any]], object], problem: str
) -> None:
    bad = s3_record("s3:ObjectCreated:Put", "alice%2F1.jpg")
    mutate(bad)
    response = push([bad, s3_record("s3:ObjectCreated:Put", "alice%2F2.jpg")])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload"
    assert problem in response.json()["error"]["message"]
    event_sink.assert_quiet(0, seconds=0.1)


# --- MinIO envelope -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"Records": {}}', "'Records' must be a list"),
        (b'{"Records": [1]}', "Records[0] must be a JSON object"),
    ],
    ids=["bad-json", "not-utf8", "array", "deep", "records-object", "record-number"],
)
def test_malformed_minio_body_is_400(source: str, body: bytes, problem: str) -> None:
    response = requests.post(f"{source}/minio", data=body, timeout=10)
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"EventName": "s3:ObjectCreated:Put", "Key": "", "Records": []}']
)
def test_record_less_minio_post_is_accepted(
    source: str, event_sink: EventSink, body: bytes
) -> None:
    response = requests.post(f"{source}/minio", data=body, timeout=10)
    assert response.status_code == 200
    assert response.json()["emitted"] == 0


def test_oversized_body_is_413(source: str) -> None:
    response = requests.post(f"{source}/minio", data=b" " * (MAX_EVENT_BYTES + 1), timeout=10)
    assert response.status_code == 413


def test_healthz(source: str) -> None:
    assert requests.get(f"{source}/healthz", timeout=10).status_code == 200


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        (f"Bearer {TOKEN}x", 401),
        (TOKEN, 401),
        (f"Token {TOKEN}", 401),
        (_basic("sns", "wrong"), 401),
        ("Basic !!!", 401),
        (f"Bearer {TOKEN}", 200),
        (f"bearer  {TOKEN}", 200),
        (_basic("sns", TOKEN), 200),
    ],
)
@pytest.mark.parametrize("endpoint", ["minio", "sns"])
def test_webhook_token_is_required_when_configured(
    start_source: Callable[[Settings], str],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    authorization: str | None,
    status: int,
    endpoint: str,
) -> None:
    source = start_source(settings.replace(webhook_token=TOKEN))
    headers = {} if authorization is None else {"Authorization": authorization}
    body = sns_body("UnsubscribeConfirmation") if endpoint == "sns" else b""
    with caplog.at_level(logging.DEBUG):
        response = requests.post(f"{source}/{endpoint}", data=body, headers=headers, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert "Bearer" in response.headers["WWW-Authenticate"]
    assert TOKEN not in caplog.text


# --- SNS envelope ---------------------------------------------------------------------------


def test_s3_test_event_is_ignored(source: str, event_sink: EventSink) -> None:
    message = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "faces"}
    body = sns_body(Message=json.dumps(message))
    response = requests.post(f"{source}/sns", data=body, timeout=10)
    assert response.status_code == 200
    assert response.json()["emitted"] == 0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{}", "'Type' must be one of"),
        (sns_body("Surprise"), "'Type' must be one of"),
        (sns_body(Message="not json"), "SNS 'Message' is not valid JSON"),
        (sns_body(Message="{}"), "neither an S3 event notification nor a test event"),
        (sns_body("SubscriptionConfirmation"), "needs a 'SubscribeURL'"),
        (json.dumps({"Type": "Notification", "Message": 5}).encode(), "'Message' must be a str"),
    ],
)
def test_malformed_sns_message_is_400(source: str, body: bytes, problem: str) -> None:
    response = requests.post(f"{source}/sns", data=body, timeout=10)
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]


def test_subscription_is_confirmed_on_loopback(source: str, event_sink: EventSink) -> None:
    url = f"{event_sink.url}confirm?Action=ConfirmSubscription&Token=2336412f37"
    body = sns_body("SubscriptionConfirmation", SubscribeURL=url, Token="2336412f37")
    response = requests.post(f"{source}/sns", data=body, timeout=10)
    assert response.status_code == 200
    assert event_sink.visits == ["/confirm?Action=ConfirmSubscription&Token=2336412f37"]


def test_unreachable_confirmation_is_retryable(source: str) -> None:
    url = "http://127.0.0.1:9/?Action=ConfirmSubscription"  # discard port: nothing listens
    body = sns_body("SubscriptionConfirmation", SubscribeURL=url)
    response = requests.post(f"{source}/sns", data=body, timeout=10)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "confirmation_failed"


def test_confirmation_elsewhere_is_refused_without_fetching(
    source: str, event_sink: EventSink
) -> None:
    url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    body = sns_body("SubscriptionConfirmation", SubscribeURL=url)
    response = requests.post(f"{source}/sns", data=body, timeout=10)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "confirmation_refused"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/?Action=ConfirmSubscription", True),
        ("https://127.8.9.10/confirm", True),
        ("http://[::1]:4566/confirm", True),
        ("http://localhost:4566/confirm", True),
        ("https://minio.storage.svc:9000/?Action=ConfirmSubscription", True),
        ("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription", False),
        ("http://169.254.169.254/latest/meta-data/", False),
        ("http://127.0.0.1@evil.example/", False),
        ("http://localhost.evil.example/", False),
        ("file:///etc/passwd", False),
        ("gopher://127.0.0.1:6379/_FLUSHALL", False),
        ("not a url", False),
        ("http://[::1/confirm", False),
    ],
)
def test_confirmation_allow_list(url: str, allowed: bool) -> None:
    settings = Settings(store="s3", s3_endpoint="http://minio.storage.svc:9000")
    assert confirmation_allowed(url, settings) is allowed


# --- Amazon S3 -> SNS -> HTTP, delivered by moto ------------------------------------------


@pytest.fixture
def s3_settings(tmp_path: Path, s3_server: str) -> Settings:
    return Settings.from_env(
        {}, data_dir=tmp_path, store="s3", s3_endpoint=s3_server, webhook_token=TOKEN
    )


@pytest.fixture
def notifying_bucket(
    s3_store: S3Store,
    s3_server: str,
    s3_settings: Settings,
    start_source: Callable[[Settings], str],
) -> None:
    """The faces bucket on moto, notifying an SNS topic our /sns endpoint subscribes to.

    The token travels as basic-auth credentials in the subscription URL, as SNS requires.
    """
    source = start_source(s3_settings)
    aws = {
        "endpoint_url": s3_server,
        "region_name": "us-east-1",
        "aws_access_key_id": S3_ACCESS_KEY,
        "aws_secret_access_key": S3_SECRET_KEY,
    }
    sns, s3 = boto3.client("sns", **aws), boto3.client("s3", **aws)
    topic = sns.create_topic(Name="faces-events")["TopicArn"]
    endpoint = source.replace("http://", f"http://sns:{TOKEN}@") + "/sns"
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint)
    s3_store.ensure_bucket("faces")
    s3.put_bucket_notification_configuration(
        Bucket="faces",
        NotificationConfiguration={
            "TopicConfigurations": [
                {"TopicArn": topic, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )


@pytest.mark.usefixtures("notifying_bucket")
def test_moto_delivers_s3_changes_through_sns(
    s3_store: S3Store, s3_settings: Settings, event_sink: EventSink
) -> None:
    key = "zoë smith/beach day.jpg"
    data = b"\xff\xd8 not really a jpeg"
    s3_store.put("faces", key, data, content_type="image/jpeg")
    s3_store.delete("faces", key)
    created, deleted = event_sink.wait_for(2)
    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    source = bucket_source(s3_settings, "faces")
    assert created["type"] == OBJECT_CREATED
    assert created["source"] == source
    assert created.get_data() == {"bucket": "faces", "key": key, "etag": etag, "size": len(data)}
    assert (
        created["id"] == object_event("created", source, ObjectChangeData("faces", key, etag))["id"]
    )
    assert deleted["type"] == OBJECT_DELETED
    assert deleted.get_data() == {"bucket": "faces", "key": key}
    event_sink.assert_quiet(2, seconds=0.1)  # the S3 test event sent on configuration is not one


# --- python -m functions.source ------------------------------------------------------------


def run_source(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "functions.source"],
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_entry_point_refuses_to_start_without_a_sink(tmp_path: Path) -> None:
    process = run_source({"FACERANK_DATA_DIR": str(tmp_path)})
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "K_SINK is not set" in output


def test_a_knative_revision_without_its_sink_waits_for_the_binding(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """The first revision, made before the SinkBinding injected K_SINK, must not fail (a failed
    revision stays behind): it stays up and healthy and refuses pushes with 503, so MinIO
    queues them and the Broker retries them for the revision that has the sink."""
    port = free_port()
    env = {"FACERANK_DATA_DIR": str(tmp_path), "K_SERVICE": "facerank-source", "PORT": str(port)}
    process = run_source(env)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/healthz")
        body = minio_body([s3_record("s3:ObjectCreated:Put", "carol%2Fpushed.jpg")])
        for path in ("/minio", "/sns", "/"):
            response = requests.post(f"http://127.0.0.1:{port}{path}", data=body, timeout=10)
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "sink_not_bound"
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "K_SINK is not set yet" in output


def wait_until_healthy(url: str, timeout: float = 30.0) -> None:
    """Poll until the server answers (starting Python and importing takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.05)


def test_entry_point_runs_every_feed_and_stops_on_sigterm(
    tmp_path: Path, event_sink: EventSink, free_port: Callable[[], int]
) -> None:
    store = FolderStore(tmp_path / "buckets")
    store.ensure_bucket("faces")
    store.put("faces", "alice/before-start.jpg", b"found by reconcile")
    (store.root / "faces" / "bob").mkdir()
    port = free_port()
    env = {
        "FACERANK_DATA_DIR": str(tmp_path),
        "FACERANK_RECONCILE_INTERVAL": "0",
        "K_SINK": event_sink.url,
        "PORT": str(port),
    }
    process = run_source(env)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/healthz")
        event_sink.wait_for(1)
        (store.root / "faces" / "bob" / "dropped.jpg").write_bytes(b"found by the watcher")
        body = minio_body([s3_record("s3:ObjectCreated:Put", "carol%2Fpushed.jpg")])
        response = requests.post(f"http://127.0.0.1:{port}/minio", data=body, timeout=10)
        assert response.status_code == 200
        events = event_sink.wait_for(3)
        assert sorted(e["subject"] for e in events) == [
            "alice/before-start.jpg",
            "bob/dropped.jpg",
            "carol/pushed.jpg",
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "event source stopped" in output


def test_rejection_verdicts_from_the_broker_are_remembered(
    source: str, verdicts: RejectedVersions
) -> None:
    """face.rejected.v1 (routed by the source-on-face-rejected Trigger) lands in the memory
    reconcile consults; other events and other buckets are acknowledged and ignored."""

    def post(type_: str, data: dict[str, str]) -> int:
        event = CloudEvent({"type": type_, "source": "facerank/enroll", "id": type_}, data)
        headers, body = to_binary(event)
        return requests.post(source + "/", data=body, headers=headers, timeout=10).status_code

    rejection = {"bucket": "faces", "key": "wall/1.jpg", "etag": "e1", "reason": "no_face"}
    assert post(FACE_REJECTED, rejection) == 202
    assert post(FACE_REJECTED, {**rejection, "bucket": "other", "key": "x/2.jpg"}) == 202
    assert post(FACE_ENROLLED, {**rejection, "key": "y/3.jpg"}) == 202
    assert ("wall/1.jpg", "e1") in verdicts
    assert ("x/2.jpg", "e1") not in verdicts
    assert ("y/3.jpg", "e1") not in verdicts
    assert requests.post(source + "/", data=b"{}", timeout=10).status_code == 400
