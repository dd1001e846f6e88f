"""A Kubernetes API server on 127.0.0.1 with just the endpoints the training launcher uses.

The one fake the project allows, since no cluster runs in the test suite. It speaks the real
REST paths and ``Status`` replies, so the real ``kubernetes`` client talks to it unchanged; it
authorizes every request against a Role the way RBAC does (403 for a verb, resource, object
name or namespace the Role does not grant); and it validates every object it is sent against
the Kubernetes OpenAPI schema, strictly (``kubernetes-validate``), answering 422 as the API
server would. Tests read what was asked in :attr:`FakeKubernetes.requests`.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
from flask import Flask, Response, jsonify, request

KUBERNETES_VERSION = "1.31"
"""The oldest Kubernetes the deploy section of the README supports."""

_PATH = re.compile(
    r"/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<namespace>[^/]+)/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?"
)
_KINDS = {"podtemplates": "PodTemplate", "jobs": "Job", "services": "Service"}
_DELETE_ANSWERS_OBJECT = {"services"}
"""Resources whose DELETE answers the deleted object (per the OpenAPI spec), not a Status."""
_VERBS = {"GET": "get", "POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str
    name: str
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass
class FakeKubernetes:
    """One namespace of a Kubernetes API, seen by a ServiceAccount bound to ``role``."""

    namespace: str
    role: Mapping[str, Any]
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(resource, name) -> the stored object, as the API would return it."""
    requests: list[Request] = field(default_factory=list)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    """(verb, resource) -> an HTTP status the next such request answers (a blip)."""
    watchers: list[Callable[[str, str, dict[str, Any]], None]] = field(default_factory=list)
    """Called with (verb, resource, object) after each create and delete, as the controllers
    of a cluster would react (the cluster harness starts a created Job's pods)."""

    def seed(self, documents: Iterable[Mapping[str, Any]]) -> None:
        """Store objects as if applied earlier (the rendered PodTemplate, for instance)."""
        for document in documents:
            resource = next(r for r, kind in _KINDS.items() if kind == document["kind"])
            self._store(resource, copy.deepcopy(dict(document)))

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((resource, name))

    def stored(self, resource: str, name: str) -> dict[str, Any]:
        """The object, which must exist."""
        found = self.get(resource, name)
        assert found is not None, f"no {resource}/{name} was created"
        return found

    def app(self) -> Flask:
        app = Flask("fake-kubernetes")

        @app.route("/<path:_path>", methods=list(_VERBS))
        def handle(_path: str) -> tuple[Response, int]:
            return self._handle()

        return app

    # --- one request -------------------------------------------------------------------------

    def _handle(self) -> tuple[Response, int]:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return _status(404, "NotFound", f"no route {request.path}")
        group = match["group"] or ""
        resource, name = match["resource"], match["name"] or ""
        verb = _VERBS[request.method]
        if verb == "get" and not name:
            verb = "list"
        self.requests.append(Request(verb, resource, name, dict(request.args)))
        if not self._allowed(verb, group, resource, name, match["namespace"]):
            return _status(403, "Forbidden", f"{verb} {resource} {name!r} is not granted")
        injected = self.failures.pop((verb, resource), None)
        if injected:
            return _status(injected, "InternalError", "injected failure")
        if verb == "create":
            return self._create(resource, request.get_json(force=True, silent=True))
        if verb == "get":
            found = self.get(resource, name)
            return (jsonify(found), 200) if found else _status(404, "NotFound", name)
        if verb == "list":
            items = [o for (r, _), o in self.objects.items() if r == resource]
            return jsonify(kind=f"{_KINDS[resource]}List", apiVersion="v1", items=items), 200
        if verb == "delete":
            deleted = self.objects.pop((resource, name), None)
            if deleted is None:
                return _status(404, "NotFound", name)
            self._notify("delete", resource, deleted)
            if resource in _DELETE_ANSWERS_OBJECT:
                return jsonify(deleted), 200
            return _status(200, "", f"{name} deleted", status="Success")
        return _status(405, "MethodNotAllowed", verb)

    def _allowed(self, verb: str, group: str, resource: str, name: str, namespace: str) -> bool:
        """RBAC's rule matching; ``resourceNames`` cannot narrow create or list."""
        if namespace != self.namespace:
            return False
        for rule in self.role.get("rules", []):
            if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
                continue
            if verb not in rule.get("verbs", []):
                continue
            names = rule.get("resourceNames")
            if not names or (verb not in ("create", "list") and name in names):
                return True
        return False

    def _create(self, resource: str, body: Any) -> tuple[Response, int]:
        if not isinstance(body, dict) or body.get("kind") != _KINDS.get(resource):
            return _status(400, "BadRequest", f"not a {_KINDS.get(resource)}")
        try:
            kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.absolute_path))
            return _status(422, "Invalid", f"{where}: {exc.message}")
        metadata = body["metadata"]
        if metadata.get("namespace", self.namespace) != self.namespace:
            return _status(400, "BadRequest", "the namespace of the body does not match")
        if (resource, metadata["name"]) in self.objects:
            return _status(409, "AlreadyExists", f"{resource} {metadata['name']} already exists")
        stored = self._store(resource, copy.deepcopy(body))
        self._notify("create", resource, stored)
        return jsonify(stored), 201

    def _notify(self, verb: str, resource: str, body: dict[str, Any]) -> None:
        for watcher in self.watchers:
            watcher(verb, resource, body)

    def _store(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"].update(
            namespace=self.namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self.objects[resource, body["metadata"]["name"]] = body
        return body


def _status(code: int, reason: str, message: str, status: str = "Failure") -> tuple[Response, int]:
    """The ``Status`` object the API server answers errors (and deletions) with."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": status,
        "message": message,
        "reason": reason,
        "code": code,
    }
    return jsonify(body), code
