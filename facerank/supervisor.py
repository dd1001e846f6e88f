"""Run facerank's components as child processes, the way a cluster runs their containers.

``facerank up`` starts each component through the same entry point its image runs
(``python -m functions.enroll`` ...), so one machine mirrors the cluster and no import runs
upward from the core. The supervisor starts them in dependency order, waits for each one's
``/healthz``, relays their logs with a name prefix, restarts a component that dies (with
backoff, giving up on a crash loop), and stops them in reverse order on Ctrl-C or SIGTERM.
Every component's port is reserved (:mod:`facerank.ports`) before the first one starts and
held until all have stopped: a port someone else listens on fails ``facerank up`` at once,
naming it, and nobody can take a port while its component starts or restarts.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from facerank.errors import FacerankError
from facerank.ports import reserve_port
from facerank.serving import loopback_url

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
RELAY_DRAIN_S = 5.0
"""How long stopping waits for a child's last lines: a grandchild still holding the pipe
must not hold up the stop."""
MAX_RESTARTS = 5
"""A component that dies this many times in a row is crash-looping: stop everything."""
STABLE_AFTER_S = 60.0
"""A component that ran this long before dying starts counting its restarts afresh."""


class ComponentFailedError(FacerankError):
    code = "component_failed"


@dataclass(frozen=True)
class Component:
    """One process: a module run with ``python -m``, its port and its extra environment."""

    name: str
    module: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 60.0
    health_path: str = "/healthz"
    """Answers 200 once the component serves (KServe: the model's readiness endpoint)."""

    @property
    def url(self) -> str:
        return loopback_url(self.port)


class Supervisor:
    """Starts, watches and stops ``components``; use as a context manager."""

    def __init__(self, components: Sequence[Component], *, env: Mapping[str, str]) -> None:
        self.components = list(components)
        self.env = dict(env)
        self._processes: dict[str, subprocess.Popen[str]] = {}
        self._restarts: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._relays: dict[str, threading.Thread] = {}
        self._reservations: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component in order, each only once the previous one answers health.

        Raises :class:`~facerank.errors.PortInUseError` before starting any when a port is taken.
        """
        for component in self.components:
            purpose = f"the {component.name} port"
            self._reservations.append(reserve_port(component.port, purpose=purpose))
        for component in self.components:
            self._spawn(component)
            self._wait_ready(component)

    def watch(self, stop: threading.Event, *, poll_s: float = 0.5) -> None:
        """Until ``stop`` is set: restart components that exited, with backoff.

        Raises :class:`ComponentFailedError` when one keeps dying.
        """
        while not stop.wait(poll_s):
            for component in self.components:
                process = self._processes[component.name]
                if process.poll() is None:
                    continue
                ran_for = time.monotonic() - self._started[component.name]
                count = 1 if ran_for > STABLE_AFTER_S else self._restarts.get(component.name, 0) + 1
                if count > MAX_RESTARTS:
                    raise ComponentFailedError(
                        f"{component.name} exited {count} times (last status {process.returncode})"
                    )
                self._restarts[component.name] = count
                delay = min(30.0, 0.5 * 2**count)
                log.warning(
                    "%s exited with status %s; restart %d in %.1fs",
                    component.name,
                    process.returncode,
                    count,
                    delay,
                )
                if stop.wait(delay):
                    return
                self._spawn(component)
                try:
                    self._wait_ready(component)
                except ComponentFailedError as exc:
                    if self._processes[component.name].poll() is None:
                        raise
                    # Died while restarting: the next poll restarts it again, counted against
                    # MAX_RESTARTS, rather than ending supervision of every component.
                    log.warning("%s", exc)

    def stop(self) -> None:
        """SIGTERM in reverse start order, so producers stop before their consumers."""
        for component in reversed(self.components):
            process = self._processes.pop(component.name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs: killing it", component.name, STOP_GRACE_S)
                process.kill()
                process.wait()
        # Their last lines (why they stopped) are relayed before stop returns, not after.
        for relay in self._relays.values():
            relay.join(RELAY_DRAIN_S)
        while self._reservations:
            self._reservations.pop().close()

    def _spawn(self, component: Component) -> None:
        env = {
            **os.environ,
            **self.env,
            **component.env,
            "PORT": str(component.port),  # what Knative would inject
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module names
            [sys.executable, "-m", component.module],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children
            preexec_fn=_die_with_parent(),
        )
        with self._lock:
            self._processes[component.name] = process
            self._started[component.name] = time.monotonic()
        relay = threading.Thread(target=_relay, args=(component.name, process.stdout), daemon=True)
        relay.start()
        self._relays[component.name] = relay

    def _wait_ready(self, component: Component) -> None:
        deadline = time.monotonic() + component.ready_timeout_s
        process = self._processes[component.name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ComponentFailedError(
                    f"{component.name} exited with status {process.returncode} while starting"
                )
            if _healthy(component.url + component.health_path):
                log.info("%s ready at %s", component.name, component.url)
                return
            time.sleep(0.2)
        raise ComponentFailedError(
            f"{component.name} not ready after {component.ready_timeout_s:.0f}s"
        )


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> Callable[[], None] | None:
    """What a child runs before exec so that it gets SIGTERM when the supervisor dies.

    Children run in sessions of their own (Ctrl-C must reach only the supervisor), so a
    supervisor killed outright (SIGKILL, the OOM killer) would leave them running, holding
    their ports and the data folder, and the next ``facerank up`` could not start. Linux's
    parent-death signal makes each one drain and exit instead. It fires when the spawning
    *thread* ends, which is why components are only ever spawned from the thread that runs
    :meth:`Supervisor.start` and :meth:`Supervisor.watch`. Elsewhere: None, nothing to do.
    """
    if _LIBC is None:
        return None
    prctl, parent = _LIBC.prctl, os.getpid()

    def request_signal() -> None:
        # Only a resolved C call here: the child of a threaded process may run nothing else.
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return request_signal


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _relay(name: str, stream: IO[str] | None) -> None:
    """Copy a child's output to our stderr, each line prefixed with the component's name."""
    if stream is None:
        return
    for line in stream:
        sys.stderr.write(f"{name:>8} | {line}")
        sys.stderr.flush()
