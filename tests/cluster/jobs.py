"""The Kubernetes API of the deployment: the one fake (``tests/plugins/kube_api.py``), served
over TLS where the retrain function's in-cluster client expects it, and a Job controller.

When the fake receives a Job, :class:`JobController` does what the Job controller and the
kubelet would: one pod per completion index (``JOB_COMPLETION_INDEX``, hostname
``<job>-<index>``), started through the deployment's ``start_pod`` like every other pod; each
exit counted, a failed index retried up to ``backoffLimitPerIndex``, ``podFailurePolicy``'s
``FailJob`` rules applied to exit codes; and the Job's ``status`` kept current (``ready``,
``succeeded``, ``conditions``) for the retrain function to follow. Deleting the Job stops its
pods. Nothing here decides how training goes: the workers do.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server

from tests.cluster.pods import PodProcess
from tests.plugins.kube_api import FakeKubernetes

_POLL_S = 0.2
StartPod = Callable[[dict[str, Any], int], PodProcess]


def self_signed(address: str, folder: Path) -> tuple[Path, Path]:
    """A certificate for ``address`` (its own CA, as a cluster's ``ca.crt``) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "ca.crt", folder / "api.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def serve_api(fake: FakeKubernetes, address: str, port: int, folder: Path) -> Callable[[], None]:
    """Serve ``fake`` over HTTPS on ``address:port``; the function that stops it."""
    cert, key = self_signed(address, folder)
    server = make_server(
        address, port, fake.app(), threaded=True, ssl_context=(str(cert), str(key))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.shutdown


@dataclass
class JobController:
    fake: FakeKubernetes
    start_pod: StartPod
    failures: list[str] = field(default_factory=list)
    """Every worker pod that exited non-zero, with its log's end."""
    pods: dict[str, dict[int, PodProcess]] = field(default_factory=dict)
    _stopped: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.fake.watchers.append(self._changed)

    def _changed(self, verb: str, resource: str, body: dict[str, Any]) -> None:
        if resource != "jobs":
            return
        name = body["metadata"]["name"]
        if verb == "create":
            threading.Thread(
                target=self._run, args=(body,), name=f"job {name}", daemon=True
            ).start()
        elif verb == "delete":
            self._stopped.add(name)
            for pod in self.pods.get(name, {}).values():
                pod.stop()

    def stop_all(self) -> None:
        for name in list(self.pods):
            self._stopped.add(name)
            for pod in self.pods[name].values():
                pod.stop()

    def _run(self, job: dict[str, Any]) -> None:
        name, spec = job["metadata"]["name"], job["spec"]
        completions = spec["completions"]
        retries = spec.get("backoffLimitPerIndex", 0)
        failed_tries = dict.fromkeys(range(completions), 0)
        running = {i: self.start_pod(job, i) for i in range(completions)}
        self.pods[name] = dict(running)
        succeeded: set[int] = set()
        status: dict[str, Any] = {"active": completions, "ready": 0, "succeeded": 0, "failed": 0}
        job["status"] = status
        while name not in self._stopped:
            for index, pod in list(running.items()):
                code = pod.exit_code
                if code is None:
                    continue
                del running[index]
                if code == 0:
                    succeeded.add(index)
                    continue
                status["failed"] += 1
                self.failures.append(pod.failure())
                if _fails_job(spec, code) or failed_tries[index] >= retries:
                    self._finish(job, "Failed", f"index {index} exited {code}")
                    return
                failed_tries[index] += 1
                running[index] = self.start_pod(job, index)
                self.pods[name][index] = running[index]
            status.update(active=len(running), ready=len(running), succeeded=len(succeeded))
            if len(succeeded) == completions:
                self._finish(job, "Complete", "")
                return
            time.sleep(_POLL_S)

    def _finish(self, job: dict[str, Any], outcome: str, message: str) -> None:
        for pod in self.pods[job["metadata"]["name"]].values():
            pod.stop()
        interim = "SuccessCriteriaMet" if outcome == "Complete" else "FailureTarget"
        job["status"]["active"] = 0
        job["status"]["ready"] = 0
        job["status"]["conditions"] = [
            {"type": kind, "status": "True", "message": message} for kind in (interim, outcome)
        ]


def _fails_job(spec: dict[str, Any], code: int) -> bool:
    """Whether ``podFailurePolicy`` says FailJob for a container exit ``code``."""
    for rule in (spec.get("podFailurePolicy") or {}).get("rules", []):
        exits = rule.get("onExitCodes")
        if not exits:
            continue
        listed = code in exits["values"]
        if listed == (exits["operator"] == "In"):
            return rule["action"] == "FailJob"
    return False
