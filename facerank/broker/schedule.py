"""Which queue file a delivery worker takes next, and when.

Why not ``queue.Queue``: a retry must wait out its backoff without holding a worker thread
(one slow subscriber would otherwise stall every other trigger), and a file scheduled twice
(a redelivered event, the startup scan racing the ingress) must never be in two workers'
hands at once, or one event would be delivered twice concurrently.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from pathlib import Path


class DueQueue:
    """Paths with the time they are due; each is either waiting, in one worker's hands, or
    not here at all."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Path]] = []
        self._claimed: set[Path] = set()
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._closed = False

    def push(self, path: Path) -> None:
        """Make ``path`` due now, unless it is already waiting or being delivered."""
        with self._changed:
            if self._closed or path in self._claimed:
                return
            self._claimed.add(path)
            self._schedule(path, 0.0)

    def retry(self, path: Path, delay: float) -> None:
        """Hand back the taken ``path`` to be due again in ``delay`` seconds."""
        with self._changed:
            if self._closed:
                self._claimed.discard(path)
            else:
                self._claimed.add(path)
                self._schedule(path, delay)

    def release(self, path: Path) -> None:
        """The worker that took ``path`` is done with it for good."""
        with self._changed:
            self._claimed.discard(path)

    def take(self) -> Path | None:
        """The next due path, waiting as long as needed; ``None`` once closed."""
        with self._changed:
            while not self._closed:
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._changed.wait(wait)
            return None

    def close(self) -> None:
        """Wake every waiting worker with ``None``; files stay on disk for the next run."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _schedule(self, path: Path, delay: float) -> None:
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), path))
        self._changed.notify()
