"""Build facerank's three images with podman and start each one as the dev overlay runs it.

    .venv/bin/python infra/images/check.py [--pull=never] [--build-network=host] [--results F]

Run from a clone with the test extras installed (kubectl renders the overlay, moto's server
stands in for MinIO). Exit status 0 when every build and check passed, 1 otherwise; one line
per check on stdout, and with ``--results`` the figures as JSON.

Each workload of ``kubectl kustomize infra/overlays/dev`` whose image is one of ours (the Knative
Services, the web Deployment, the InferenceService's predictor, and the training Job that
``functions/retrain/kubernetes.py`` makes from the trainer PodTemplate) becomes a ``podman
run`` with what its manifest says: command and args (under the image's entry point), working
directory, env and envFrom (ConfigMaps, Secrets, downward-API fields), the user and group,
a read-only root filesystem, no capabilities, no privilege escalation, emptyDirs as tmpfs,
Secrets as read-only files, PersistentVolumeClaims as folders (read-only where the manifest
says so). What Kubernetes, Knative and KServe add is added: ``KUBERNETES_SERVICE_*``, a
service-account token folder unless automounting is off, ``PORT`` and ``K_*`` for Knative
pods (the predictor's too, unless the InferenceService asks for raw deployment), ``K_SINK``
from SinkBindings. Service links of the namespace's other Services are not added: the
manifest harness (tests/test_infra_*) checks those. The one rewrite: the S3 endpoint, a
cluster name, points at the check's moto server, whose buckets are the overlay's setup Job's.

Checks: every server answers its readiness probe, then stops within ``STOP_S`` of SIGTERM by
itself (no SIGKILL); the predictor and enroll also stop that fast when SIGTERM comes while
they load (the store never answers); a training worker without ``TF_CONFIG`` and
``JOB_COMPLETION_INDEX`` refuses with ``invalid_cluster`` and an exit status the Job's
podFailurePolicy fails at once; one whose peer never comes stops within ``STOP_S`` of SIGTERM.

Podman's defaults must work on the machine; where they do not (cgroup v1 needs runc, missing
CAP_SYS_RESOURCE needs explicit ulimits), point ``CONTAINERS_CONF`` at a containers.conf that
says so. Base images are pulled as podman's ``--pull`` policy says; ``--pull=never`` uses
local ones (stand-ins on machines without a registry).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from moto.server import ThreadedMotoServer

from facerank.storage import S3Store
from functions.retrain.kubernetes import job_for_run
from tests.plugins.infra import find, kustomize, pods, prepare_copy
from tests.plugins.training_runs import CLUSTER_FORMING, prepare_two_worker_run

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("functions", "training", "inference")
OVERLAY = "dev"
STOP_S = 5.0
"""SIGTERM to exit, at most (the trainer's grace period is 5 s; the others' are longer)."""
START_S = 300.0
"""Ready within this, or the check fails (TensorFlow and the model load in seconds)."""
KILL_AFTER_S = 10
"""``podman stop`` sends SIGKILL after this: a stop that needed it shows as exit 137."""
S3_ENDPOINT_ENV = "FACERANK_S3_ENDPOINT"
LOADING = {
    "inference": "loading the active model and its gallery",
    "functions.enroll": "loading the gallery and the active model",
}
"""The line each model-loading entry point logs before it loads."""
RUN_ID = "check"
NETWORK = "slirp4netns:allow_host_loopback=true"
"""Each container in a network namespace of its own, as in a pod, reaching this machine's
loopback at :data:`HOST_LOOPBACK`: the check's S3 server listens on 127.0.0.1 only."""
HOST_LOOPBACK = "10.0.2.2"
KUBERNETES_API = "10.96.0.1"
"""The kubernetes Service's address as every pod sees it; nothing here calls it."""


