"""facerank's processes for tests: what ``facerank up`` runs, on free loopback ports.

The enroll function, the local broker, the event source and the KServe predictor, each
started through its container's entry point by the same :class:`Supervisor` ``facerank up``
uses, so a test talks to the real processes over HTTP and can watch them survive. Retraining
is left out: its Triggers' subscriber is a recording sink. So is a *tap*: one extra Trigger
beside the real ones (``infra/base/eventing``) sends every event of one type to the sink,
which is how a test sees the rejections enroll answers while they travel back to the source.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from facerank.broker.subscribers import SUBSCRIBERS_ENV
from facerank.ports import reserved_ports
from facerank.settings import Settings
from facerank.supervisor import Component, Supervisor

ROOT = Path(__file__).resolve().parent.parent.parent
TAP_TRIGGER = "test-tap"


@dataclass(frozen=True)
class Pipeline:
    """Running components by name, and the settings every one of them was started with."""

    settings: Settings
    components: Mapping[str, Component]
    env: Mapping[str, str]

    def url(self, name: str) -> str:
        return self.components[name].url

    def healthy(self) -> dict[str, bool]:
        """Each component's health answer now: the proof that hostile input killed nothing."""
        return {
            name: _answers_200(component.url + component.health_path)
            for name, component in self.components.items()
        }


def tapped_eventing(folder: Path, tap_type: str) -> Path:
    """The real Broker and Triggers, plus a Trigger sending ``tap_type`` events to the tap."""
    folder.mkdir(parents=True, exist_ok=True)
    for manifest in (ROOT / "infra" / "base" / "eventing").glob("*.yaml"):
        shutil.copy(manifest, folder / manifest.name)
    tap = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": TAP_TRIGGER},
        "spec": {
            "broker": "facerank",
            "filter": {"attributes": {"type": tap_type}},
            "subscriber": {
                "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "tap"}
            },
        },
    }
    (folder / "tap.yaml").write_text(yaml.safe_dump(tap), encoding="utf-8")
    return folder


@contextmanager
def running_pipeline(
    data_dir: Path, *, tap_url: str, tap_type: str, env: Mapping[str, str] | None = None
) -> Iterator[Pipeline]:
    """Start enroll, broker, source and predictor on ``data_dir``; stop them afterwards."""
    names = ("enroll", "broker", "source", "predictor", "predictor_grpc")
    with reserved_ports(len(names)) as numbers:
        yield from _pipeline(
            data_dir, dict(zip(names, numbers, strict=True)), tap_url, tap_type, env
        )


def _pipeline(
    data_dir: Path,
    ports: Mapping[str, int],
    tap_url: str,
    tap_type: str,
    env: Mapping[str, str] | None,
) -> Iterator[Pipeline]:
    eventing = tapped_eventing(data_dir.parent / f"{data_dir.name}-eventing", tap_type)
    common = {
        "FACERANK_DATA_DIR": str(data_dir),
        "FACERANK_EVENTING_DIR": str(eventing),
        "FACERANK_GALLERY_REFRESH_S": "0.3",
        "FACERANK_RECONCILE_INTERVAL": "2",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "FACERANK_LOG_LEVEL": "WARNING",  # a test wanting the logs asks for them
        **{f"FACERANK_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **(env or {}),
    }
    settings = Settings.from_env(common)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    subscribers = {
        "facerank-enroll": urls["enroll"],
        "facerank-source": urls["source"],
        "facerank-retrain": tap_url,
        "facerank-identify": tap_url,
        "facerank-notify": tap_url,
        "tap": tap_url,
    }
    components = [
        Component("enroll", "functions.enroll", ports["enroll"]),
        Component(
            "broker",
            "facerank.broker",
            ports["broker"],
            env={SUBSCRIBERS_ENV: ",".join(f"{k}={v}" for k, v in subscribers.items())},
        ),
        Component(
            "source", "functions.source", ports["source"], env={"K_SINK": urls["broker"] + "/"}
        ),
        Component("predictor", "inference", ports["predictor"], health_path="/v1/models/facerank"),
    ]
    with Supervisor(components, env=common) as supervisor:
        supervisor.start()
        yield Pipeline(settings, {c.name: c for c in components}, common)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:
        return False
