"""Notifications for the folder store: inotify on the faces bucket's folder, through watchdog.

On one machine people drop photos into ``buckets/faces/<identity>/`` with a file manager,
``cp`` or ``mv``, and the folder store itself writes a temp file and renames it into place.
The watcher turns that into the same changes the MinIO webhook reports, and must never
report a photo still being copied. So it acts only on events that mean "complete":

* ``IN_CLOSE_WRITE`` (FileClosedEvent): a writer closed the file;
* a rename into the tree or within it (FileMovedEvent): the file arrived whole;
* a folder moved in from outside (DirMovedEvent): every file in it arrived whole;
* a new folder (DirCreatedEvent): inotify watches it only once it has reported it, so a file
  copied in and closed within that gap (``cp -r``, ``mkdir`` then ``cp``) sends no close
  event. The folder is scanned, and files no process holds open for writing are reported;
  those still being written will send their close event.

A file closed just after its folder's watch began is seen by both the scan and its own event;
versions reported within the last seconds are remembered, so that is still one event.

Creations and plain modifications are never acted on: they fire while bytes are still being
written. Deletions are ``IN_DELETE`` per file (``rm -r`` reports each file) and renames out of
the tree; a folder moved out is one event for the folder, expanded from the photos the gallery
has enrolled under it, since the files can no longer be listed where they were.

The observer is created with ``generate_full_events`` so that a move whose other end is outside
the tree arrives as a move with an empty side, rather than as a bare created/deleted event
that would be indistinguishable from a half-written file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.utils import UnsupportedLibcError

from facerank.errors import FacerankError, ObjectNotFoundError
from facerank.events import DeliveryError
from facerank.gallery import Gallery
from facerank.storage import FolderStore
from functions.source.emitter import Change, Emitter, is_junk_name
from functions.source.reconcile import Processed, enrolled_photos

log = logging.getLogger(__name__)

WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    DirCreatedEvent,
]
"""Also narrows the inotify mask: no IN_MODIFY per written chunk reaches Python at all."""

_STOP_TIMEOUT_S = 5.0
_DUPLICATE_WINDOW_S = 5.0


class WatcherUnavailableError(FacerankError):
    """This platform has no inotify; reconcile alone keeps the gallery up to date."""

    code = "watcher_unavailable"


class FolderWatcher:
    """Emits changes of the faces bucket folder while started; a context manager."""

    def __init__(
        self,
        store: FolderStore,
        gallery: Gallery,
        emitter: Emitter,
        *,
        bucket: str | None = None,
        processed: Processed | None = None,
    ) -> None:
        self._store = store
        self._handler = ChangeHandler(store, gallery, emitter, bucket=bucket, processed=processed)
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        """Watch from now on (creating the bucket folder if needed). Raises
        WatcherUnavailableError where inotify does not exist."""
        self._store.ensure_bucket(self._handler.bucket)
        observer = _inotify_observer()
        observer.name = "facerank-watcher"
        observer.schedule(
            self._handler, self._handler.root, recursive=True, event_filter=WATCHED_EVENTS
        )
        observer.start()
        self._observer = observer
        log.info("watching %s for photos", self._handler.root)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(_STOP_TIMEOUT_S)
            self._observer = None

    def __enter__(self) -> FolderWatcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ChangeHandler(FileSystemEventHandler):
    """Translates file-system events under the bucket folder into emitted changes."""

    def __init__(
        self,
        store: FolderStore,
        gallery: Gallery,
        emitter: Emitter,
        *,
        bucket: str | None = None,
        processed: Processed | None = None,
    ) -> None:
        """``bucket`` (default: the faces bucket) is watched; ``processed`` (default: what
        the gallery enrolled) names the photos a folder moved out of it took along."""
        self.bucket = bucket or emitter.bucket
        self.root = (store.root / self.bucket).resolve()
        """Resolved: the bucket folder may be a symlink, and inotify does not follow one."""
        self._store = store
        self._processed = processed or (lambda: enrolled_photos(gallery, self.bucket))
        self._emitter = emitter
        self._recent = RecentReports(_DUPLICATE_WINDOW_S)

    def dispatch(self, event: FileSystemEvent) -> None:
        """Emit the event's changes. Runs on the observer thread, which must survive any
        failure: what is missed here, the next reconcile pass finds."""
        try:
            for change in self.changes(event):
                if self._recent.is_new(change):
                    self._emitter.emit(change)
                    self._recent.remember(change)
        except DeliveryError as exc:
            log.warning("watcher could not deliver, leaving it to reconcile: %s", exc)
        except Exception:
            log.exception("watcher failed on %s", type(event).__name__)

    def changes(self, event: FileSystemEvent) -> Iterator[Change]:
        """The changes ``event`` stands for (lazily: a moved folder may hold many files)."""
        if isinstance(event, FileClosedEvent):
            yield from self._created(self._key(event.src_path))
        elif isinstance(event, FileDeletedEvent):
            yield from self._deleted(self._key(event.src_path))
        elif isinstance(event, FileMovedEvent):
            yield from self._deleted(self._key(event.src_path))
            yield from self._created(self._key(event.dest_path))
        elif isinstance(event, DirMovedEvent):
            yield from self._folder_moved(self._key(event.src_path), self._key(event.dest_path))
        elif isinstance(event, DirCreatedEvent) and not event.is_synthetic:
            # synthetic ones stand for sub-folders of a folder moved in, handled as a whole
            yield from self._folder_created(event.src_path)

    def _folder_moved(self, source: str | None, dest: str | None) -> Iterator[Change]:
        """Only moves across the tree's edge: inside it, watchdog reports each file moved."""
        if source is not None and dest is None:
            for key in sorted(self._processed()):
                if key.startswith(f"{source}/"):
                    yield from self._deleted(key)
        elif dest is not None and source is None:
            for info in self._store.list(self.bucket, f"{dest}/"):
                yield Change.created(self.bucket, info.key, info.etag, info.size)

    def _folder_created(self, path: bytes | str) -> Iterator[Change]:
        """Files of a new folder that may have been finished before its watch existed."""
        if self._key(path) is None:
            return
        try:
            with os.scandir(path) as scan:
                files = sorted(entry.path for entry in scan if entry.is_file(follow_symlinks=False))
        except OSError:  # gone or replaced already: its own events tell the rest
            return
        for file in files:
            if nobody_writes(file):
                yield from self._created(self._key(file))

    def _created(self, key: str | None) -> Iterator[Change]:
        if key is None or self._emitter.screen(self.bucket, key) is not None:
            return
        try:
            info = self._store.stat(self.bucket, key)
        except ObjectNotFoundError:
            log.debug("%s vanished before it could be described", key[:200])
            return
        yield Change.created(self.bucket, key, info.etag, info.size)

    def _deleted(self, key: str | None) -> Iterator[Change]:
        if key is not None:
            yield Change.deleted(self.bucket, key)

    def _key(self, path: bytes | str) -> str | None:
        """The key of a path inside the bucket folder; None outside it, for the folder
        itself, and for names that are never photos (temp files, dotfiles, swap files)."""
        if not path:
            return None
        full = Path(os.fsdecode(path))
        if full == self.root or not full.is_relative_to(self.root):
            return None
        key = full.relative_to(self.root).as_posix()
        return None if is_junk_name(key) else key


