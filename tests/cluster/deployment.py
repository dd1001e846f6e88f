"""A rendered overlay, running: the stand-ins first, then every pod, in dependency order.

:func:`deploy` is the whole harness seen from a test: it takes the rendered documents and a
folder, and yields a :class:`Deployment` whose :meth:`~Deployment.url` translates the cluster
addresses a user would port-forward or curl, and whose :meth:`~Deployment.assert_healthy`
fails when any pod exited, any MinIO notification or training worker failed.
"""

from __future__ import annotations

import copy
import json
import secrets
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from minio import Minio

from tests.cluster.image import ImageConfig, images
from tests.cluster.jobs import JobController, serve_api
from tests.cluster.minio import MinioStandIn, setup_plan, webhooks
from tests.cluster.network import Network, knative_services, service_links
from tests.cluster.podenv import kubelet_env, translate
from tests.cluster.pods import PodProcess
from tests.cluster.volumes import Mount, PodMounts, mount_volumes, secret_data
from tests.cluster.workloads import (
    KNATIVE,
    Workload,
    broker_address,
    first,
    group_of,
    workloads,
)
from tests.plugins.kube_api import FakeKubernetes

ROOT = Path(__file__).resolve().parent.parent.parent
READY_S = 120.0
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
START_ORDER = (
    "facerank-dead-letter",
    "facerank-enroll",
    "facerank-identify",
    "facerank-notify",
    "facerank-retrain",
    "facerank-source",
)
"""Knative Services first (the predictor and the web page last: the web page calls the
predictor), the source after every function its first reconcile sends events to; enroll before
identify, whose start reads the model pointer enroll's start creates (identify may only read
the models bucket)."""


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


