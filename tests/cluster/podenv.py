"""A container's environment, as the kubelet builds it, then translated for this machine.

The kubelet's order (``kubelet_pods.go``, ``makeEnvironmentVariables``): ``envFrom`` sources in
turn, then ``env`` entries (``$(VAR)`` expanded against what came before and the service
variables; ``valueFrom`` resolved: ConfigMap and Secret keys, downward-API fields), and last the
service variables (the ``kubernetes`` Service always, the namespace's service links unless
``enableServiceLinks: false``) for every name not set yet. The container runtime starts from
the image's ``ENV`` and lets all of that override it. Knative and SinkBindings add their
variables to the pod spec's ``env`` before any of this (``extra``), so they take part like the
manifest's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tests.cluster.volumes import secret_data

_REFERENCE = re.compile(r"\$\$|\$\((\w+)\)")
_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _find(documents: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any]:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise LookupError(f"{kind}/{name} is referenced but not defined by the overlay")


def _source_data(documents: Iterable[Mapping[str, Any]], kind: str, name: str) -> dict[str, str]:
    document = _find(documents, kind, name)
    if kind == "Secret":
        return {k: v.decode() for k, v in secret_data(document).items()}
    return dict(document.get("data") or {})


def expand(value: str, known: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names replaced, ``$$`` an escaped ``$``."""
    return _REFERENCE.sub(lambda m: "$" if m[0] == "$$" else known.get(m[1], m[0]), value)


def downward(path: str, pod: Mapping[str, Any]) -> str:
    """A ``fieldRef`` of the pod (``pod`` holds metadata, spec and status as the API does)."""
    labelled = _FIELD.fullmatch(path)
    if labelled:
        return str(pod["metadata"].get(labelled[1], {}).get(labelled[2], ""))
    section, _, name = path.partition(".")
    value = pod.get(section, {}).get(name)
    if value is None:
        raise LookupError(f"fieldRef {path} is not available to pods")
    return str(value)


def kubelet_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    documents: list[Mapping[str, Any]],
    service_env: Mapping[str, str],
    extra: Iterable[Mapping[str, Any]] = (),
) -> dict[str, str]:
    """The variables the kubelet gives ``container`` of ``pod`` (before the image's)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, reference = (
            ("ConfigMap", source["configMapRef"])
            if "configMapRef" in source
            else ("Secret", source["secretRef"])
        )
        for key, value in _source_data(documents, kind, reference["name"]).items():
            env[source.get("prefix", "") + key] = value
    for variable in [*container.get("env", []), *extra]:
        env[variable["name"]] = _value(variable, pod, documents, {**service_env, **env})
    for name, value in service_env.items():
        env.setdefault(name, value)
    return env


def _value(
    variable: Mapping[str, Any],
    pod: Mapping[str, Any],
    documents: list[Mapping[str, Any]],
    known: Mapping[str, str],
) -> str:
    if "valueFrom" not in variable:
        return expand(str(variable.get("value", "")), known)
    source = variable["valueFrom"]
    if "fieldRef" in source:
        return downward(source["fieldRef"]["fieldPath"], pod)
    for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
        if key in source:
            reference = source[key]
            return _source_data(documents, kind, reference["name"])[reference["key"]]
    raise NotImplementedError(f"env {variable['name']}: {sorted(source)} is not supported")


def translate(env: Mapping[str, str], translate_value: Callable[[str, str], str]) -> dict[str, str]:
    """Every value passed through ``translate_value(name, value)``; ``PATH``-like lists of
    absolute paths element by element."""
    translated: dict[str, str] = {}
    for name, value in env.items():
        parts = value.split(":")
        if len(parts) > 1 and all(p.startswith("/") for p in parts):
            translated[name] = ":".join(translate_value(name, p) for p in parts)
        else:
            translated[name] = translate_value(name, value)
    return translated
