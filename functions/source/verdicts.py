"""Photo versions the enroll function rejected, so reconcile does not send them again.

Without this memory every reconcile pass would re-send each photo that has no face or is not
an image (the gallery, rightly, holds nothing for it), and enroll would decode and search it
again, every interval, forever. The enroll function's ``face.rejected.v1`` replies reach the
source through a Trigger (``source-on-face-rejected``); a rejection is remembered per
(key, ETag), so a new version of the photo is sent as usual.

Memory only, bounded: after a restart the first pass re-sends rejected photos once, which is
cheap, while persisting would need writable storage the source otherwise does not need.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_CAPACITY = 100_000


class RejectedVersions:
    """A bounded, thread-safe set of (key, etag); the oldest entries are forgotten first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str, etag: str) -> None:
        with self._lock:
            self._entries[(key, etag)] = None
            self._entries.move_to_end((key, etag))
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __contains__(self, version: object) -> bool:
        with self._lock:
            return version in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
