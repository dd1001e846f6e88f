"""MinIO's part, played by moto's S3 server: the same S3 API, set up by the overlay's setup
Job, announcing changes to the overlay's webhook target the way MinIO does.

moto has no MinIO webhook targets, so a WSGI layer in front of it watches successful object
PUTs and DELETEs on subscribed buckets and POSTs MinIO's notification document to the endpoint
and with the bearer token the MinIO Deployment's ``MINIO_NOTIFY_WEBHOOK_*_<TARGET>`` variables
name, from a queue in order (MinIO's ``queue_dir``). What the setup Job's ``mc`` script does is
read from the script itself (the buckets of ``mc mb``, the subscriptions of ``mc event add``)
and from what the Job mounts for its ``mc admin`` loop: each user's Secret under ``$USERS``,
each policy under ``$POLICIES``. MinIO's policy check is played too, for the S3 calls facerank
makes: the access key of a request's signature picks the user, the request its action
(``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject``, ``s3:ListBucket``, ...) and resource,
and the user's IAM-style policy allows it or the request is answered 403 ``AccessDenied``.
The signature itself is not verified (moto does not either): the check is about which
component may do what. Every notification the endpoint does not answer with 2xx, and every
refused request, is recorded in :attr:`errors`.
"""

from __future__ import annotations

import fnmatch
import json
import queue
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote

import requests
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

_ARN = re.compile(r"arn:minio:sqs::(?P<target>[^:]+):webhook")
_EVENTS = {"put": "s3:ObjectCreated:Put", "delete": "s3:ObjectRemoved:Delete"}
_SUBRESOURCES = {"uploadId", "partNumber", "tagging", "acl", "retention", "legal-hold"}


@dataclass(frozen=True)
class Webhook:
    """One MinIO webhook target (``MINIO_NOTIFY_WEBHOOK_*_<target>``)."""

    target: str
    endpoint: str
    token: str


def webhooks(env: Mapping[str, str]) -> dict[str, Webhook]:
    """The enabled webhook targets of a MinIO container's environment."""
    found = {}
    for name, value in env.items():
        match = re.fullmatch(r"MINIO_NOTIFY_WEBHOOK_ENABLE_(\w+)", name)
        if match and value == "on":
            target = match[1]
            found[target] = Webhook(
                target,
                env[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{target}"],
                env.get(f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{target}", ""),
            )
    return found


@dataclass(frozen=True)
class SetupPlan:
    buckets: tuple[str, ...]
    subscriptions: tuple[tuple[str, frozenset[str], str], ...]
    """(bucket, events such as ``put``, webhook target)."""


def setup_plan(script: str, env: Mapping[str, str]) -> SetupPlan:
    """What the setup Job's ``mc`` script creates, its variables expanded from ``env``."""
    buckets: list[str] = []
    subscriptions = []
    loop_values: list[str] = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], m[0]), line))
        if words[:3] == ["for", "bucket", "in"]:
            loop_values = [w.rstrip(";") for w in words[3:] if w not in ("do", ";")]
        elif words[:2] == ["mc", "mb"]:
            target = words[-1].split("/", 1)[1]
            buckets += loop_values if "$bucket" in target else [target]
        elif words[:3] == ["mc", "event", "add"]:
            events = words[words.index("--event") + 1].split(",")
            bucket = next(w for w in words[3:] if "/" in w and not w.startswith("-"))
            arn = _ARN.fullmatch(words[-1])
            assert arn, f"setup Job subscribes to {words[-1]!r}, not a MinIO webhook ARN"
            subscriptions.append((bucket.split("/", 1)[1], frozenset(events), arn["target"]))
    return SetupPlan(tuple(buckets), tuple(subscriptions))


_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def s3_action(method: str, key: str, query: Mapping[str, Any]) -> str:
    """The IAM action of one S3 request (the calls facerank's S3 client makes)."""
    if not key:
        if method == "PUT":
            return "s3:CreateBucket"
        return "s3:GetBucketLocation" if "location" in query else "s3:ListBucket"
    if method in ("GET", "HEAD"):
        return "s3:GetObject"
    return {"PUT": "s3:PutObject", "DELETE": "s3:DeleteObject"}.get(method, f"s3:{method}")


def allows(policy: Mapping[str, Any], action: str, resource: str) -> bool:
    """IAM evaluation: some Allow statement matches and no Deny does."""
    verdict = False
    for statement in policy.get("Statement", []):
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            if statement.get("Effect") == "Deny":
                return False
            verdict = True
    return verdict


