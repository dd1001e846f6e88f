"""Training runs on this machine: N real ``python -m training.worker`` processes on loopback.

:class:`LocalTrainingLauncher` has the interface of the Kubernetes launcher
(``functions.retrain.kubernetes.KubernetesTrainingLauncher``) so the retrain function drives
either one: ``start`` returns at once, ``status`` is polled, ``delete`` stops the workers. It
behaves like the Indexed Job the other one creates: every worker gets ``TF_CONFIG`` naming all
of them on loopback ports (real gRPC collectives, as between pods), logs go to the run's
``logs/worker-<i>.log``, a failed worker is retried, and the run fails at its deadline.

Retries: when a worker exits with an error, its peers cannot go on (their collectives lost a
member), so the launcher stops them and starts all N again, at most ``max_restarts`` times;
the new workers resume from the latest checkpoint. A worker exiting 2 (a permanent failure,
see :mod:`training.worker`) or a passed deadline ends the run as failed at once. Whenever the
launcher ends a run as failed and the chief left no ``result.json`` saying why, it writes one.

Workers are killed with SIGKILL: TensorFlow's preemption notifier catches SIGTERM and a worker
blocked in a collective would not notice it; checkpoints are written atomically, so nothing
is lost that a graceful stop would have kept.

Ports: TensorFlow's gRPC server binds the port ``TF_CONFIG`` names itself, so the launcher
cannot hand it a listening socket; it reserves each attempt's ports (:mod:`facerank.ports`)
until that attempt's workers are gone, so no other process can take one before its worker
binds it (a port picked free and released was lost that way to whoever bound next).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from facerank.ports import reserve_port, reserved_port
from training.cluster import Cluster
from training.errors import RunNotFoundError
from training.result import RunFailed, RunSucceeded
from training.rundir import RUNS, RunDir

log = logging.getLogger(__name__)

RunStatus = Literal["pending", "running", "succeeded", "failed"]
EXIT_FINAL = 2
POLL_S = 0.2


@dataclass
class _Run:
    """A run this launcher started: its current processes and where it stands."""

    run: RunDir
    workers: int
    config_path: str
    deadline: float
    """``time.monotonic()`` after which the run fails."""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    reservations: list[socket.socket] = field(default_factory=list)
    """The current attempt's worker ports, held until its workers are gone."""
    attempt: int = 0
    attempt_started: float = 0.0
    """Wall-clock time the current attempt's processes were spawned."""
    outcome: RunStatus | None = None
    """Final status once decided; None while workers run."""
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class RunResult:
    """How a run ended (:func:`run_local`)."""

    status: RunStatus
    run: RunDir
    result: RunSucceeded | RunFailed | None
    """``result.json``: metrics, export and timings when it succeeded, the error when not."""
    attempts: int


