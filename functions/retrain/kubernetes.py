"""Training runs as Kubernetes Jobs: how the retrain function starts, follows and removes them.

A run of N workers is an Indexed Job ``facerank-train-<run>`` (one pod per worker index;
Kubernetes sets ``JOB_COMPLETION_INDEX``) plus a headless Service of the same name that is the
pods' ``subdomain``, so worker ``i`` answers at
``facerank-train-<run>-<i>.facerank-train-<run>.<namespace>.svc``: the addresses
MultiWorkerMirroredStrategy's cluster spec lists. The pod spec is copied from the
``facerank-trainer`` PodTemplate (``infra/base/training/trainer.yaml``), so image, resources,
volumes and security settings stay the manifests' (kustomize and skaffold set them); this
module adds only what differs per run.

The objects are built by pure functions (:func:`job_for_run`, :func:`service_for_run`) from
plain dictionaries, so tests validate exactly what would be sent against the Kubernetes OpenAPI
schemas, and the launcher needs no more than the retrain Role grants: get the PodTemplate,
create/get/delete Jobs and Services.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from facerank.errors import ConfigError, FacerankError
from training.errors import RunNotFoundError

log = logging.getLogger(__name__)

RunStatus = Literal["pending", "running", "succeeded", "failed"]

NAME_PREFIX = "facerank-train-"
TRAIN_PORT = 2222
"""The workers' gRPC port (``FACERANK_TRAIN_PORT`` in the PodTemplate)."""

EXIT_PERMANENT = 2
"""``training.worker``'s exit status for a failure no retry can mend."""

RETRIES_PER_WORKER = 2
"""A worker pod that fails is replaced this often; then the whole run fails at once
(``maxFailedIndexes: 0``): MultiWorkerMirroredStrategy cannot finish without every worker."""

FINISHED_TTL_S = 86_400
"""A finished run's Job (and, through its owner reference, its Service) is kept this long for
``status`` and ``kubectl logs``, then garbage-collected."""

RUN_LABEL = "app.kubernetes.io/instance"
_REQUEST_TIMEOUT_S = 30
_MAX_NAME = 63
"""Pods of an Indexed Job are named and addressed ``<job>-<index>``: a DNS label."""
_RUN_ID = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

_T = TypeVar("_T")


class TrainingLaunchError(FacerankError):
    """The Kubernetes API refused a request of the launcher (forbidden, invalid, ...)."""

    code = "training_launch_failed"


class TrainingBackendUnavailableError(TrainingLaunchError):
    """The Kubernetes API could not be reached or failed transiently; retrying may succeed."""

    code = "training_backend_unavailable"
    retryable = True


class InvalidRunError(TrainingLaunchError):
    """A run id, worker count, deadline or config path no Job could be made of."""

    code = "invalid_run"


class TemplateNotFoundError(TrainingLaunchError):
    """The PodTemplate the workers are copied from does not exist in the namespace."""

    code = "training_template_missing"


def run_name(run_id: str, workers: int = 1) -> str:
    """``facerank-train-<run_id>``, the name of the run's Job and Service.

    Raises :class:`InvalidRunError` unless ``run_id`` is lowercase letters, digits and inner
    dashes, short enough that the last worker's pod name ``<name>-<workers - 1>`` is a DNS label.
    """
    name = NAME_PREFIX + run_id
    if not _RUN_ID.fullmatch(run_id):
        raise InvalidRunError(
            f"run id {run_id[:80]!r} must be lowercase letters, digits and inner dashes"
        )
    if len(f"{name}-{workers - 1}") > _MAX_NAME:
        raise InvalidRunError(
            f"run id {run_id!r} is too long: pod name {name}-{workers - 1} exceeds "
            f"{_MAX_NAME} characters"
        )
    return name


