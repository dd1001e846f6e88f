"""Independent object writes issued at once, for stores where each one is a round trip.

Why: an enrollment writes a crop and an embedding per face, then (after its record) a segment's
two objects; none depends on another of its group. On S3 each write is a request that waits on
the network and the server, so writing a group together costs one round trip instead of
several. The order between groups is kept: :func:`run_together` returns only once every write
of its group has finished, so a record is still written after its crops and embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

WRITES_AT_ONCE = 4
"""Threads shared by every group; a group larger than this waits for free ones."""

_pool = ThreadPoolExecutor(max_workers=WRITES_AT_ONCE, thread_name_prefix="gallery-write")


def run_together(calls: Sequence[Callable[[], object]]) -> None:
    """Run ``calls`` concurrently and wait for all of them; the first failure (in ``calls``
    order) is raised after every call has ended, so none is still writing when it is."""
    if len(calls) < 2:
        for call in calls:
            call()
        return
    futures = [_pool.submit(call) for call in calls]
    wait(futures)
    for future in futures:
        future.result()
