"""Components started as their images start them (``python -m facerank.launch MODULE``): SIGTERM
stops them at any moment, start-up included.

In a container the entry point is PID 1, which the kernel gives no signal whose action is the
default: a component that were PID 1 itself would drop a SIGTERM while it loads (issue 15).
Here the launcher is an ordinary process, where the default action would kill it at once with
-15; status 143 and its line show that it handled the signal and passed it on to the component,
which is what makes PID 1 stop (``infra/images/check.py`` sends the same signal to the images).

The store "never answers" as a MinIO that is still starting: a socket that accepts connections
and never replies, so loading is certainly still under way when the signal arrives.
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from facerank.descriptor.landmarks import ensure_landmark_model
from facerank.launch import EXIT_SIGTERM
from facerank.settings import Settings
from tests.plugins.infra import INFRA, load_yaml
from tests.plugins.training_runs import CLUSTER_FORMING, prepare_two_worker_run
from training.cluster import Cluster

pytestmark = pytest.mark.slow

STOP_S = 5.0
"""What the image check allows after SIGTERM; Kubernetes' grace periods are longer."""
START_S = 120.0
"""Bounds waiting for a log line (imports and TensorFlow take seconds on a loaded machine)."""


class Component:
    """``python -m facerank.launch MODULE`` with its output read line by line."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facerank.launch", module],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str) -> None:
        """Block until a line containing ``text`` was printed (fail if the process ended)."""
        deadline = time.monotonic() + START_S
        while True:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"ended before {text!r}:\n{self.output()}"
            self.lines.append(line)
            if text in line:
                return

    def stop(self) -> int:
        """SIGTERM, then the exit status within :data:`STOP_S` (the rest of the output read)."""
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=STOP_S)
        while (line := self._queue.get(timeout=STOP_S)) is not None:
            self.lines.append(line)
        return status

    def stop_after(self, text: str) -> int:
        """:meth:`stop` once ``text`` was printed; the process is killed whatever happens."""
        try:
            self.wait_for(text)
            return self.stop()
        finally:
            self.process.kill()

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def silent_store() -> Iterator[str]:
    """An S3 endpoint that accepts connections and never answers (read timeout: 30 s)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def s3_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    return {
        "FACERANK_STORE": "s3",
        "FACERANK_S3_ENDPOINT": endpoint,
        "FACERANK_S3_ACCESS_KEY": "check",
        "FACERANK_S3_SECRET_KEY": "check-secret",
        "FACERANK_DATA_DIR": str(tmp_path / "data"),
        "PORT": "0",
    }


@pytest.mark.parametrize(
    ("module", "loading"),
    [
        ("inference", "loading the active model and its gallery"),
        ("functions.enroll", "loading the gallery and the active model"),
    ],
)
def test_sigterm_while_loading_stops_promptly(
    module: str, loading: str, silent_store: str, tmp_path: Path
) -> None:
    component = Component(module, s3_env(silent_store, tmp_path))
    status = component.stop_after(loading)
    assert status == EXIT_SIGTERM, component.output()
    assert f"facerank.launch: {module} ended by SIGTERM" in component.output()
    assert "Traceback" not in component.output()