@dataclass
class Workload:
    """One container of the overlay as a pod runs it."""

    name: str
    kind: str
    """``knative``, ``deployment``, ``predictor`` or ``job``."""
    pod: Mapping[str, Any]
    container: Mapping[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    """What the platform adds (K_*, PORT, K_SINK), before the manifest's own."""
    hostname: str | None = None
    fail_job_on: tuple[int, ...] = ()
    """Exit codes on which the Job's podFailurePolicy fails the whole Job (jobs only)."""

    @property
    def image(self) -> str:
        return str(self.container["image"])

    @property
    def module(self) -> str:
        return str((self.container.get("args") or [""])[0])


@dataclass
class Result:
    check: str
    ok: bool
    detail: str = ""
    ready_s: float | None = None
    stop_s: float | None = None
    exited_s: float | None = None
    """Start to exit, for a container that is meant to end by itself."""
    exit_code: int | None = None


class Podman:
    """The podman command line, each call bounded in time."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - podman from PATH, arguments are a list
            [self.binary, *args], capture_output=True, text=True, timeout=timeout, check=check
        )

    def exit_code(self, name: str) -> int:
        """The container's exit status once it has stopped (waits for it)."""
        return int(self("wait", name, timeout=START_S).stdout.strip().splitlines()[-1])

    def logs(self, name: str) -> str:
        result = self("logs", name, check=False)
        return result.stdout + result.stderr

    def stop(self, name: str) -> tuple[float, int]:
        """SIGTERM (SIGKILL after KILL_AFTER_S); seconds until it exited and its status."""
        started = time.monotonic()
        self("stop", "--time", str(KILL_AFTER_S), name, timeout=KILL_AFTER_S + 60)
        return time.monotonic() - started, self.exit_code(name)

    def wait_for_line(self, name: str, text: str) -> bool:
        """Follow the container's output until a line holds ``text``; False if it exited."""
        with subprocess.Popen(  # noqa: S603 - podman from PATH, arguments are a list
            [self.binary, "logs", "--follow", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as follow:
            assert follow.stdout is not None  # noqa: S101 - PIPE was asked for
            deadline = time.monotonic() + START_S
            try:
                for line in follow.stdout:
                    if text in line:
                        return True
                    if time.monotonic() > deadline:
                        return False
                return False
            finally:
                follow.kill()


# --- building -------------------------------------------------------------------------------


def build(podman: Podman, target: str, options: argparse.Namespace) -> dict[str, float]:
    """``podman build --target`` tagged as skaffold names it; seconds taken and size."""
    flags = [f"--pull={options.pull}"] if options.pull else []
    if options.build_network:
        flags.append(f"--network={options.build_network}")
    started = time.monotonic()
    result = podman(
        "build", *flags, "--target", target, "--tag", f"facerank-{target}", str(ROOT),
        timeout=3600, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"build of {target} failed:\n{(result.stdout + result.stderr)[-6000:]}")
    size = podman("image", "inspect", "--format", "{{.Size}}", f"facerank-{target}").stdout
    return {"seconds": round(seconds, 1), "size_bytes": int(size.strip())}


# --- the overlay ------------------------------------------------------------------------------


def render() -> list[dict[str, Any]]:
    """The dev overlay, rendered from a scratch copy as skaffold would (fake dev secrets)."""
    with tempfile.TemporaryDirectory(prefix="facerank-images-") as work:
        result = kustomize(prepare_copy(Path(work)) / "overlays" / OVERLAY)
    if result.returncode != 0:
        raise SystemExit(f"kubectl kustomize failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def workloads(documents: list[dict[str, Any]]) -> Iterator[Workload]:
    """Every container of ours, with what the platform adds to its pod."""
    for pod in pods(documents):
        kind_name = pod.where.split("/", 1)
        document = find(documents, kind_name[0], kind_name[1])
        assert document is not None  # noqa: S101 - pods() found it there
        for container in pod.spec["containers"]:
            if not str(container["image"]).startswith("facerank-"):
                continue
            yield from _as_run(document, pod.spec, container, documents)


def _as_run(
    document: Mapping[str, Any],
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    documents: list[dict[str, Any]],
) -> Iterator[Workload]:
    name, kind = document["metadata"]["name"], document["kind"]
    if kind == "PodTemplate":  # the Job the retrain function creates from it
        job = job_for_run(
            document["template"], RUN_ID, 2, f"/shared/runs/{RUN_ID}/config.json", deadline_s=600
        )
        pod = job["spec"]["template"]["spec"]
        job_name = job["metadata"]["name"]
        yield Workload(
            job_name,
            "job",
            pod,
            pod["containers"][0],
            hostname=f"{job_name}-0",
            fail_job_on=fail_job_codes(job),
        )
        return
    knative = kind == "Service" or (
        kind == "InferenceService"
        and document["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
        not in ("RawDeployment", "Standard")
    )
    service = f"{name}-predictor" if kind == "InferenceService" else name
    env: dict[str, str] = {}
    if knative:
        port = container.get("ports", [{}])[0].get("containerPort", 8080)
        env |= {
            "PORT": str(port),
            "K_SERVICE": service,
            "K_CONFIGURATION": service,
            "K_REVISION": f"{service}-00001",
        }
    env |= sink_binding(documents, name)
    workload_kind = {"Service": "knative", "InferenceService": "predictor"}.get(kind, "deployment")
    yield Workload(service, workload_kind, spec, container, env=env)


def fail_job_codes(job: Mapping[str, Any]) -> tuple[int, ...]:
    """The exit codes the Job's podFailurePolicy fails the whole Job on."""
    rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
    return tuple(
        code
        for rule in rules
        if rule["action"] == "FailJob" and rule.get("onExitCodes", {}).get("operator") == "In"
        for code in rule["onExitCodes"]["values"]
    )


def sink_binding(documents: list[dict[str, Any]], service: str) -> dict[str, str]:
    """``K_SINK`` as a SinkBinding whose subject is ``service`` injects it."""
    for document in documents:
        if document["kind"] != "SinkBinding":
            continue
        spec = document["spec"]
        if spec["subject"].get("name") != service:
            continue
        sink = spec["sink"]
        if "uri" in sink:
            return {"K_SINK": sink["uri"]}
        ref = sink["ref"]
        namespace = ref.get("namespace", document["metadata"]["namespace"])
        if ref["kind"] == "Broker":
            url = f"http://broker-ingress.knative-eventing.svc.cluster.local/{namespace}/{ref['name']}"
        else:
            url = f"http://{ref['name']}.{namespace}.svc.cluster.local"
        return {"K_SINK": url}
    return {}


# --- running one workload -------------------------------------------------------------------


class Runner:
    """Turns workloads into ``podman run`` command lines over the check's scratch folders."""

    def __init__(
        self, podman: Podman, documents: list[dict[str, Any]], work: Path, s3_endpoint: str
    ) -> None:
        self.podman = podman
        self.documents = documents
        self.work = work
        self.s3_endpoint = s3_endpoint
        self.namespace = next(
            d["metadata"]["namespace"] for d in documents if d["metadata"].get("namespace")
        )
        self.shared = work / "shared"
        self.shared.mkdir(mode=0o777, exist_ok=True)
        self.shared.chmod(0o777)  # an NFS export the workers' uid can write
        self.started: list[str] = []

    def env(self, workload: Workload, pod_name: str) -> dict[str, str]:
        values = {
            "KUBERNETES_SERVICE_HOST": KUBERNETES_API,
            "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443",
            "KUBERNETES_PORT": f"tcp://{KUBERNETES_API}:443",
            "KUBERNETES_PORT_443_TCP": f"tcp://{KUBERNETES_API}:443",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": "443",
            "KUBERNETES_PORT_443_TCP_ADDR": KUBERNETES_API,
            **workload.env,
        }
        for source in workload.container.get("envFrom", []):
            for key, ref in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in source:
                    values |= self._data(ref, source[key]["name"])
        for variable in workload.container.get("env", []):
            values[variable["name"]] = self._value(variable, pod_name)
        if S3_ENDPOINT_ENV in values:
            values[S3_ENDPOINT_ENV] = self.s3_endpoint
        return values

    def _data(self, kind: str, name: str) -> dict[str, str]:
        document = find(self.documents, kind, name)
        if document is None:
            raise SystemExit(f"{kind} {name} is referenced but not rendered")
        if kind == "Secret":
            return {k: base64.b64decode(v).decode() for k, v in document.get("data", {}).items()}
        return dict(document.get("data", {}))

    def _value(self, variable: Mapping[str, Any], pod_name: str) -> str:
        if "value" in variable:
            return str(variable["value"])
        source = variable["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.namespace": self.namespace, "metadata.name": pod_name}
            if path not in fields:
                raise SystemExit(f"downward-API field {path} is not supported by the check")
            return fields[path]
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if key in source:
                return self._data(kind, source[key]["name"])[source[key]["key"]]
        raise SystemExit(f"unsupported valueFrom: {source}")

    def volumes(self, workload: Workload) -> list[str]:
        """podman flags for the container's volume mounts."""
        volumes = {v["name"]: v for v in workload.pod.get("volumes", [])}
        flags: list[str] = []
        for mount in workload.container.get("volumeMounts", []):
            volume, target = volumes[mount["name"]], mount["mountPath"]
            read_only = ":ro" if mount.get("readOnly") else ""
            if "emptyDir" in volume:
                size = str(volume["emptyDir"].get("sizeLimit", "64Mi"))
                flags.append(f"--tmpfs={target}:rw,mode=1777,size={_tmpfs_size(size)}")
            elif "secret" in volume:
                folder = self._secret_folder(volume["secret"]["secretName"])
                flags.append(f"--volume={folder}:{target}:ro")
            elif "persistentVolumeClaim" in volume:
                flags.append(f"--volume={self.shared}:{target}{read_only}")
            else:
                raise SystemExit(f"volume {volume['name']}: kind not supported by the check")
        if workload.pod.get("automountServiceAccountToken", True):
            flags.append(
                f"--volume={self._service_account()}:/var/run/secrets/kubernetes.io/serviceaccount:ro"
            )
        return flags

    def _secret_folder(self, name: str) -> Path:
        folder = self.work / "secrets" / name
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for key, value in self._data("Secret", name).items():
                (folder / key).write_text(value, encoding="utf-8")
                (folder / key).chmod(0o644)  # Kubernetes' defaultMode
        return folder

    def _service_account(self) -> Path:
        folder = self.work / "serviceaccount"
        if not folder.is_dir():
            folder.mkdir()
            files = {
                "token": "check-token-the-api-is-not-reachable",
                "ca.crt": "no certificate: nothing in the check calls the Kubernetes API\n",
                "namespace": self.namespace,
            }
            for key, value in files.items():
                (folder / key).write_text(value, encoding="utf-8")
                (folder / key).chmod(0o644)
        return folder

    def start(
        self, workload: Workload, *, env: Mapping[str, str] | None = None, suffix: str = ""
    ) -> tuple[str, dict[int, int]]:
        """``podman run -d`` as the manifest says; the container's name and published ports."""
        name = f"facerank-check-{workload.name}{suffix}-{uuid.uuid4().hex[:6]}"
        security = {**workload.pod.get("securityContext", {})}
        security |= workload.container.get("securityContext", {})
        flags = [f"--name={name}", "--detach", f"--network={NETWORK}"]
        flags.append(f"--env-file={self._env_file(name, workload, env)}")
        if "runAsUser" in security:
            flags.append(f"--user={security['runAsUser']}:{security.get('runAsGroup', 0)}")
        if security.get("runAsNonRoot") and security.get("runAsUser", 1) == 0:
            raise SystemExit(f"{workload.name}: runAsNonRoot with runAsUser 0")
        if security.get("readOnlyRootFilesystem"):
            flags += ["--read-only", "--read-only-tmpfs=false"]
        for capability in security.get("capabilities", {}).get("drop", []):
            flags.append(f"--cap-drop={capability}")
        if security.get("allowPrivilegeEscalation") is False:
            flags.append("--security-opt=no-new-privileges")
        if workload.hostname:
            flags.append(f"--hostname={workload.hostname}")
        if workload.container.get("workingDir"):
            flags.append(f"--workdir={workload.container['workingDir']}")
        if workload.container.get("command"):
            flags.append(f"--entrypoint={json.dumps(workload.container['command'])}")
        ports = [p["containerPort"] for p in workload.container.get("ports", [])]
        flags += [f"--publish=127.0.0.1::{port}" for port in ports]
        flags += self.volumes(workload)
        args = [str(a) for a in workload.container.get("args", [])]
        self.podman("run", *flags, workload.image, *args)
        self.started.append(name)
        published = {}
        for port in ports:
            address = self.podman("port", name, str(port)).stdout.strip().splitlines()[0]
            published[port] = int(address.rsplit(":", 1)[1])
        return name, published

    def _env_file(self, name: str, workload: Workload, extra: Mapping[str, str] | None) -> Path:
        """An env file (values never on a command line, where ps would show them)."""
        values = self.env(workload, name) | dict(extra or {})
        path = self.work / f"{name}.env"
        lines = []
        for key, value in values.items():
            if "\n" in value:
                raise SystemExit(f"{key}: a value with a newline cannot go in an env file")
            lines.append(f"{key}={value}\n")
        path.write_text("".join(lines), encoding="utf-8")
        path.chmod(0o600)
        return path

    def remove_all(self) -> None:
        for name in self.started:
            self.podman("rm", "--force", "--time", "0", name, check=False)


def _tmpfs_size(quantity: str) -> str:
    """A Kubernetes quantity (``512Mi``) as a tmpfs size (``512m``)."""
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if quantity.endswith(suffix):
            return quantity.removesuffix(suffix) + unit
    return quantity


# --- the checks -------------------------------------------------------------------------------


def readiness(workload: Workload) -> tuple[str, int]:
    """(path, container port) of the readiness probe (Knative's default port: the first)."""
    probe = workload.container["readinessProbe"]["httpGet"]
    port = probe.get("port", workload.container["ports"][0]["containerPort"])
    if isinstance(port, str):
        port = next(p["containerPort"] for p in workload.container["ports"] if p["name"] == port)
    return probe["path"], int(port)


def answers(url: str) -> bool:
    with (
        contextlib.suppress(OSError, urllib.error.URLError),
        urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 - http to ourselves
    ):
        return bool(response.status == 200)
    return False


def check_server(runner: Runner, workload: Workload) -> Result:
    """Ready as its probe says, then stopped by SIGTERM alone within STOP_S."""
    check = f"{workload.name}: ready, then SIGTERM"
    started = time.monotonic()
    name, ports = runner.start(workload)
    path, port = readiness(workload)
    url = f"http://127.0.0.1:{ports[port]}{path}"
    while not answers(url):
        running = runner.podman("inspect", "--format", "{{.State.Running}}", name).stdout
        if running.strip() != "true" or time.monotonic() - started > START_S:
            return Result(check, False, f"not ready:\n{runner.podman.logs(name)[-3000:]}")
        time.sleep(0.25)  # the kubelet probes periodically too
    ready_s = time.monotonic() - started
    stop_s, code = runner.podman.stop(name)
    ok = stop_s <= STOP_S and code in (0, 143)
    detail = "" if ok else runner.podman.logs(name)[-3000:]
    ready, stop = round(ready_s, 1), round(stop_s, 1)
    return Result(check, ok, detail, ready_s=ready, stop_s=stop, exit_code=code)


def check_sigterm_while_loading(runner: Runner, workload: Workload, silent: str) -> Result:
    """SIGTERM while the model loads (the store accepts and never answers): out in STOP_S."""
    check = f"{workload.name}: SIGTERM while loading"
    name, _ = runner.start(workload, env={S3_ENDPOINT_ENV: silent}, suffix="-loading")
    if not runner.podman.wait_for_line(name, LOADING[workload.module]):
        return Result(check, False, f"never began loading:\n{runner.podman.logs(name)[-3000:]}")
    stop_s, code = runner.podman.stop(name)
    ok = stop_s <= STOP_S and code == 143
    detail = "" if ok else runner.podman.logs(name)[-3000:]
    return Result(check, ok, detail, stop_s=round(stop_s, 1), exit_code=code)


def check_worker_refuses_missing_cluster(runner: Runner, workload: Workload) -> Result:
    """Neither TF_CONFIG nor JOB_COMPLETION_INDEX: a typed refusal the Job fails on at once."""
    check = f"{workload.name}: no TF_CONFIG, refused"
    started = time.monotonic()
    name, _ = runner.start(workload, suffix="-refused")
    code = runner.podman.exit_code(name)
    seconds = time.monotonic() - started
    logs = runner.podman.logs(name)
    fail_on = workload.fail_job_on
    ok = code in fail_on and "cannot start (invalid_cluster)" in logs and "Traceback" not in logs
    detail = "" if ok else f"FailJob on {fail_on}:\n{logs[-3000:]}"
    return Result(check, ok, detail, exited_s=round(seconds, 1), exit_code=code)


def check_worker_stops_while_waiting(runner: Runner, workload: Workload) -> Result:
    """Worker 0 of two, its peer never comes: SIGTERM once TensorFlow has taken the signal's
    handler and waits for the peer holding the GIL ends it, with a status the Job retries."""
    check = f"{workload.name}: SIGTERM while the cluster forms"
    prepare_run(runner.shared)
    name, _ = runner.start(workload, env={"JOB_COMPLETION_INDEX": "0"}, suffix="-waiting")
    if not runner.podman.wait_for_line(name, CLUSTER_FORMING):
        return Result(check, False, f"never waited:\n{runner.podman.logs(name)[-3000:]}")
    stop_s, code = runner.podman.stop(name)
    ok = stop_s <= STOP_S and code == 143
    detail = "" if ok else runner.podman.logs(name)[-3000:]
    return Result(check, ok, detail, stop_s=round(stop_s, 1), exit_code=code)


def prepare_run(shared: Path) -> None:
    """A two-worker run with a small random dataset, as the retrain function leaves one."""
    prepare_two_worker_run(shared, RUN_ID)
    for path in [shared, *shared.rglob("*")]:  # written by the retrain function's uid there
        path.chmod(0o777 if path.is_dir() else 0o666)


# --- putting it together ------------------------------------------------------------------------


@contextlib.contextmanager
def s3_stand_in(documents: list[dict[str, Any]]) -> Iterator[str]:
    """moto's S3 server with the buckets the overlay's setup Job makes; its URL as the
    containers reach it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        store = S3Store(f"http://{host}:{port}", "check", "check-secret")
        for bucket in setup_buckets(documents):
            store.ensure_bucket(bucket)
        yield f"http://{HOST_LOOPBACK}:{port}"
    finally:
        server.stop()


def setup_buckets(documents: list[dict[str, Any]]) -> list[str]:
    for pod in pods(documents):
        if not pod.where.startswith("Job/"):
            continue
        for container in pod.spec["containers"]:
            for variable in container.get("env", []):
                if variable["name"] == "BUCKETS":
                    return str(variable["value"]).split()
    raise SystemExit("no setup Job with BUCKETS in the overlay")


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """An S3 endpoint that accepts connections and never answers: a MinIO still starting."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield f"http://{HOST_LOOPBACK}:{listener.getsockname()[1]}"


def run_checks(podman: Podman, documents: list[dict[str, Any]], work: Path) -> list[Result]:
    found = list(workloads(documents))
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        print(_line(result), flush=True)

    with s3_stand_in(documents) as endpoint, silent_endpoint() as silent:
        runner = Runner(podman, documents, work, endpoint)
        try:
            for workload in found:
                if workload.kind == "job":
                    record(check_worker_refuses_missing_cluster(runner, workload))
                    record(check_worker_stops_while_waiting(runner, workload))
                    continue
                record(check_server(runner, workload))
                if workload.module in LOADING:
                    record(check_sigterm_while_loading(runner, workload, silent))
        finally:
            runner.remove_all()
    return results


def _line(result: Result) -> str:
    figures = ", ".join(
        f"{label} {value}"
        for label, value in (
            ("ready", result.ready_s),
            ("stopped", result.stop_s),
            ("exited", result.exited_s),
            ("exit", result.exit_code),
        )
        if value is not None
    )
    return f"{'ok  ' if result.ok else 'FAIL'} {result.check} ({figures})"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pull", help="podman build's --pull policy (never: local bases only)")
    parser.add_argument("--build-network", help="podman build's --network (host: the host's)")
    parser.add_argument("--skip-build", action="store_true", help="check the images as built")
    parser.add_argument("--results", type=Path, help="write the figures here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    binary = shutil.which("podman")
    if binary is None:
        print("podman is not installed (Debian: apt-get install podman)", file=sys.stderr)
        return 2
    podman = Podman(binary)
    builds = {}
    if not options.skip_build:
        for target in TARGETS:
            builds[target] = build(podman, target, options)
            print(f"built facerank-{target}: {builds[target]}", flush=True)
    documents = render()
    with tempfile.TemporaryDirectory(prefix="facerank-images-") as work:
        os.chmod(work, 0o755)  # noqa: S103 - the containers' user reads the secrets below it
        results = run_checks(podman, documents, Path(work))
    for result in results:
        if result.detail:
            print(f"{result.check}:\n    " + result.detail.replace("\n", "\n    "))
    if options.results:
        summary = {"builds": builds, "checks": [asdict(r) for r in results]}
        options.results.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