class RecentReports:
    """Versions reported in the last ``window`` seconds, to report each version once.

    The scan of a new folder and a file's own close or rename event can both see one version
    within milliseconds of each other; later reports of a version are not suppressed, so a
    lost event downstream can always be made up for by touching the file.
    """

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        """Injectable, so the window is tested on a clock of its own, not a loaded machine's."""
        self._reported: OrderedDict[str, tuple[str, float]] = OrderedDict()
        """key -> (etag, when), oldest first."""

    def is_new(self, change: Change) -> bool:
        """False for a creation of the version of that key reported within the window."""
        cutoff = self._clock() - self._window
        while self._reported and next(iter(self._reported.values()))[1] < cutoff:
            self._reported.popitem(last=False)
        if change.kind == "deleted":
            return True
        etag, _ = self._reported.get(change.data.key, ("", 0.0))
        return etag != change.data.etag

    def remember(self, change: Change) -> None:
        if change.kind == "deleted":
            self._reported.pop(change.data.key, None)
            return
        self._reported[change.data.key] = (change.data.etag, self._clock())
        self._reported.move_to_end(change.data.key)


def nobody_writes(path: bytes | str) -> bool:
    """Whether Linux confirms that no process has ``path`` open for writing.

    It grants a read lease only then (EAGAIN otherwise); closing the descriptor drops it at
    once. Where leases are not available (someone else's file without CAP_LEASE, some network
    file systems) the answer is False: the file is left to its close event or to reconcile.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _inotify_observer() -> BaseObserver:
    """An inotify observer; imported here because the module fails to import off Linux."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except (ImportError, UnsupportedLibcError) as exc:
        raise WatcherUnavailableError(f"folder notifications need Linux inotify: {exc}") from None
    return InotifyObserver(generate_full_events=True)
