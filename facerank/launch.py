"""``python -m facerank.launch MODULE [ARG...]``: run ``python -m MODULE`` as a container's PID 1.

Why: the kernel delivers no signal to a PID namespace's first process (a container's entry
point) whose action is the default one. Until a component installs its own handler, and servers
do only once they serve, a SIGTERM is simply dropped: a predictor that was loading its model
sat out Kubernetes' grace period and was killed (issue 15). Kubernetes sends SIGTERM at any
moment (scale-down, rollout, a failed probe), so this launcher installs a handler before the
component imports anything, then runs it as ``python -m`` would.

On SIGTERM before the component replaced the handler, the process stops with status 143
(128 + SIGTERM, what the default action reports), so a Job never counts an interrupted worker
as done. The main thread gets ``SystemExit`` at its next bytecode, running ``finally`` blocks;
one that is stuck in native code (TensorFlow loading a model, a collective that waits for a
peer) cannot see it, so a watcher thread, woken through the signal module's wakeup fd, ends
the process after :data:`GRACE_S` if it is still there. A handler the component installs
later (waitress' drain in :mod:`facerank.serving`, KServe's ModelServer) takes over; the
watcher then leaves SIGTERM to it.

When the component returns (or exits), the launcher flushes the logs and ends the process at
once, skipping the interpreter's finalization: with TensorFlow loaded that alone took 7 to 12 s
here (its runtime tearing down thread pools and the model), past the 5 s the trainer's grace
period allows, for nothing, since the container's memory goes with it. Only code that runs
after the component is done is skipped: a server has drained by then, a worker has written
its result.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

log = logging.getLogger("facerank.launch")

GRACE_S = 1.0
"""How long the main thread has to leave on its own after SIGTERM before the watcher exits."""

EXIT_SIGTERM = 128 + signal.SIGTERM
USAGE = "usage: python -m facerank.launch MODULE [ARG...]"


def main(argv: list[str]) -> None:
    """Install the start-up SIGTERM handling, then run ``MODULE`` with ``argv[1:]`` as its args."""
    if not argv or argv[0].startswith("-"):
        sys.exit(USAGE)
    stop_on_sigterm()
    sys.argv[:] = argv  # runpy sets argv[0] to the module's file, as ``python -m`` does
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)


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


def stop_on_sigterm() -> None:
    """SIGTERM stops this process until something else handles it (main thread only)."""
    readable, writable = os.pipe()
    os.set_blocking(writable, False)
    signal.set_wakeup_fd(writable, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, _raise_exit)
    threading.Thread(target=_watch, args=(readable,), name="sigterm-watcher", daemon=True).start()


def _raise_exit(_signum: int, _frame: FrameType | None) -> None:
    log.warning("SIGTERM while starting: stopping")
    raise SystemExit(EXIT_SIGTERM)


def _watch(readable: int) -> None:
    """Wait for SIGTERM's byte on the wakeup fd; exit if the main thread did not in time."""
    while signal.SIGTERM not in os.read(readable, 64):
        pass
    if signal.getsignal(signal.SIGTERM) is not _raise_exit:
        return  # the component's own handler took over: it drains and exits
    threading.Event().wait(GRACE_S)
    log.warning("SIGTERM while starting: stopping now, the main thread is busy in native code")
    os._exit(EXIT_SIGTERM)


if __name__ == "__main__":
    main(sys.argv[1:])