class LocalTrainingLauncher:
    """Runs training workers as local processes; one supervising thread per run."""

    def __init__(
        self,
        shared_dir: Path,
        *,
        max_restarts: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env``: the workers' environment (default: this process's), to which each worker's
        ``TF_CONFIG`` and ``FACERANK_TRAIN_CONFIG`` are added."""
        self.shared_dir = Path(shared_dir)
        self.max_restarts = max_restarts
        self._env = dict(os.environ if env is None else env)
        self._env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banners out of logs
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def start(self, run_id: str, workers: int, config_path: str, *, deadline_s: int) -> None:
        """Spawn the run's workers and return; a run this launcher already started is left
        alone (a redelivered request), as a Job that already exists is."""
        with self._lock:
            if run_id in self._runs:
                return
            run = RunDir.of(self.shared_dir, run_id)
            if isinstance(run.read_result(), RunFailed):
                run.result_path.unlink()  # an earlier launch's verdict; this one starts afresh
            state = _Run(
                run=run,
                workers=workers,
                config_path=str(config_path),
                deadline=time.monotonic() + deadline_s,
            )
            self._spawn(state)
            self._runs[run_id] = state
        threading.Thread(
            target=self._supervise, args=(state,), name=f"train-{run_id}", daemon=True
        ).start()

    def status(self, run_id: str) -> RunStatus:
        """``pending`` until the chief reports its start, ``running``, then ``succeeded`` or
        ``failed``. For runs this launcher does not know (started by an earlier process), the
        run's ``result.json`` decides; without one, :class:`RunNotFoundError`."""
        with self._lock:
            state = self._runs.get(run_id)
        if state is None:
            result = RunDir.of(self.shared_dir, run_id).read_result()
            if result is None:
                raise RunNotFoundError(f"no training run {run_id!r} started here, and no result")
            return result.status
        if state.outcome is not None:
            return state.outcome
        started = any(
            r.get("event") == "start" and r.get("time", 0) >= state.attempt_started
            for r in state.run.read_progress()
        )
        return "running" if started else "pending"

    def delete(self, run_id: str) -> None:
        """Kill the run's workers and forget it (its directory stays)."""
        with self._lock:
            state = self._runs.pop(run_id, None)
        if state is not None:
            state.outcome = state.outcome or "failed"
            _stop_workers(state)
            state.done.set()

    def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """Block until the run ends (or ``timeout`` seconds pass); its status then."""
        with self._lock:
            state = self._runs.get(run_id)
        if state is not None:
            state.done.wait(timeout)
        return self.status(run_id)

    def attempts(self, run_id: str) -> int:
        """How many times the run's workers were started (1 + restarts)."""
        return self._known(run_id).attempt

    # --- internals --------------------------------------------------------------------------

    def _known(self, run_id: str) -> _Run:
        with self._lock:
            state = self._runs.get(run_id)
        if state is None:
            raise RunNotFoundError(f"no training run {run_id!r} started here")
        return state

    def _spawn(self, state: _Run) -> None:
        state.attempt += 1
        state.attempt_started = time.time()
        _stop_workers(state)  # the previous attempt's, if any: already killed, ports released
        state.reservations = [reserve_port() for _ in range(state.workers)]
        cluster_workers = tuple(f"127.0.0.1:{reserved_port(s)}" for s in state.reservations)
        state.run.logs_dir.mkdir(parents=True, exist_ok=True)
        header = f"=== attempt {state.attempt}, cluster {', '.join(cluster_workers)} ===\n"
        processes = []
        for index in range(state.workers):
            env = {
                **self._env,
                "TF_CONFIG": Cluster(cluster_workers, index).tf_config(),
                "FACERANK_TRAIN_CONFIG": state.config_path,
            }
            with (state.run.logs_dir / f"worker-{index}.log").open("ab") as log_file:
                log_file.write(header.encode())
                log_file.flush()
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "training.worker"],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        state.processes = processes
        log.info("run %s: attempt %d, %d workers", state.run.run_id, state.attempt, state.workers)

    def _supervise(self, state: _Run) -> None:
        while not state.done.is_set():
            codes = [p.poll() for p in state.processes]
            failed = [c for c in codes if c not in (None, 0)]
            if all(c == 0 for c in codes):
                self._end(state, "succeeded")
            elif time.monotonic() > state.deadline:
                self._end(state, "failed", "deadline_exceeded", "the run passed its deadline")
            elif failed:
                _stop_workers(state)
                reason = f"attempt {state.attempt}: worker exit codes {codes}"
                if EXIT_FINAL in failed:
                    self._end(state, "failed", "training_failed", f"{reason} (permanent)")
                elif state.attempt > self.max_restarts:
                    self._end(state, "failed", "training_failed", f"{reason}, no restart left")
                else:
                    log.warning("run %s: %s; restarting every worker", state.run.run_id, reason)
                    with self._lock:
                        if not state.done.is_set():
                            self._spawn(state)
            state.done.wait(POLL_S)

    def _end(self, state: _Run, outcome: RunStatus, code: str = "", message: str = "") -> None:
        _stop_workers(state)
        recorded = state.run.read_result()
        if outcome == "failed" and isinstance(recorded, RunSucceeded):
            outcome = "succeeded"  # the chief finished; a peer failed on the way out
        if outcome == "failed":
            log.error("run %s failed: %s", state.run.run_id, message)
            if recorded is None:
                state.run.write_result(RunFailed(state.run.run_id, code, message))
        state.outcome = outcome
        state.done.set()


def _stop_workers(state: _Run) -> None:
    """Kill the attempt's workers, then release their ports (never before: see the module)."""
    for process in state.processes:
        if process.poll() is None:
            process.kill()
    for process in state.processes:
        process.wait()
    released, state.reservations = state.reservations, []
    for reservation in released:
        reservation.close()


def run_local(
    config_path: str | os.PathLike[str],
    workers: int,
    deadline_s: int,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    launcher: LocalTrainingLauncher | None = None,
) -> RunResult:
    """Run a prepared run's workers here and wait for them (for the CLI and tests).

    ``on_progress`` gets each new ``progress.jsonl`` record as it appears. Interrupting the
    wait (Ctrl-C) kills the workers.
    """
    run = RunDir.of_config(config_path)
    run_id = run.read_config().run_id
    if launcher is None:
        launcher = LocalTrainingLauncher(run.path.parent.parent)
    if run.path.parent.name != RUNS or launcher.shared_dir != run.path.parent.parent:
        raise RunNotFoundError(f"{config_path} is not a run config under {launcher.shared_dir}")
    launcher.start(run_id, workers, str(config_path), deadline_s=deadline_s)
    seen = 0
    try:
        while True:
            status = launcher.wait(run_id, timeout=POLL_S)
            records = run.read_progress()
            for record in records[seen:]:
                if on_progress is not None:
                    on_progress(record)
            seen = len(records)
            if status in ("succeeded", "failed"):
                return RunResult(status, run, run.read_result(), launcher.attempts(run_id))
    finally:
        if launcher.status(run_id) in ("pending", "running"):
            launcher.delete(run_id)
