"""The security promises of the cluster manifests, checked on the rendered overlays.

No Role grants a wildcard or cluster-wide power; every container runs as non-root with a
read-only root filesystem, no privilege escalation, all capabilities dropped and resource
requests and limits (the dev overlay's in-cluster NFS server is the one, named exception);
only the retrain function gets an API token; NetworkPolicies close the namespace; and no secret
value is ever committed.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.infra import (
    INFRA,
    MINIO_USERS,
    OVERLAYS,
    ROOT,
    Document,
    Pod,
    get,
    group_of,
    identify,
    matches,
    names,
    needs_kubectl,
    pods,
    rendered,
)

pytestmark = needs_kubectl

PRIVILEGED_EXCEPTIONS = {("dev", "Deployment/nfs-server")}
"""The kernel NFS server needs root and privileges (infra/components/nfs-server); dev only."""

POWERFUL_VERBS = {"*", "escalate", "bind", "impersonate"}
SENSITIVE_RESOURCES = {"*", "secrets", "pods/exec", "roles", "rolebindings", "serviceaccounts"}


def role_problems(documents: tuple[Document, ...] | list[Document]) -> list[str]:
    """Everything in RBAC beyond "a few verbs on a few resources of this namespace"."""
    problems = []
    for document in documents:
        where = identify(document)
        if document["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{where}: cluster-wide")
        if document["kind"] == "RoleBinding" and document["roleRef"]["kind"] != "Role":
            problems.append(f"{where}: binds a {document['roleRef']['kind']}")
        for rule in document.get("rules", []) if document["kind"] == "Role" else []:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                if "*" in rule.get(key, []):
                    problems.append(f"{where}: wildcard {key}")
            problems += [f"{where}: verb {v}" for v in set(rule["verbs"]) & POWERFUL_VERBS]
            problems += [
                f"{where}: resource {r}" for r in set(rule["resources"]) & SENSITIVE_RESOURCES
            ]
            if "nonResourceURLs" in rule:
                problems.append(f"{where}: nonResourceURLs")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_role_grants_a_wildcard_or_cluster_wide_power(overlay: str) -> None:
    documents = rendered(overlay)
    assert role_problems(documents) == []
    assert names(documents, "Role") == {"facerank-retrain"}


def test_the_retrain_role_is_exactly_the_contract() -> None:
    role = get(rendered("prod"), "Role", "facerank-retrain")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("", "podtemplates", "get"),
        *(("batch", "jobs", v) for v in ("create", "get", "delete")),
        *(("", "services", v) for v in ("create", "get", "delete")),
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"verbs": ["*"]}, "wildcard verbs"),
        ({"apiGroups": ["*"]}, "wildcard apiGroups"),
        ({"resources": ["secrets"]}, "resource secrets"),
        ({"verbs": ["get", "impersonate"]}, "verb impersonate"),
    ],
)
def test_the_rbac_check_catches_power(change: dict[str, Any], problem: str) -> None:
    role = yaml.safe_load(yaml.safe_dump(get(rendered("dev"), "Role", "facerank-retrain")))
    role["rules"][0].update(change)
    cluster_role = {**role, "kind": "ClusterRole"}
    assert any(problem in p for p in role_problems([role]))
    assert any("cluster-wide" in p for p in role_problems([cluster_role]))


def container_problems(pod: Pod, container: Mapping[str, Any]) -> list[str]:
    """Deviations from: non-root, no escalation, no capabilities, read-only root filesystem,
    RuntimeDefault seccomp, CPU and memory requested and limited."""
    pod_context = pod.spec.get("securityContext", {})
    context = {**pod_context, **container.get("securityContext", {})}
    problems = []
    if context.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if context.get("runAsUser") == 0:
        problems.append("runAsUser 0")
    if context.get("privileged"):
        problems.append("privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
        problems.append("capabilities not all dropped")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("root filesystem writable")
    if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("no RuntimeDefault seccomp profile")
    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(resources.get(bound, {}))
        if missing:
            problems.append(f"no {bound} for {', '.join(sorted(missing))}")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down_and_bounded(overlay: str) -> None:
    found = {}
    for pod in pods(rendered(overlay)):
        for container in pod.containers:
            problems = container_problems(pod, container)
            if problems:
                found[f"{pod.where}/{container.get('name', '-')}"] = problems
    exempt = {where for o, where in PRIVILEGED_EXCEPTIONS if o == overlay}
    assert {where.rsplit("/", 1)[0] for where in found} == exempt, found


def test_the_container_check_catches_a_loose_container() -> None:
    pod = next(p for p in pods(rendered("dev")) if p.where == "Deployment/facerank-web")
    container = dict(pod.containers[0])
    assert container_problems(pod, container) == []
    loose = {**container, "securityContext": {}, "resources": {"requests": {"cpu": "1"}}}
    assert container_problems(pod, loose) == [
        "allowPrivilegeEscalation is not false",
        "capabilities not all dropped",
        "root filesystem writable",
        "no requests for memory",
        "no limits for cpu, memory",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_service_account_per_component_and_tokens_only_for_retrain(overlay: str) -> None:
    documents = rendered(overlay)
    accounts = {
        d["metadata"]["name"]: d.get("automountServiceAccountToken", True)
        for d in documents
        if d["kind"] == "ServiceAccount"
    }
    used = [pod.spec["serviceAccountName"] for pod in pods(documents)]
    assert len(used) == len(set(used)), "each component has its own ServiceAccount"
    assert set(used) == set(accounts), "and every ServiceAccount is used"
    with_token = {
        pod.where
        for pod in pods(documents)
        if pod.spec.get("automountServiceAccountToken", accounts[pod.spec["serviceAccountName"]])
    }
    assert with_token == {"Service/facerank-retrain"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_close_the_namespace(overlay: str) -> None:
    documents = rendered(overlay)
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    deny = get(documents, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    for pod in pods(documents):
        component = pod.labels.get("app.kubernetes.io/component")
        opened = [
            p for p in policies if p is not deny and matches(p["spec"]["podSelector"], pod.labels)
        ]
        if component == "minio-setup":
            assert opened == [], "the setup Job serves nothing"
        else:
            assert opened, f"{pod.where} is unreachable"
    knative = [
        d for d in documents if d["kind"] == "Service" and group_of(d) == "serving.knative.dev"
    ]
    for service in knative:
        visibility = service["metadata"]["labels"].get("networking.knative.dev/visibility")
        assert visibility == "cluster-local", f"{identify(service)} is exposed outside the cluster"


def test_pod_security_is_enforced_in_prod() -> None:
    labels = {
        overlay: next(d for d in rendered(overlay) if d["kind"] == "Namespace")["metadata"][
            "labels"
        ]
        for overlay in OVERLAYS
    }
    assert labels["prod"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert "pod-security.kubernetes.io/enforce" not in labels["dev"], "the NFS server is privileged"
    for overlay in OVERLAYS:
        assert labels[overlay]["pod-security.kubernetes.io/warn"] == "restricted"


# --- secrets --------------------------------------------------------------------------------

HASH_SUFFIX = re.compile(r".+-[a-z0-9]{10}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_from_generators(overlay: str) -> None:
    secrets = [d for d in rendered(overlay) if d["kind"] == "Secret"]
    assert {HASH_SUFFIX.fullmatch(s["metadata"]["name"]) is not None for s in secrets} == {True}
    assert {s["metadata"]["name"].rsplit("-", 1)[0] for s in secrets} == {
        "minio-credentials",
        "facerank-webhook-token",
        "facerank-api-token",
        "facerank-notify-webhook",
        *(f"s3-{component}" for component in MINIO_USERS),
    }


READS = {"s3:GetObject", "s3:ListBucket"}
WRITES_ONLY_UNDER: dict[str, set[str]] = {
    "predictor": set(),
    "web": {"arn:aws:s3:::faces/*/named/*", "arn:aws:s3:::gallery/unknown/*"},
    "identify": {"arn:aws:s3:::queries/results/*", "arn:aws:s3:::gallery/unknown/*"},
    "notify": {"arn:aws:s3:::gallery/notified/*"},
}
"""Where the query path may write: the predictor nowhere; the web page only what naming an
unknown group takes (its photos copied under faces/<identity>/named/, the group forgotten);
identify only its results and the unknown faces it keeps; notify only its markers of posted
events."""


@pytest.mark.parametrize("component", MINIO_USERS)
def test_minio_policies_grant_named_actions_only(component: str) -> None:
    """No wildcard action, no Deny to reason about, and the query path writes only where a
    feature of its needs to."""
    policy = json.loads((INFRA / "base" / "minio" / "policies" / f"{component}.json").read_text())
    statements = policy["Statement"]
    actions = {a for statement in statements for a in statement["Action"]}
    assert {statement["Effect"] for statement in statements} == {"Allow"}
    assert not any("*" in action for action in actions), actions
    resources = {r for statement in statements for r in statement["Resource"]}
    assert all(r.startswith("arn:aws:s3:::") and r != "arn:aws:s3:::*" for r in resources)
    if component in WRITES_ONLY_UNDER:
        written = {
            resource
            for statement in statements
            if set(statement["Action"]) - READS
            for resource in statement["Resource"]
        }
        assert written <= WRITES_ONLY_UNDER[component], written


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_mounts_only_its_own_minio_user(overlay: str) -> None:
    """Root credentials stay with MinIO and its setup Job; the training workers get none."""
    for pod in pods(rendered(overlay)):
        mounted = {
            v["secret"]["secretName"].rsplit("-", 1)[0]
            for v in pod.spec.get("volumes", [])
            if "secret" in v
        }
        component = pod.labels.get("app.kubernetes.io/component", "")
        users = {m for m in mounted if m.startswith("s3-")}
        if component == "minio-setup":
            assert users == {f"s3-{c}" for c in MINIO_USERS}, pod.where
        elif component in MINIO_USERS:
            assert users == {f"s3-{component}"}, pod.where
            assert "minio-credentials" not in mounted, pod.where
        else:
            assert not users, pod.where
            assert "minio-credentials" not in mounted or component == "minio-setup", pod.where


def committed_manifests() -> list[Path]:
    return [*INFRA.rglob("*.yaml"), ROOT / "skaffold.yaml"]


def test_no_manifest_holds_a_secret() -> None:
    for path in committed_manifests():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict):
                assert document.get("kind") != "Secret", path
                assert not {"data", "stringData"} & set(document), path


def test_committed_example_secrets_are_obviously_fake() -> None:
    examples = sorted(INFRA.glob("overlays/*/secrets/*.example"))
    assert {p.parent.parent.name for p in examples} == {"dev"}, "prod never has defaults"
    for path in examples:
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            assert "not-a-secret" in value, f"{path.name}: {key}"


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


needs_git = pytest.mark.skipif(
    git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true",
    reason="not a git checkout: cannot tell committed files from ignored ones",
)


@needs_git
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_files_are_never_committed(overlay: str) -> None:
    secrets = f"infra/overlays/{overlay}/secrets"
    for name in (
        "minio.env",
        "webhook-token.env",
        "api-token.env",
        "notify-webhook.env",
        *(f"s3-{component}.env" for component in MINIO_USERS),
    ):
        assert git("check-ignore", "--quiet", f"{secrets}/{name}").returncode == 0, name
    tracked = git("ls-files", secrets).stdout.split()
    assert all(p.endswith((".example", ".sh")) for p in tracked), tracked