def job_for_run(
    pod_template: Mapping[str, Any],
    run_id: str,
    workers: int,
    config_path: str,
    *,
    deadline_s: int,
) -> dict[str, Any]:
    """The Indexed Job of one training run, its pods copied from ``pod_template``.

    ``pod_template`` is a PodTemplate's ``template`` (a PodTemplateSpec, in API field names).
    Every container gets ``FACERANK_TRAIN_JOB``, ``FACERANK_TRAIN_SERVICE``,
    ``FACERANK_TRAIN_NAMESPACE`` (the pod's own, from the downward API), ``FACERANK_TRAIN_WORKERS``
    and ``FACERANK_TRAIN_CONFIG`` (replacing any the template set).
    """
    if workers < 1:
        raise InvalidRunError(f"a run needs at least one worker, not {workers}")
    if deadline_s < 1:
        raise InvalidRunError(f"the deadline must be a positive number of seconds: {deadline_s}")
    if not PurePosixPath(config_path).is_absolute():
        raise InvalidRunError(f"the run's config path must be absolute: {config_path!r}")
    name = run_name(run_id, workers)
    metadata = pod_template.get("metadata") or {}
    labels = {**(metadata.get("labels") or {}), RUN_LABEL: name}
    spec = copy.deepcopy(dict(pod_template["spec"]))
    spec["subdomain"] = name  # with the headless Service: <job>-<index>.<service> resolves
    spec["restartPolicy"] = "Never"  # required by backoffLimitPerIndex
    # Service links would put FACERANK_<SERVICE>_PORT=tcp://... beside the settings of the same
    # names, and Settings refuses them: whatever the template says, a worker gets none.
    spec["enableServiceLinks"] = False
    run_env = [
        {"name": "FACERANK_TRAIN_JOB", "value": name},
        {"name": "FACERANK_TRAIN_SERVICE", "value": name},
        {
            "name": "FACERANK_TRAIN_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "FACERANK_TRAIN_WORKERS", "value": str(workers)},
        {"name": "FACERANK_TRAIN_CONFIG", "value": config_path},
    ]
    ours = {variable["name"] for variable in run_env}
    for container in spec["containers"]:
        kept = [v for v in container.get("env") or [] if v["name"] not in ours]
        container["env"] = kept + copy.deepcopy(run_env)
    pod_metadata: dict[str, Any] = {"labels": labels}
    if metadata.get("annotations"):
        pod_metadata["annotations"] = dict(metadata["annotations"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            "backoffLimitPerIndex": RETRIES_PER_WORKER,
            "maxFailedIndexes": 0,
            "activeDeadlineSeconds": deadline_s,
            "ttlSecondsAfterFinished": FINISHED_TTL_S,
            # A pod evicted by a node drain or preemption (condition DisruptionTarget) is
            # replaced without counting as a failure: the run resumes from its checkpoint.
            # Exit 2 is the worker's permanent failure (bad config or data): never retried.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                    {
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": [EXIT_PERMANENT]},
                    },
                ]
            },
            "template": {"metadata": pod_metadata, "spec": spec},
        },
    }


def service_for_run(run_id: str, job_uid: str | None = None) -> dict[str, Any]:
    """The headless Service that gives the run's workers their DNS names.

    Owned by the run's Job when ``job_uid`` is given, so it goes when the Job does.
    ``publishNotReadyAddresses``: workers look each other up while they start, before they are
    ready, and MultiWorkerMirroredStrategy cannot start until every one is found.
    """
    name = run_name(run_id)
    metadata: dict[str, Any] = {"name": name, "labels": {RUN_LABEL: name}}
    if job_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "clusterIP": "None",
            "selector": {"job-name": name},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "grpc", "port": TRAIN_PORT, "targetPort": TRAIN_PORT}],
        },
    }