@dataclass
class MinioStandIn:
    address: str
    port: int
    translate: Callable[[str], str]
    """Cluster URL -> this machine's (the webhook endpoint names a cluster Service)."""
    targets: dict[str, Webhook] = field(default_factory=dict)
    subscriptions: dict[str, tuple[frozenset[str], Webhook]] = field(default_factory=dict)
    root_user: str = ""
    users: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Access key -> (user name, policy); empty: every request allowed."""
    errors: list[str] = field(default_factory=list)
    delivered: int = 0
    _queue: queue.Queue[tuple[Webhook, dict[str, Any]] | None] = field(default_factory=queue.Queue)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self.address, self.port, self._notifying(app), True, request_handler=MotoRequestHandler
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        # moto keeps its state per process, shared with every other moto server of the test
        # session: start from nothing, like a fresh MinIO volume.
        reset = requests.post(f"{self.url}/moto-api/reset", timeout=30)
        assert reset.ok, f"moto reset failed: {reset.status_code}"
        self._sender = threading.Thread(target=self._send_all, daemon=True)
        self._sender.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._sender.join(30)
        self._server.shutdown()

    def set_up(self, plan: SetupPlan, create_bucket: Callable[[str], None]) -> None:
        for bucket in plan.buckets:
            create_bucket(bucket)
        for bucket, events, target in plan.subscriptions:
            assert target in self.targets, f"no webhook target {target} is enabled on MinIO"
            self.subscriptions[bucket] = (events, self.targets[target])

    def drain(self, deadline_s: float = 60) -> None:
        """Until every notification queued so far has been answered."""
        end = time.monotonic() + deadline_s
        while self._queue.unfinished_tasks:
            assert time.monotonic() < end, "MinIO notifications still queued"
            time.sleep(0.05)

    # --- notifications -----------------------------------------------------------------------

    def add_user(self, name: str, access_key: str, policy: dict[str, Any]) -> None:
        self.users[access_key] = (name, policy)

    def _refusal(self, environ: Mapping[str, Any]) -> str:
        """Why MinIO would refuse this request; empty when it would not."""
        if not self.users or environ["PATH_INFO"].startswith("/moto-api/"):
            return ""  # the harness's own reset, not an S3 request
        signed = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        access_key = signed[1] if signed else ""
        if access_key == self.root_user:
            return ""
        if access_key not in self.users:
            return f"unknown access key {access_key!r}"
        name, policy = self.users[access_key]
        bucket, _, key = unquote(environ["PATH_INFO"]).lstrip("/").partition("/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        action = s3_action(environ["REQUEST_METHOD"], key, query)
        resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")
        if allows(policy, action, resource):
            return ""
        return f"user {name}: {action} on {resource} is not allowed by its policy"

    def _notifying(self, app: Any) -> Callable[..., Iterable[bytes]]:
        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            refusal = self._refusal(environ)
            if refusal:
                self.errors.append(f"refused: {refusal}")
                body = f"<Error><Code>AccessDenied</Code><Message>{refusal}</Message></Error>"
                start_response("403 Forbidden", [("Content-Type", "application/xml")])
                return [body.encode()]
            captured: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
                captured.update(status=int(status.split()[0]), headers=dict(headers))
                return start_response(status, headers, *rest)

            body = app(environ, capture)
            self._announce(environ, captured)
            return body

        return middleware

    def _announce(self, environ: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        method = environ["REQUEST_METHOD"]
        bucket, _, key = unquote(environ["PATH_INFO"]).lstrip("/").partition("/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if not key or _SUBRESOURCES & set(query) or bucket not in self.subscriptions:
            return
        events, webhook = self.subscriptions[bucket]
        status = response.get("status", 500)
        if method == "PUT" and status == 200 and "put" in events:
            etag = response["headers"].get("ETag", "").strip('"')
            size = int(environ.get("CONTENT_LENGTH") or 0)
            self._queue.put((webhook, _document("put", bucket, key, etag, size)))
        elif method == "DELETE" and status == 204 and "delete" in events:
            self._queue.put((webhook, _document("delete", bucket, key, "", 0)))

    def _send_all(self) -> None:
        while (item := self._queue.get()) is not None:
            webhook, document = item
            try:
                response = requests.post(
                    self.translate(webhook.endpoint),
                    data=json.dumps(document),
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {webhook.token}",
                    },
                    timeout=30,
                )
                if response.ok:
                    self.delivered += 1
                else:
                    self.errors.append(f"{document['Key']}: {response.status_code} {response.text}")
            except requests.RequestException as exc:
                self.errors.append(f"{document['Key']}: {exc}")
            finally:
                self._queue.task_done()
        self._queue.task_done()


def _document(event: str, bucket: str, key: str, etag: str, size: int) -> dict[str, Any]:
    """MinIO's notification body (``event.Log``): one record, the key query-escaped."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe=""), "sequencer": f"{time.time_ns():X}"}
    if event == "put":
        obj.update(size=size, eTag=etag, contentType="application/octet-stream")
    name = _EVENTS[event]
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
    }
    return {"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]}
