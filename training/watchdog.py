"""A deadline that ends the process even while TensorFlow blocks it in C++.

Why not a Python thread or a signal handler: while MultiWorkerMirroredStrategy waits for a
peer that never comes up, or a collective waits for a dead one, the main thread sits in C++
holding the GIL, so no Python code runs, and TensorFlow's preemption notifier swallows
SIGTERM. :func:`faulthandler.dump_traceback_later` runs its own C thread, needs no GIL, writes
every thread's stack (where it hung) and exits the process with status 1 — a failure the
launchers may retry from the latest checkpoint.
"""

from __future__ import annotations

import faulthandler
import logging
import sys
from typing import TextIO

log = logging.getLogger(__name__)


class Watchdog:
    """Re-armed before each phase or step; fires if the phase outlives its deadline."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._phase: str | None = None

    def arm(self, seconds: float, phase: str) -> None:
        """Exit unless :meth:`arm` or :meth:`disarm` is called again within ``seconds``.

        ``phase`` says what must finish meanwhile; it is logged when it changes, so the last
        line before the stack dump says what took too long.
        """
        if phase != self._phase:
            log.info("watchdog: %s, within %.0f s or this worker exits", phase, seconds)
            self._phase = phase
        faulthandler.dump_traceback_later(seconds, exit=True, file=self._stream)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self._phase = None
