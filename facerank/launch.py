"""``python -m facerank.launch MODULE [ARG...]``: run ``python -m MODULE`` under a small init.

Why an init: the images start this as the container's PID 1, and Kubernetes sends SIGTERM at
any moment (scale-down, rollout, a failed probe), start-up included. A component that is PID 1
itself cannot always be stopped by it (issue 15):

- the kernel gives PID 1 no signal whose action is the default one, so until a component
  installs a handler (a server does only once it serves), SIGTERM is dropped;
- a handler is not enough either: when a MultiWorkerMirroredStrategy starts, TensorFlow's
  preemption notifier replaces the SIGTERM handler with its own, which only sets a flag, and
  the training worker then waits for its peers in C++ *holding the GIL*, where neither a Python
  handler nor a Python thread runs. Only another process can act on the signal then.

So the launcher stays PID 1, small and always responsive, and runs the component as its child
(``python -m facerank.launch --component LAUNCHER_PID MODULE``, in a process group of its own,
killed by the kernel should the launcher die):

- SIGTERM and SIGINT are passed on to the component, once each. Not being PID 1, a component
  that has no handler yet dies of them at once (their default action), whatever it is busy
  with; a server's handler drains and returns.
- With ``FACERANK_STOP_TIMEOUT_S`` set, a component still running that long after the signal
  is killed (SIGKILL, its process group). The trainer's pod sets it below its 5 s grace period:
  a worker's TensorFlow swallows SIGTERM, and its checkpoints are atomic, so a kill loses
  nothing a graceful stop would have kept. Unset, a server drains for as long as its pod's
  grace period lets it.
- The launcher exits with the component's status, or 128 + the signal that ended it. A stop
  asked for by SIGTERM is 143 even when the deadline had to kill: a Job retries such a worker,
  and never takes it for the permanent failure (2) its podFailurePolicy fails the Job on.
- Orphaned processes, re-parented to PID 1, are reaped, as an init does.

The component, when it returns (or exits), flushes its logs and ends at once, skipping the
interpreter's finalization: with TensorFlow loaded that alone took 7 to 12 s here (its runtime
tearing down thread pools and the model), past the 5 s the trainer's grace period allows, for
nothing, since the container's memory goes with it. Only code that runs after the component is
done is skipped: a server has drained by then, a worker has written its result.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import runpy
import select
import signal
import sys
import time
from types import FrameType
from typing import NoReturn

from facerank.errors import ConfigError
from facerank.settings import Settings

log = logging.getLogger("facerank.launch")

COMPONENT_FLAG = "--component"
"""How the launcher starts its child: the same module, running the component in-process."""
PASSED_ON = (signal.SIGTERM, signal.SIGINT)
EXIT_SIGTERM = 128 + signal.SIGTERM
EXIT_CONFIG = 2
"""A bad ``FACERANK_STOP_TIMEOUT_S``: a Job's permanent failure, as a worker's bad config is."""
USAGE = "usage: python -m facerank.launch MODULE [ARG...]"
_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> NoReturn:
    """Supervise ``MODULE`` run with ``argv[1:]`` as its args; exit with its status."""
    if argv[:1] == [COMPONENT_FLAG] and len(argv) > 2:
        run_component(int(argv[1]), argv[2:])
    if not argv or argv[0].startswith("-"):
        sys.exit(USAGE)
    try:
        stop_timeout_s = Settings.one_from_env("stop_timeout_s")
    except ConfigError as exc:
        log.error("facerank.launch: cannot start %s: %s", argv[0], exc)
        sys.exit(EXIT_CONFIG)
    sys.exit(Init(argv, stop_timeout_s).run())


class Init:
    """The init's loop (not :class:`facerank.supervisor.Supervisor`, which runs ``facerank up``):
    one child, the signals passed on to it, its deadline, the reaping.

    Everything happens in :meth:`run`'s loop, woken through the signal module's wakeup fd
    (one byte per signal, SIGCHLD included); the handlers themselves do nothing, so no signal
    can interrupt half-done bookkeeping, and none is lost between two looks.
    """

    def __init__(self, argv: list[str], stop_timeout_s: float | None) -> None:
        self.argv = argv
        self.stop_timeout_s = stop_timeout_s
        self.stopping: int | None = None
        """The first signal passed on: what the component was asked to stop by."""
        self.deadline: float | None = None
        self.killed = False

    @property
    def module(self) -> str:
        return self.argv[0]

    def run(self) -> int:
        """Start the component and return the status to exit with once it ended."""
        readable, writable = os.pipe()  # not inherited (PEP 446): the component never sees it
        os.set_blocking(readable, False)
        os.set_blocking(writable, False)
        signal.set_wakeup_fd(writable, warn_on_full_buffer=False)
        for signum in (*PASSED_ON, signal.SIGCHLD):
            signal.signal(signum, _wake)
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "facerank.launch", COMPONENT_FLAG, str(os.getpid()), *self.argv],
            os.environ,
            setpgroup=0,  # a terminal's Ctrl-C reaches the launcher alone, passed on once
        )
        while True:
            status = self._reap(pid)
            if status is not None:
                return self._exit_status(status)
            if not select.select([readable], [], [], self._wait_s())[0]:
                self._kill(pid)  # the deadline passed
                continue
            for signum in os.read(readable, 256):
                if signum in PASSED_ON:
                    self._pass_on(pid, signum)

    def _wait_s(self) -> float | None:
        if self.deadline is None or self.killed:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def _pass_on(self, pid: int, signum: int) -> None:
        if self.killed:
            return
        with contextlib.suppress(ProcessLookupError):  # ended, not yet collected: moot
            os.kill(pid, signum)
        if self.stopping is None:
            self.stopping = signum
            if self.stop_timeout_s is not None:
                self.deadline = time.monotonic() + self.stop_timeout_s

    def _kill(self, pid: int) -> None:
        assert self.stopping is not None  # noqa: S101 - a deadline is set by a stop only
        log.warning(
            "facerank.launch: %s still running %g s after %s: killed",
            self.module,
            self.stop_timeout_s,
            signal.Signals(self.stopping).name,
        )
        with contextlib.suppress(ProcessLookupError):  # the whole group ended meanwhile
            os.killpg(pid, signal.SIGKILL)
        self.killed = True

    def _reap(self, pid: int) -> int | None:
        """Collect every ended child; the component's wait status once it ended, else None."""
        while True:
            ended, status = os.waitpid(-1, os.WNOHANG)
            if ended == pid:
                return status
            if ended == 0:
                return None
            # else an orphan the component left, re-parented to PID 1: now collected

    def _exit_status(self, status: int) -> int:
        """The component's exit code, 128 + the signal that ended it, or, when the deadline
        killed it, 128 + the signal that asked it to stop."""
        if self.killed and self.stopping is not None:
            return 128 + self.stopping
        code = os.waitstatus_to_exitcode(status)
        if code >= 0:
            return code
        log.warning("facerank.launch: %s ended by %s", self.module, signal.Signals(-code).name)
        return 128 - code


def _wake(_signum: int, _frame: FrameType | None) -> None:
    """Nothing: the signal's byte on the wakeup fd is what :meth:`Init.run` acts on."""


def run_component(launcher: int, argv: list[str]) -> NoReturn:
    """Run ``python -m argv[0]`` with ``argv[1:]`` in this process; exit without finalizing."""
    _die_with(launcher)
    sys.argv[:] = argv  # runpy sets argv[0] to the module's file, as ``python -m`` does
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)


def _die_with(launcher: int) -> None:
    """Have the kernel SIGKILL this process when the launcher (pid ``launcher``) dies.

    In a container the launcher is PID 1, and its end ends everything else. Outside one (the
    tests, the cluster harness), a launcher killed outright would leave the component running
    in its own process group, holding its ports and files. Not SIGTERM: the launcher that
    would have bounded the stop is gone.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # it died before the request took effect
        os._exit(128 + signal.SIGKILL)


def _exit_now(code: object) -> NoReturn:
    """End the process with ``sys.exit(code)``'s status, its output flushed, not finalized."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as the interpreter does
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