@dataclass
class Deployment:
    documents: list[dict[str, Any]]
    folder: Path
    namespace: str
    network: Network
    image_configs: dict[str, ImageConfig]
    pods: dict[str, PodProcess] = field(default_factory=dict)
    minio: MinioStandIn | None = None
    kube: FakeKubernetes | None = None
    jobs: JobController | None = None
    _services: list[dict[str, Any]] = field(default_factory=list)
    _master_env: dict[str, str] = field(default_factory=dict)
    _worker_ports: dict[str, int] = field(default_factory=dict)
    _views: dict[str, str] = field(default_factory=dict)
    """View folder -> the mount path it stands for, in every pod."""

    # --- what tests use -----------------------------------------------------------------------

    def url(self, cluster_url: str) -> str:
        """Where ``cluster_url`` (a Service address) is reached from this machine."""
        translated = self.network.url(cluster_url)
        assert translated != cluster_url, f"nothing in the deployment answers {cluster_url}"
        return translated

    def secret(self, name: str, key: str) -> str:
        [secret] = [
            d
            for d in self.documents
            if d["kind"] == "Secret" and d["metadata"]["name"].rpartition("-")[0] == name
        ]
        return secret_data(secret)[key].decode()

    def assert_healthy(self) -> None:
        problems = [pod.failure() for pod in self.pods.values() if pod.exit_code is not None]
        problems += [f"MinIO webhook: {e}" for e in (self.minio.errors if self.minio else [])]
        problems += self.jobs.failures if self.jobs else []
        # Knative's Broker would hand these to the dead-letter sink; the local broker keeps
        # them in its spool: either way an event no subscriber accepted.
        dead = self.folder / "broker" / "broker" / "dead-letter"
        problems += [f"dead-lettered: {p.read_text()[:2000]}" for p in sorted(dead.rglob("*.json"))]
        assert not problems, "\n\n".join(problems)

    # --- starting -----------------------------------------------------------------------------

    def start(self) -> None:
        ours = list(workloads(self.documents, self.namespace))
        self._plan_services(ours)
        self._start_minio()
        self._start_kubernetes_api()
        addresses = {w.name: self.network.pod_ip() for w in ours}
        ports = {w.name: self._listen_port(w) for w in ours}
        for workload in ours:
            self._route(workload, addresses[workload.name], ports[workload.name])
        self._start_broker(ours)
        order = sorted(
            ours,
            key=lambda w: (
                w.kind != "KnativeService",
                w.name not in START_ORDER,
                START_ORDER.index(w.name) if w.name in START_ORDER else 0,
            ),
        )
        for workload in order:
            pod = self._pod(workload, addresses[workload.name], ports[workload.name])
            self.pods[workload.name] = pod
            pod.start()
            pod.wait_ready(READY_S)

    def stop(self) -> None:
        if self.jobs:
            self.jobs.stop_all()
        for pod in reversed(list(self.pods.values())):
            pod.stop()
        if self.minio:
            self.minio.stop()
        for stop in getattr(self, "_stoppers", []):
            stop()
        self.network.release()

    def _plan_services(self, ours: list[Workload]) -> None:
        core = [d for d in self.documents if d["kind"] == "Service" and group_of(d) != KNATIVE]
        knative = [s for w in ours if w.knative_service for s in knative_services(w.name)]
        self._services = core + knative
        self.network.assign_cluster_ips(self._services)

    def _listen_port(self, workload: Workload) -> int:
        """Knative Services serve on ``PORT``, which the harness picks (every pod shares this
        machine's ports, and KServe binds all interfaces); others on their container port,
        at their own pod address. Any other port a pod listens on (the predictor's gRPC) is
        the manifest's, at the pod's own address (``FACERANK_LISTEN_HOST``)."""
        return (
            self.network.reserve_port() if workload.knative_service else workload.container_port()
        )

    def _route(self, workload: Workload, address: str, port: int) -> None:
        if workload.knative_service:
            self.network.expose(workload.knative_service, 80, address, port)
        for service in self._services:
            selector = service.get("spec", {}).get("selector")
            if not selector or any(workload.labels.get(k) != v for k, v in selector.items()):
                continue
            for service_port in service["spec"]["ports"]:
                target = service_port.get("targetPort", service_port["port"])
                actual = self._named_port(workload, target)
                if workload.knative_service and actual == workload.container_port():
                    actual = port  # Knative's one routed port: PORT, as the harness picked it
                self.network.expose(
                    service["metadata"]["name"], service_port["port"], address, actual
                )

    @staticmethod
    def _named_port(workload: Workload, target: int | str) -> int:
        if isinstance(target, int):
            return target
        for port in workload.container.get("ports", []):
            if port.get("name") == target:
                return int(port["containerPort"])
        raise AssertionError(f"{workload.name} has no container port named {target}")

    def _start_minio(self) -> None:
        deployment = first(self.documents, "Deployment", "quay.io/minio/minio")
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        env = kubelet_env(
            self._pod_document(deployment["metadata"]["name"], spec, {}, ""),
            container,
            self.documents,
            {},
        )
        address = self.network.pod_ip()
        port = int(container["ports"][0]["containerPort"])
        self.minio = MinioStandIn(address, port, self.network.url, webhooks(env))
        self.minio.start()
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for service in self._services:
            selector = service.get("spec", {}).get("selector") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                for service_port in service["spec"]["ports"]:
                    self.network.expose(
                        service["metadata"]["name"], service_port["port"], address, port
                    )
        job = first(self.documents, "Job", "quay.io/minio/mc")
        job_spec = job["spec"]["template"]["spec"]
        [mc] = job_spec["containers"]
        job_env = kubelet_env(
            self._pod_document(job["metadata"]["name"], job_spec, {}, ""), mc, self.documents, {}
        )
        client = Minio(
            f"{address}:{port}", env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"], secure=False
        )
        self.minio.root_user = env["MINIO_ROOT_USER"]
        self.minio.set_up(setup_plan(mc["args"][0], job_env), client.make_bucket)
        self._add_minio_users(job_spec, mc, job_env)

    def _add_minio_users(
        self, spec: Mapping[str, Any], container: Mapping[str, Any], env: Mapping[str, str]
    ) -> None:
        """What the setup Job's ``mc admin`` loop does: the Secret mounted at
        ``$USERS/<component>`` becomes a user with policy ``$POLICIES/<component>.json``."""
        assert self.minio is not None
        script = container["args"][0]
        for command in ("mc admin policy create", "mc admin user add", "mc admin policy attach"):
            assert command in script, f"the setup Job no longer runs {command}"
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        policies = find(self.documents, "ConfigMap", mounts[env["POLICIES"]]["configMap"]["name"])
        for path, volume in mounts.items():
            if not path.startswith(env["USERS"] + "/"):
                continue
            component = path.rsplit("/", 1)[1]
            data = secret_data(find(self.documents, "Secret", volume["secret"]["secretName"]))
            policy = json.loads(policies["data"][f"{component}.json"])
            self.minio.add_user(component, data["ACCESS_KEY"].decode(), policy)

    def _start_kubernetes_api(self) -> None:
        role = find(self.documents, "Role", "facerank-retrain")
        self.kube = FakeKubernetes(self.namespace, role)
        self.kube.seed(d for d in self.documents if d["kind"] == "PodTemplate")
        address, port = self.network.pod_ip(), self.network.reserve_port()
        folder = self.folder / "kubernetes"
        folder.mkdir()
        self._stoppers = [serve_api(self.kube, address, port, folder)]
        self._ca = folder / "ca.crt"
        self._master_env = {
            "KUBERNETES_SERVICE_HOST": address,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{address}:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{address}:{port}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": str(port),
            "KUBERNETES_PORT_443_TCP_ADDR": address,
        }
        self.jobs = JobController(self.kube, self._job_pod)

    def _start_broker(self, ours: list[Workload]) -> None:
        """Knative's Broker, played by the local broker routing by the overlay's own Broker
        and Triggers; subscribers are the Knative Services the Triggers name."""
        folder = self.folder / "eventing"
        folder.mkdir()
        eventing = [d for d in self.documents if d["kind"] in ("Broker", "Trigger")]
        (folder / "eventing.yaml").write_text(yaml.safe_dump_all(eventing), encoding="utf-8")
        [broker] = [d for d in eventing if d["kind"] == "Broker"]
        address, port = self.network.pod_ip(), self.network.reserve_port()
        subscribers = ",".join(
            f"{w.name}={self.network.url(f'http://{w.name}.{self.namespace}.svc.cluster.local')}"
            for w in ours
            if w.knative_service
        )
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "FACERANK_DATA_DIR": str(self.folder / "broker"),
            "FACERANK_EVENTING_DIR": str(folder),
            "FACERANK_BROKER_HOST": address,
            "FACERANK_BROKER_PORT": str(port),
            "FACERANK_BROKER_SUBSCRIBERS": subscribers,
        }
        pod = PodProcess(
            "broker",
            [sys.executable, "-m", "facerank.broker"],
            env,
            str(ROOT),
            self.folder / "broker.log",
            f"http://{address}:{port}/healthz",
        )
        self.pods["broker"] = pod
        pod.start()
        pod.wait_ready(READY_S)
        self.network.alias(
            broker_address(self.namespace, broker["metadata"]["name"]), f"http://{address}:{port}/"
        )

    # --- pods ---------------------------------------------------------------------------------

    def _pod_document(
        self,
        name: str,
        spec: Mapping[str, Any],
        labels: Mapping[str, str],
        address: str,
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The pod as the downward API sees it."""
        return {
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "labels": dict(labels),
                "annotations": dict(annotations or {}),
            },
            "spec": {
                "serviceAccountName": spec.get("serviceAccountName", "default"),
                "nodeName": "harness",
            },
            "status": {"podIP": address, "hostIP": address},
        }

    def _service_env(self, workload: Workload) -> dict[str, str]:
        links = (
            service_links(self._services, self.network.cluster_ips)
            if workload.service_links
            else {}
        )
        return {**links, **self._master_env}

    def _mounts(self, pod_name: str, workload: Workload) -> PodMounts:
        folder = self.folder / "pods" / pod_name
        mounts = mount_volumes(
            folder, workload.spec, workload.container, self.documents, self.folder / "claims"
        )
        cache = self.folder / "model-cache"
        cache.mkdir(exist_ok=True)
        mounts.image_paths = {
            "/app": ROOT,
            "/opt/venv": Path(sys.prefix),
            "/opt/facerank/cache": cache,
        }
        if not any(m.path == "/tmp" for m in mounts.mounts):
            # The image's own /tmp, read-only with readOnlyRootFilesystem.
            rootfs = folder / "rootfs-tmp"
            rootfs.mkdir(parents=True)
            read_only = bool(
                workload.container.get("securityContext", {}).get("readOnlyRootFilesystem")
            )
            view = folder / "mounts" / "rootfs-tmp"
            view.mkdir(parents=True)
            mounts.mounts.append(Mount("/tmp", view, rootfs, read_only))
        self._views.update((str(m.view), m.path) for m in mounts.mounts)
        if self._automounts_token(workload.spec):
            token = folder / "serviceaccount"
            token.mkdir()
            (token / "token").write_text(secrets.token_urlsafe(32), encoding="utf-8")
            (token / "ca.crt").write_bytes(self._ca.read_bytes())
            (token / "namespace").write_text(self.namespace, encoding="utf-8")
            mounts.service_account = token
        return mounts

    def _automounts_token(self, spec: Mapping[str, Any]) -> bool:
        if "automountServiceAccountToken" in spec:
            return bool(spec["automountServiceAccountToken"])
        account = spec.get("serviceAccountName", "default")
        found = [
            d
            for d in self.documents
            if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account
        ]
        return bool(found[0].get("automountServiceAccountToken", True)) if found else True

    def _pod(
        self,
        workload: Workload,
        address: str,
        port: int,
        pod_name: str = "",
        extra: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        hostname: str = "",
    ) -> PodProcess:
        pod_name = pod_name or f"{workload.name}-{secrets.token_hex(3)}"
        container = workload.container
        image = self.image_configs[container["image"]]
        mounts = self._mounts(pod_name, workload)
        mounts.hostname = hostname
        document = self._pod_document(
            pod_name, workload.spec, workload.labels, address, annotations
        )
        env = {
            **image.env,
            **kubelet_env(
                document, container, self.documents, self._service_env(workload), workload.extra_env
            ),
        }
        tmp = mounts.path("/tmp")

        def value(name: str, raw: str) -> str:
            if name == "PORT" and workload.knative_service:
                return str(port)
            if raw == "0.0.0.0":  # noqa: S104 - "every interface of the pod"
                return address
            return mounts.path(self.network.url(raw))

        env = {
            **translate(env, value),
            "TMPDIR": tmp,
            "HOSTNAME": hostname or pod_name,
            **(extra or {}),
        }
        command = container.get("command") or image.entrypoint
        args = container.get("args") if "args" in container or "command" in container else image.cmd
        argv = [*command, *(args or [])]
        if argv[0] == "python":
            argv[0] = sys.executable
        cwd = mounts.path(container.get("workingDir") or image.workdir)
        probe = container.get("readinessProbe", {}).get("httpGet")
        ready = ""
        if probe:
            probe_port = probe.get("port", port)
            probe_port = (
                port if workload.knative_service else self._named_port(workload, probe_port)
            )
            ready = f"http://{address}:{probe_port}{probe.get('path', '/')}"
        log = self.folder / "logs" / f"{pod_name}.log"
        log.parent.mkdir(exist_ok=True)
        return PodProcess(pod_name, [*mounts.wrapper(), *argv], env, cwd, log, ready)

    def _job_pod(self, job: dict[str, Any], index: int) -> PodProcess:
        """Pod ``index`` of an Indexed Job the retrain function created."""
        template = job["spec"]["template"]
        name = job["metadata"]["name"]
        spec = copy.deepcopy(template["spec"])
        for container in spec["containers"]:
            for variable in container.get("env", []):
                if "value" in variable:
                    variable["value"] = self._pod_path(variable["value"])
        hostname = f"{name}-{index}"
        annotation = {COMPLETION_INDEX: str(index)}
        labels = {
            **template["metadata"].get("labels", {}),
            "job-name": name,
            COMPLETION_INDEX: str(index),
        }
        workload = Workload("Job", name, labels, spec)
        workload.extra_env = [
            {
                "name": "JOB_COMPLETION_INDEX",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}
                },
            }
        ]
        pod = self._pod(
            workload,
            self.network.pod_ip(),
            0,
            f"{hostname}-{secrets.token_hex(3)}",
            annotations=annotation,
            hostname=hostname,
        )
        self._await_service(spec.get("subdomain", ""))
        tf_config = self._tf_config(job, spec, pod.env)
        if tf_config:
            pod.env["TF_CONFIG"] = tf_config
        pod.start()
        return pod

    def _pod_path(self, value: str) -> str:
        """A path the retrain pod sent, as it would read in the cluster: the harness gave it
        the view folder of its mount, the cluster gives ``/shared/...``."""
        for view, path in self._views.items():
            if value == view or value.startswith(view + "/"):
                return path + value[len(view) :]
        return value

    def _await_service(self, name: str, deadline_s: float = 30) -> None:
        """Until the run's headless Service exists (the retrain function creates it just after
        the Job): before that, cluster DNS has no names for the workers."""
        end = time.monotonic() + deadline_s
        while name and self.kube and not self.kube.get("services", name) and time.monotonic() < end:
            time.sleep(0.1)

    def _tf_config(self, job: dict[str, Any], spec: Mapping[str, Any], env: dict[str, str]) -> str:
        """The cluster the worker derives from its environment, its addresses resolved: each
        pod's DNS name (``<hostname>.<subdomain>[.<ns>.svc...]``) to a free loopback port
        (TensorFlow binds its port on every interface, so workers on one machine need their
        own). Empty when the derivation fails: the worker then fails the same way itself."""
        from training.cluster import cluster_from_env
        from training.errors import ClusterConfigError

        try:
            cluster = cluster_from_env(env)
        except ClusterConfigError:
            return ""
        if cluster is None:
            return ""
        name, subdomain = job["metadata"]["name"], spec.get("subdomain", "")
        for i in range(job["spec"]["completions"]):
            key = f"{name}-{i}"
            self._worker_ports.setdefault(key, self.network.reserve_port())
            if subdomain and self.kube and self.kube.get("services", subdomain):
                self.network.expose(
                    f"{key}.{subdomain}", 2222, "127.0.0.1", self._worker_ports[key]
                )
        workers = []
        for worker in cluster.workers:
            host, _, port = worker.rpartition(":")
            try:
                address, target = self.network.address(host, int(port))
                workers.append(f"{address}:{target}")
            except KeyError:
                workers.append(worker)  # unresolvable, as in the cluster
        return json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": cluster.index}}
        )


@contextmanager
def deploy(documents: list[dict[str, Any]], folder: Path) -> Iterator[Deployment]:
    """Run ``documents`` (one rendered overlay) until the block ends."""
    [namespace] = [d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"]
    deployment = Deployment(list(documents), folder, namespace, Network(namespace), images(ROOT))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