@pytest.fixture(scope="module")
def image_models(pretrained_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache as the images bake it (``facerank models fetch``: the descriptor and the
    landmark net), made from the session's converted descriptor."""
    cache = tmp_path_factory.mktemp("image-models")
    shutil.copytree(pretrained_settings.cache_dir / "models", cache / "models")
    ensure_landmark_model(Settings.from_env({}, data_dir=cache / "data", cache_dir=cache))
    return cache


@pytest.mark.parametrize(
    ("module", "listening"),
    [("inference.web", "web listening on"), ("functions.enroll", "enroll listening on")],
)
def test_a_serving_component_drains_and_exits_promptly(
    module: str, listening: str, image_models: Path, tmp_path: Path
) -> None:
    """Once serving, SIGTERM is the server's: waitress drains and the process exits 0, within
    STOP_S even with TensorFlow and both models loaded (enroll), whose teardown at interpreter
    exit alone took 12 s here."""
    env = {
        "FACERANK_DATA_DIR": str(tmp_path),
        "FACERANK_CACHE_DIR": str(image_models),
        "PORT": "0",
    }
    component = Component(module, env)
    status = component.stop_after(listening)
    assert status == 0, component.output()
    assert f"{listening.split()[0]} stopped" in component.output()
    assert "facerank.launch" not in component.output()


def trainer_pod() -> dict[str, Any]:
    """The pod spec every training worker gets (the retrain function copies it into Jobs)."""
    return dict(load_yaml(INFRA / "base" / "training" / "trainer.yaml")["template"]["spec"])


def trainer_env() -> dict[str, str]:
    """The worker container's own variables (its ``value`` ones) in the trainer's pod."""
    env = trainer_pod()["containers"][0]["env"]
    return {variable["name"]: variable["value"] for variable in env if "value" in variable}


def test_sigterm_while_the_training_cluster_forms_stops_the_worker(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Worker 0 of two whose peer never comes, started as the trainer's pod starts it: SIGTERM
    stops it within STOP_S, with the status a Job retries (143), not its permanent-failure 2
    and not the kubelet's SIGKILL. TensorFlow swallows the signal there; the launcher's stop
    deadline (the pod's FACERANK_STOP_TIMEOUT_S) ends it."""
    run = prepare_two_worker_run(tmp_path / "shared", "forming")
    cluster = Cluster((f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"), 0)
    env = {
        **trainer_env(),
        "TF_CONFIG": cluster.tf_config(),
        "FACERANK_TRAIN_CONFIG": str(run.config_path),
        "FACERANK_DATA_DIR": str(tmp_path / "data"),
        "TF_CPP_MIN_LOG_LEVEL": "0",  # CLUSTER_FORMING is an INFO line of TensorFlow's C++
    }
    component = Component("training.worker", env)
    status = component.stop_after(CLUSTER_FORMING)
    assert status == EXIT_SIGTERM, component.output()
    assert "training.worker still running 3 s after SIGTERM: killed" in component.output()
    assert "Traceback" not in component.output()


def test_the_trainer_pod_is_stopped_by_the_launcher_before_the_kubelet_kills_it() -> None:
    """The stop deadline leaves the launcher a second of the grace period to report 143."""
    grace_s = trainer_pod()["terminationGracePeriodSeconds"]
    assert float(trainer_env()["FACERANK_STOP_TIMEOUT_S"]) <= grace_s - 1


STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM, pid", os.getpid(), flush=True)
time.sleep(120)
"""


def stubborn_env(tmp_path: Path, stop_timeout_s: str) -> dict[str, str]:
    """The environment that makes ``stubborn`` a module: a component that ignores SIGTERM."""
    (tmp_path / "stubborn.py").write_text(STUBBORN, encoding="utf-8")
    return {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "FACERANK_STOP_TIMEOUT_S": stop_timeout_s,
    }


def test_a_component_that_ignores_sigterm_is_killed_at_the_stop_deadline(tmp_path: Path) -> None:
    """Whatever holds the component up (a swallowed signal, the GIL held in C++), the
    launcher, another process, kills it FACERANK_STOP_TIMEOUT_S after the signal: 143."""
    component = Component("stubborn", stubborn_env(tmp_path, "1"))
    status = component.stop_after("ignoring SIGTERM")
    assert status == EXIT_SIGTERM, component.output()
    assert "facerank.launch: stubborn still running 1 s after SIGTERM: killed" in component.output()


def test_a_component_dies_with_a_launcher_killed_outright(tmp_path: Path) -> None:
    """Outside a container nothing else would end it: it would keep its ports and files."""
    component = Component("stubborn", stubborn_env(tmp_path, "60"))
    try:
        component.wait_for("ignoring SIGTERM")
        pid = int(component.lines[-1].split()[-1])
        ended = os.pidfd_open(pid)
    finally:
        component.process.kill()
    try:
        assert select.select([ended], [], [], STOP_S)[0], "the component outlived its launcher"
    finally:
        os.close(ended)


def launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m facerank.launch ARGS`` run to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "facerank.launch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_S,
        check=False,
    )


def test_a_bad_stop_timeout_is_refused_before_the_component_starts() -> None:
    result = launch("training.worker", env={**os.environ, "FACERANK_STOP_TIMEOUT_S": "soon"})
    assert result.returncode == 2
    assert "cannot start training.worker: FACERANK_STOP_TIMEOUT_S must be a number" in result.stderr


@pytest.mark.parametrize(
    ("job_env", "refusal"),
    [
        ({}, "cannot start (run_not_found): no training run at"),
        (  # the Job's variables without JOB_COMPLETION_INDEX: the cluster, before the config
            {
                "FACERANK_TRAIN_JOB": "facerank-train-x",
                "FACERANK_TRAIN_SERVICE": "facerank-train-x",
                "FACERANK_TRAIN_NAMESPACE": "facerank",
                "FACERANK_TRAIN_WORKERS": "2",
            },
            "cannot start (invalid_cluster): TF_CONFIG is not set and JOB_COMPLETION_INDEX missing",
        ),
    ],
)
def test_arguments_and_exit_status_pass_through(
    job_env: dict[str, str], refusal: str, tmp_path: Path
) -> None:
    """The worker's own refusal (exit 2: a Job's FailJob) is what the launcher returns."""
    env = {**os.environ, "FACERANK_DATA_DIR": str(tmp_path), **job_env}
    for name in ("FACERANK_TRAIN_CONFIG", "TF_CONFIG", "JOB_COMPLETION_INDEX"):
        env.pop(name, None)
    missing = tmp_path / "runs" / "none" / "config.json"
    result = launch("training.worker", str(missing), env=env)
    assert result.returncode == 2, result.stderr
    assert refusal in result.stderr
    assert "Traceback" not in result.stderr


def test_without_a_module_it_says_how_to_use_it() -> None:
    result = launch()
    assert result.returncode == 1
    assert "usage: python -m facerank.launch MODULE" in result.stderr
