"""The workloads of a rendered overlay, each as the pod spec a controller would create.

Deployments and Jobs carry a pod template; a Knative Service's revision is a pod too, with
what Knative adds to its container (``PORT``, ``K_SERVICE``, ``K_CONFIGURATION``,
``K_REVISION``) and what a SinkBinding naming it as subject adds (``K_SINK``, the Broker's
ingress address), and with no service links (Knative's ``enable-service-links`` default is
false); an InferenceService's predictor is the Knative Service ``<name>-predictor`` KServe makes
of it in Serverless mode. Images that are not facerank's (MinIO, its setup Job's ``mc``, the
dev NFS server) are not run: :mod:`.minio` and claims as folders stand in for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

KNATIVE = "serving.knative.dev"
KSERVE = "serving.kserve.io"
BROKER_INGRESS = "http://broker-ingress.knative-eventing.svc.cluster.local"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
STAND_INS = ("quay.io/minio/minio", "quay.io/minio/mc", "itsthenetwork/nfs-server-alpine")


def group_of(document: Mapping[str, Any]) -> str:
    return str(document["apiVersion"]).rpartition("/")[0]


@dataclass
class Workload:
    """One pod to run: where it comes from, its metadata and spec, and what Knative adds."""

    kind: str
    name: str
    labels: dict[str, str]
    spec: dict[str, Any]
    knative_service: str = ""
    """The Knative Service behind the pod, if any (service links off, ``K_*`` variables)."""
    extra_env: list[dict[str, Any]] = field(default_factory=list)

    @property
    def service_links(self) -> bool:
        default = not self.knative_service
        return bool(self.spec.get("enableServiceLinks", default))

    @property
    def container(self) -> dict[str, Any]:
        [container] = self.spec["containers"]
        return container

    def container_port(self) -> int:
        ports = self.container.get("ports") or [{"containerPort": 8080}]
        return int(ports[0]["containerPort"])


def broker_address(namespace: str, broker: str) -> str:
    """Where Knative's multi-tenant channel-based Broker takes events for ``broker``."""
    return f"{BROKER_INGRESS}/{namespace}/{broker}"


def _sinks(documents: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """Knative Service name -> the K_SINK its SinkBinding injects."""
    sinks = {}
    for binding in (d for d in documents if d["kind"] == "SinkBinding"):
        subject, sink = binding["spec"]["subject"], binding["spec"]["sink"]
        assert (subject["apiVersion"], subject["kind"]) == (f"{KNATIVE}/v1", "Service"), subject
        assert sink["ref"]["kind"] == "Broker", f"sink {sink} is not a Broker"
        sinks[subject["name"]] = broker_address(namespace, sink["ref"]["name"])
    return sinks


def _knative(name: str, spec: dict[str, Any], labels: dict[str, str], sink: str) -> Workload:
    workload = Workload("KnativeService", name, labels, spec, knative_service=name)
    workload.extra_env = [
        {"name": "PORT", "value": str(workload.container_port())},
        {"name": "K_REVISION", "value": f"{name}-00001"},
        {"name": "K_CONFIGURATION", "value": name},
        {"name": "K_SERVICE", "value": name},
    ]
    if sink:
        workload.extra_env.append({"name": "K_SINK", "value": sink})
    return workload


def workloads(documents: list[dict[str, Any]], namespace: str) -> Iterator[Workload]:
    """Every long-running pod of the overlay, one per workload (replicas are scale, not
    configuration: one process shows what each replica would do)."""
    sinks = _sinks(documents, namespace)
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        if kind == "Deployment":
            template = document["spec"]["template"]
            if _stand_in(template["spec"]):
                continue
            yield Workload(kind, name, template["metadata"]["labels"], template["spec"])
        elif kind == "Service" and group_of(document) == KNATIVE:
            template = document["spec"]["template"]
            labels = template["metadata"]["labels"]
            yield _knative(name, template["spec"], labels, sinks.pop(name, ""))
        elif kind == "InferenceService":
            mode = document["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE)
            assert mode == "Serverless", (
                f"InferenceService {name}: pin {DEPLOYMENT_MODE}: Serverless (found {mode!r}); "
                "the cluster default differs between KServe versions"
            )
            predictor = dict(document["spec"]["predictor"])
            labels = predictor.pop("labels", {})
            yield _knative(f"{name}-predictor", predictor, labels, "")
        elif kind == "Job" and not _stand_in(document["spec"]["template"]["spec"]):
            raise AssertionError(f"Job {name}: the harness runs only the MinIO setup Job")
    assert not sinks, f"SinkBindings name Knative Services that do not exist: {sorted(sinks)}"


def _stand_in(spec: Mapping[str, Any]) -> bool:
    return all(c["image"].startswith(STAND_INS) for c in spec["containers"])


def first(documents: list[dict[str, Any]], kind: str, image: str) -> dict[str, Any]:
    """The first ``kind`` whose container runs ``image``."""
    for document in documents:
        if document["kind"] == kind:
            [container] = document["spec"]["template"]["spec"]["containers"]
            if container["image"].startswith(image):
                return document
    raise LookupError(f"no {kind} runs {image}")