def run_status(job: Mapping[str, Any]) -> RunStatus:
    """What a Job (in API field names) says about its run.

    ``running`` once every worker is up (ready, or already done), since training proper starts
    only then; ``pending`` before that, and while a failed worker is being replaced.
    """
    status = job.get("status") or {}
    conditions = {
        c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    if conditions & {"Failed", "FailureTarget"}:
        return "failed"
    if conditions & {"Complete", "SuccessCriteriaMet"}:
        return "succeeded"
    up = (status.get("ready") or 0) + (status.get("succeeded") or 0)
    return "running" if up >= job["spec"]["completions"] else "pending"


class KubernetesTrainingLauncher:
    """Starts, follows and deletes training runs in one namespace."""

    def __init__(
        self, namespace: str, template: str, api_client: client.ApiClient | None = None
    ) -> None:
        """``api_client`` None: the pod's own service account (in-cluster configuration)."""
        self.namespace = namespace
        self.template = template
        self._client = api_client or _in_cluster_client()
        self._core = client.CoreV1Api(self._client)
        self._batch = client.BatchV1Api(self._client)

    def start(self, run_id: str, workers: int, config_path: str, *, deadline_s: int) -> None:
        """Create the run's Job and Service. Idempotent: a run already started is left as is."""
        template = self._request(
            f"read PodTemplate {self.template}",
            self._core.read_namespaced_pod_template,
            self.template,
            self.namespace,
            tolerate=404,
        )
        if template is None:
            raise TemplateNotFoundError(
                f"PodTemplate {self.template!r} not found in namespace {self.namespace!r}"
            )
        pod_template = self._client.sanitize_for_serialization(template.template)
        job = job_for_run(pod_template, run_id, workers, config_path, deadline_s=deadline_s)
        name = job["metadata"]["name"]
        created = self._request(
            f"create Job {name}",
            self._batch.create_namespaced_job,
            self.namespace,
            job,
            tolerate=409,
        ) or self._read_job(name)
        if created is None:  # deleted between our create and our read: start afresh
            raise TrainingBackendUnavailableError(f"Job {name} vanished while it was started")
        self._request(
            f"create Service {name}",
            self._core.create_namespaced_service,
            self.namespace,
            service_for_run(run_id, created.metadata.uid),
            tolerate=409,
        )
        log.info("training run %s: %d worker(s), config %s", name, workers, config_path)

    def status(self, run_id: str) -> RunStatus:
        """``pending``, ``running``, ``succeeded`` or ``failed``; RunNotFoundError if no Job
        (never started, deleted, or cleaned up after ``FINISHED_TTL_S``)."""
        job = self._read_job(run_name(run_id))
        if job is None:
            raise RunNotFoundError(f"no training run {run_id!r} in namespace {self.namespace!r}")
        return run_status(self._client.sanitize_for_serialization(job))

    def delete(self, run_id: str) -> None:
        """Stop the run: its Job, pods and Service go. Deleting an absent run is not an error."""
        name = run_name(run_id)
        self._request(
            f"delete Job {name}",
            self._batch.delete_namespaced_job,
            name,
            self.namespace,
            propagation_policy="Background",
            tolerate=404,
        )
        self._request(
            f"delete Service {name}",
            self._core.delete_namespaced_service,
            name,
            self.namespace,
            tolerate=404,
        )
        log.info("training run %s deleted", name)

    def _read_job(self, name: str) -> Any:
        return self._request(
            f"read Job {name}", self._batch.read_namespaced_job, name, self.namespace, tolerate=404
        )

    def _request(
        self, what: str, call: Callable[..., _T], *args: Any, tolerate: int, **kwargs: Any
    ) -> _T | None:
        """``call`` with a timeout; None when the API answers ``tolerate`` (404: absent, 409:
        already exists); any other failure as a typed error naming ``what``."""
        try:
            return call(*args, _request_timeout=_REQUEST_TIMEOUT_S, **kwargs)
        except ApiException as exc:
            if exc.status == tolerate:
                return None
            raise _api_error(what, exc) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TrainingBackendUnavailableError(
                f"{what}: Kubernetes API unreachable: {exc}"
            ) from None


def _api_error(what: str, exc: ApiException) -> TrainingLaunchError:
    """429 and 5xx may pass; anything else (403: the Role lacks a verb, 422: invalid) will not."""
    message = f"{what}: Kubernetes answered {exc.status} {exc.reason}"
    detail = _status_message(exc.body)
    if detail:
        message += f": {detail}"
    if exc.status == 429 or (exc.status or 0) >= 500:
        return TrainingBackendUnavailableError(message)
    return TrainingLaunchError(message)


def _status_message(body: Any) -> str:
    """The ``message`` of the API's Status reply (why it refused), if the body is one."""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return message[:500] if isinstance(message, str) else ""


def _in_cluster_client() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise ConfigError(
            f"the Kubernetes training backend runs in a pod with a service account: {exc}"
        ) from None
    return client.ApiClient(configuration)
