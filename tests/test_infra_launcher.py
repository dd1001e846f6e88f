"""The Kubernetes training launcher: the objects it builds, and the calls it makes.

The Job and Service are built from the real facerank-trainer PodTemplate of the rendered dev
overlay and validated strictly against the Kubernetes OpenAPI schema. The launcher runs with
the real ``kubernetes`` client against a fake API server on 127.0.0.1 that authorizes every
call against the rendered facerank-retrain Role, so these tests also prove that Role is enough.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes_validate
import pytest
import requests
from kubernetes import client

from facerank.errors import ConfigError
from functions.retrain.kubernetes import (
    FINISHED_TTL_S,
    RUN_LABEL,
    TRAIN_PORT,
    InvalidRunError,
    KubernetesTrainingLauncher,
    TemplateNotFoundError,
    TrainingBackendUnavailableError,
    TrainingLaunchError,
    job_for_run,
    run_name,
    run_status,
    service_for_run,
)
from tests.plugins.http import serving
from tests.plugins.infra import get, rendered
from tests.plugins.kube_api import KUBERNETES_VERSION, FakeKubernetes
from training.errors import RunNotFoundError

NAMESPACE = "facerank"
CONFIG = "/shared/runs/r1/config.json"


@pytest.fixture(scope="module")
def trainer_template() -> dict[str, Any]:
    """The rendered facerank-trainer PodTemplate (its ``template`` is what runs copy)."""
    return get(rendered("dev"), "PodTemplate", "facerank-trainer")


@pytest.fixture(scope="module")
def retrain_role() -> dict[str, Any]:
    return get(rendered("dev"), "Role", "facerank-retrain")


@pytest.fixture
def api(
    trainer_template: dict[str, Any], retrain_role: dict[str, Any]
) -> Iterator[tuple[FakeKubernetes, KubernetesTrainingLauncher]]:
    fake = FakeKubernetes(NAMESPACE, retrain_role)
    fake.seed([trainer_template])
    with serving(fake.app()) as url:
        launcher = KubernetesTrainingLauncher(
            NAMESPACE, "facerank-trainer", client.ApiClient(client.Configuration(host=url))
        )
        yield fake, launcher


def validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


# --- the objects -----------------------------------------------------------------------------


def test_job_is_an_indexed_job_of_the_trainer_pods(trainer_template: dict[str, Any]) -> None:
    original = copy.deepcopy(trainer_template)
    job = job_for_run(trainer_template["template"], "r1", 3, CONFIG, deadline_s=7200)
    validate(job)
    assert trainer_template == original, "the template must not be modified"
    spec = job["spec"]
    assert job["metadata"]["name"] == "facerank-train-r1"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["activeDeadlineSeconds"] == 7200
    assert spec["ttlSecondsAfterFinished"] == FINISHED_TTL_S
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["maxFailedIndexes"] == 0
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "facerank-train-r1"
    assert pod["restartPolicy"] == "Never"
    assert pod["enableServiceLinks"] is False, "links would clash with FACERANK_* settings"
    template_pod = trainer_template["template"]["spec"]
    for field in ("serviceAccountName", "securityContext", "volumes"):
        assert pod[field] == template_pod[field]
    labels = spec["template"]["metadata"]["labels"]
    assert labels[RUN_LABEL] == "facerank-train-r1"
    assert labels["app.kubernetes.io/component"] == "trainer"
    (container,) = pod["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["FACERANK_TRAIN_JOB"] == env["FACERANK_TRAIN_SERVICE"] == "facerank-train-r1"
    [namespace] = [v for v in container["env"] if v["name"] == "FACERANK_TRAIN_NAMESPACE"]
    assert namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }, "a drained node's pod must not count against the run's retries"
    assert env["FACERANK_TRAIN_WORKERS"] == "3"
    assert env["FACERANK_TRAIN_CONFIG"] == CONFIG
    assert env["FACERANK_TRAIN_PORT"] == str(TRAIN_PORT), "the template's own env is kept"
    assert {p["containerPort"] for p in container["ports"]} == {TRAIN_PORT}


def test_run_variables_replace_the_templates_own(trainer_template: dict[str, Any]) -> None:
    template = copy.deepcopy(trainer_template["template"])
    env = template["spec"]["containers"][0]["env"]
    env.append({"name": "FACERANK_TRAIN_WORKERS", "value": "9"})
    job = job_for_run(template, "r1", 2, CONFIG, deadline_s=60)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [v["value"] for v in env if v["name"] == "FACERANK_TRAIN_WORKERS"] == ["2"]


def test_service_is_headless_and_names_the_workers() -> None:
    service = service_for_run("r1", job_uid="0a1b")
    validate(service)
    spec = service["spec"]
    assert service["metadata"]["name"] == "facerank-train-r1"
    assert spec["clusterIP"] == "None"
    assert spec["selector"] == {"job-name": "facerank-train-r1"}
    assert spec["publishNotReadyAddresses"] is True
    assert [p["port"] for p in spec["ports"]] == [TRAIN_PORT]
    (owner,) = service["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", "facerank-train-r1", "0a1b")
    assert "ownerReferences" not in service_for_run("r1")["metadata"]


@pytest.mark.parametrize("run_id", ["", "R1", "r_1", "-r1", "r1-", "r.1", "a" * 47, "r1\n", "ré"])
def test_unusable_run_ids_are_refused(run_id: str) -> None:
    with pytest.raises(InvalidRunError):
        run_name(run_id)


def test_the_last_pod_name_must_be_a_dns_label() -> None:
    longest = "a" * (63 - len("facerank-train-") - len("-9"))
    assert len(run_name(longest, workers=10) + "-9") == 63
    with pytest.raises(InvalidRunError, match="too long"):
        run_name(longest, workers=11)


@pytest.mark.parametrize(
    ("workers", "config", "deadline"),
    [(0, CONFIG, 60), (2, "runs/r1/config.json", 60), (2, CONFIG, 0)],
)
def test_unusable_runs_are_refused(
    trainer_template: dict[str, Any], workers: int, config: str, deadline: int
) -> None:
    with pytest.raises(InvalidRunError):
        job_for_run(trainer_template["template"], "r1", workers, config, deadline_s=deadline)


def job_with(status: dict[str, Any], workers: int = 2) -> dict[str, Any]:
    return {"spec": {"completions": workers}, "status": status}


def condition(type_: str, status: str = "True") -> dict[str, str]:
    return {"type": type_, "status": status}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, "pending"),
        ({"active": 2, "ready": 1}, "pending"),
        ({"active": 2, "ready": 2}, "running"),
        ({"active": 1, "ready": 1, "succeeded": 1}, "running"),
        ({"active": 1, "ready": 1, "failed": 1}, "pending"),
        ({"succeeded": 2, "conditions": [condition("Complete")]}, "succeeded"),
        ({"succeeded": 2, "conditions": [condition("SuccessCriteriaMet")]}, "succeeded"),
        ({"conditions": [condition("Complete", "False")], "ready": 2}, "running"),
        ({"failed": 3, "conditions": [condition("Failed")]}, "failed"),
        ({"active": 1, "conditions": [condition("FailureTarget")]}, "failed"),
    ],
)
def test_run_status_reads_the_job(status: dict[str, Any], expected: str) -> None:
    assert run_status(job_with(status)) == expected


# --- the launcher against the fake API -------------------------------------------------------


def test_start_creates_a_valid_job_and_its_owned_service(
    api: tuple[FakeKubernetes, KubernetesTrainingLauncher],
) -> None:
    fake, launcher = api
    launcher.start("r1", 2, CONFIG, deadline_s=3600)
    job = fake.stored("jobs", "facerank-train-r1")
    service = fake.stored("services", "facerank-train-r1")
    assert job["spec"]["completions"] == 2
    (owner,) = service["metadata"]["ownerReferences"]
    assert owner["uid"] == job["metadata"]["uid"]
    assert [(r.verb, r.resource) for r in fake.requests] == [
        ("get", "podtemplates"),
        ("create", "jobs"),
        ("create", "services"),
    ]


def test_start_is_idempotent(api: tuple[FakeKubernetes, KubernetesTrainingLauncher]) -> None:
    fake, launcher = api
    launcher.start("r1", 2, CONFIG, deadline_s=3600)
    uid = fake.stored("jobs", "facerank-train-r1")["metadata"]["uid"]
    launcher.start("r1", 2, CONFIG, deadline_s=3600)
    assert fake.stored("jobs", "facerank-train-r1")["metadata"]["uid"] == uid
    owner = fake.stored("services", "facerank-train-r1")["metadata"]["ownerReferences"][0]
    assert owner["uid"] == uid


def test_a_half_started_run_gets_its_service(
    api: tuple[FakeKubernetes, KubernetesTrainingLauncher],
) -> None:
    fake, launcher = api
    fake.failures["create", "services"] = 503
    with pytest.raises(TrainingBackendUnavailableError) as caught:
        launcher.start("r1", 2, CONFIG, deadline_s=3600)
    assert caught.value.retryable
    assert fake.get("services", "facerank-train-r1") is None
    launcher.start("r1", 2, CONFIG, deadline_s=3600)
    service = fake.stored("services", "facerank-train-r1")
    job = fake.stored("jobs", "facerank-train-r1")
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]


def test_status_follows_the_job(api: tuple[FakeKubernetes, KubernetesTrainingLauncher]) -> None:
    fake, launcher = api
    launcher.start("r1", 2, CONFIG, deadline_s=3600)
    assert launcher.status("r1") == "pending"
    job = fake.stored("jobs", "facerank-train-r1")
    job["status"] = {"active": 2, "ready": 2}
    assert launcher.status("r1") == "running"
    job["status"] = {"succeeded": 2, "conditions": [condition("Complete")]}
    assert launcher.status("r1") == "succeeded"
    with pytest.raises(RunNotFoundError):
        launcher.status("r2")


def test_delete_removes_job_pods_and_service(
    api: tuple[FakeKubernetes, KubernetesTrainingLauncher],
) -> None:
    fake, launcher = api
    launcher.start("r1", 2, CONFIG, deadline_s=3600)
    launcher.delete("r1")
    assert fake.get("jobs", "facerank-train-r1") is None
    assert fake.get("services", "facerank-train-r1") is None
    (job_delete,) = [r for r in fake.requests if (r.verb, r.resource) == ("delete", "jobs")]
    assert job_delete.query.get("propagationPolicy") == "Background", "pods must go too"
    launcher.delete("r1")  # absent: nothing to do, no error


def test_a_missing_template_is_named(
    api: tuple[FakeKubernetes, KubernetesTrainingLauncher],
) -> None:
    fake, launcher = api
    del fake.objects["podtemplates", "facerank-trainer"]
    with pytest.raises(TemplateNotFoundError, match="facerank-trainer"):
        launcher.start("r1", 2, CONFIG, deadline_s=3600)


def test_the_role_is_enforced(
    trainer_template: dict[str, Any], retrain_role: dict[str, Any]
) -> None:
    """Without `create services` the fake answers 403, as RBAC would: a final error."""
    role = copy.deepcopy(retrain_role)
    for rule in role["rules"]:
        if rule["resources"] == ["services"]:
            rule["verbs"].remove("create")
    fake = FakeKubernetes(NAMESPACE, role)
    fake.seed([trainer_template])
    with serving(fake.app()) as url:
        launcher = KubernetesTrainingLauncher(
            NAMESPACE, "facerank-trainer", client.ApiClient(client.Configuration(host=url))
        )
        with pytest.raises(TrainingLaunchError, match="403") as caught:
            launcher.start("r1", 2, CONFIG, deadline_s=3600)
        assert not caught.value.retryable
        other = KubernetesTrainingLauncher(
            "elsewhere", "facerank-trainer", client.ApiClient(client.Configuration(host=url))
        )
        with pytest.raises(TrainingLaunchError, match="403"):
            other.status("r1")


def test_the_fake_api_refuses_invalid_objects(
    trainer_template: dict[str, Any], retrain_role: dict[str, Any]
) -> None:
    """The fake validates strictly, so the launcher's objects passing it means something.
    (Sent by hand: the client itself refuses fields its models lack.)"""
    job = job_for_run(trainer_template["template"], "r1", 2, CONFIG, deadline_s=60)
    job["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    fake = FakeKubernetes(NAMESPACE, retrain_role)
    with serving(fake.app()) as url:
        jobs = f"{url}/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
        reply = requests.post(jobs, json=job, timeout=10)
    assert reply.status_code == 422
    assert "'resource' was unexpected" in reply.json()["message"]
    assert fake.objects == {}


def test_an_unreachable_api_is_retryable(free_port: Callable[[], int]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    launcher = KubernetesTrainingLauncher(
        NAMESPACE, "facerank-trainer", client.ApiClient(client.Configuration(host=url))
    )
    with pytest.raises(TrainingBackendUnavailableError) as caught:
        launcher.status("r1")
    assert caught.value.retryable


def test_outside_a_pod_the_launcher_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="service account"):
        KubernetesTrainingLauncher(NAMESPACE, "facerank-trainer")
