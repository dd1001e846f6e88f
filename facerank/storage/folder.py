"""Object store in plain folders, for running facerank on one machine without MinIO.

Bucket ``B`` is the folder ``root/B`` and key ``K`` the file ``root/B/K``, so people can drop
photos into folders by hand and those files are real objects. What a file cannot carry (ETag,
content type, user metadata) lives in a JSON sidecar under ``root/.meta`` (bucket names cannot
start with ``.``, so it never collides with a bucket)::

    root/B/K                                 the object's bytes
    root/.meta/B/<h[:2]>/<h>.json            its sidecar, h = sha256("B/K")
    root/.meta/.locks/<h[:2]>.lock           flock stripe serialising writers of B/K

Sidecars are named by hash rather than mirroring the key so that no key is too long for a
sidecar file name, and keys ``x`` and ``x.json/y`` cannot fight over one path.

A sidecar records the (inode, size, mtime) of the data file it describes and is trusted only
while the file still matches. A file replaced by hand, or a put cut short by a crash, makes it
stale; the store then describes the file from its bytes (MD5, type from the extension, no
metadata) and caches that in a new sidecar, so a photo dropped by hand is hashed once, not at
every listing.

Writes go to a temporary ``.facerank-tmp-*`` file in the destination folder, are fsynced, then
renamed into place (a rename keeps the inode and mtime the sidecar recorded), so readers see the
old object or the new one, never a torn one. Paths inside a bucket are opened one folder at a
time with ``O_NOFOLLOW``: symbolic links inside a bucket are never followed, so a link planted
there cannot expose files outside it. POSIX only (``fcntl``, ``dir_fd``).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import mimetypes
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from facerank.errors import (
    BucketNotFoundError,
    KeyConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from facerank.storage.base import ObjectInfo, StoredObject, bucket_not_found, object_not_found
from facerank.storage.keys import (
    DEFAULT_CONTENT_TYPE,
    RESERVED_PREFIX,
    check_bucket,
    check_key,
    check_prefix,
    check_put,
    is_valid_key,
    shown,
)

logger = logging.getLogger(__name__)

_META_DIR = ".meta"
_LOCKS_DIR = ".locks"
_TEMP_PREFIX = f"{RESERVED_PREFIX}tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""``O_NONBLOCK`` so that opening a FIFO dropped into a bucket cannot hang a reader."""
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
"""A path component is missing, is a file, or is a symlink: in every case there is no object."""
_TRANSIENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EMFILE, errno.ENFILE}
)
"""Failures that freeing space, a retry or fewer open files can cure."""
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_RACE_RETRIES = 5
"""Attempts at a put while a concurrent ``delete`` may prune the folder it is writing into."""

Fingerprint = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class _Sidecar:
    """What the store remembers about one data file, valid only for that exact file."""

    etag: str
    content_type: str
    metadata: dict[str, str]
    fingerprint: Fingerprint

    def to_json(self, key: str) -> bytes:
        """Serialise, with the key itself so a human browsing ``.meta`` can tell files apart."""
        record = {"key": key, **dataclasses.asdict(self)}
        return json.dumps(record, ensure_ascii=False, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, key: str) -> _Sidecar | None:
        """Parse a sidecar written for ``key``; None when damaged or written for another key."""
        try:
            record = json.loads(raw)
            if record["key"] != key:
                return None
            inode, size, mtime_ns = (int(n) for n in record["fingerprint"])
            return cls(
                etag=str(record["etag"]),
                content_type=str(record["content_type"]),
                metadata={str(k): str(v) for k, v in record["metadata"].items()},
                fingerprint=(inode, size, mtime_ns),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class FolderStore:
    """:class:`~facerank.storage.base.ObjectStore` over a folder tree, safe across processes."""

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"FolderStore({str(self._root)!r})"

    @property
    def root(self) -> Path:
        """The folder holding one sub-folder per bucket."""
        return self._root

    @property
    def description(self) -> str:
        return f"folder:{self._root}"

    def ensure_bucket(self, bucket: str) -> None:
        check_bucket(bucket)
        with _os_errors(bucket):
            (self._root / bucket).mkdir(parents=True, exist_ok=True)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        durable: bool = True,
    ) -> ObjectInfo:
        clean_metadata = check_put(bucket, key, content_type, metadata)
        etag = _md5(data)

        def describe(st: os.stat_result) -> _Sidecar:
            return _Sidecar(etag, content_type, clean_metadata, _fingerprint(st))

        with _os_errors(bucket, key), self._lock(bucket, key, exclusive=True):
            if if_match is not None or if_none_match:
                self._check_precondition(bucket, key, if_match, if_none_match)
            st = self._write_object(bucket, key, data, describe, durable=durable)
        return _info(bucket, key, st, describe(st))

    def get(self, bucket: str, key: str) -> StoredObject:
        check_bucket(bucket)
        check_key(key)
        info, data = self._read_object(bucket, key, with_data=True)
        return StoredObject(info, data)

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        check_bucket(bucket)
        check_key(key)
        info, _ = self._read_object(bucket, key, with_data=False)
        return info

    def exists(self, bucket: str, key: str) -> bool:
        check_bucket(bucket)
        check_key(key)
        try:
            with _os_errors(bucket, key), self._open_object(bucket, key):
                return True
        except ObjectNotFoundError:
            self._forget(bucket, key)
            return False

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        check_bucket(bucket)
        check_prefix(prefix)
        return self._list(bucket, prefix)

    def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        check_bucket(bucket)
        check_key(key)
        *folders, name = key.split("/")
        with _os_errors(bucket, key), self._lock(bucket, key, exclusive=True):
            if if_match is not None:
                self._check_precondition(bucket, key, if_match, if_none_match=False)
            with _ignore_absent(), self._folders(bucket, folders, create=False) as chain:
                if stat.S_ISREG(os.stat(name, dir_fd=chain[-1], follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=chain[-1])
                    _prune_empty(chain, folders)
            self._sidecar_path(bucket, key).unlink(missing_ok=True)

    # --- writing -------------------------------------------------------------------------

    def _write_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        describe: Callable[[os.stat_result], _Sidecar],
        *,
        durable: bool = True,
    ) -> os.stat_result:
        """Atomically install ``data`` at ``key``, writing its sidecar just before the rename
        (both fsynced when ``durable``).

        Retries when a concurrent ``delete`` prunes a folder between our creating and using it.
        """
        *folders, name = key.split("/")

        def write_sidecar(st: os.stat_result) -> None:
            self._write_sidecar(bucket, key, describe(st), durable=durable)

        attempt = 1
        while True:
            try:
                with self._folders(bucket, folders, create=True) as chain:
                    return _write_atomically(
                        chain[-1], name, data, before_commit=write_sidecar, durable=durable
                    )
            except FileNotFoundError:
                if attempt == _RACE_RETRIES:
                    raise
                attempt += 1
            except (NotADirectoryError, IsADirectoryError):
                raise KeyConflictError(
                    f"cannot put {shown(key)} in bucket {shown(bucket)}: a file (or symbolic "
                    "link) sits where one of its folders must be, or a folder sits at the key"
                ) from None

    def _check_precondition(
        self, bucket: str, key: str, if_match: str | None, if_none_match: bool
    ) -> None:
        """Compare the object's current ETag with the caller's; the write lock must be held."""
        current: str | None = None
        with suppress(ObjectNotFoundError), self._open_object(bucket, key) as (file, st):
            sidecar = self._read_sidecar(bucket, key, st)
            current = sidecar.etag if sidecar is not None else _md5_file(file)
        if if_none_match and current is not None:
            raise PreconditionFailedError(f"{shown(key)} in bucket {shown(bucket)} exists")
        if if_match is not None and current != if_match:
            raise PreconditionFailedError(
                f"{shown(key)} in bucket {shown(bucket)} changed since it was read"
            )

    def _write_sidecar(
        self, bucket: str, key: str, sidecar: _Sidecar, *, durable: bool = True
    ) -> None:
        path = self._sidecar_path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(path.parent, _DIR_FLAGS)
        try:
            _write_atomically(folder, path.name, sidecar.to_json(key), durable=durable)
        finally:
            os.close(folder)

    def _remember(self, bucket: str, key: str, sidecar: _Sidecar) -> None:
        """Cache a description computed from a file's bytes, so the file is hashed only once.

        Best effort: skipped when the store is read-only. Re-checked under the write lock, so
        it never replaces the sidecar of an object put since the file was hashed.
        """
        *folders, name = key.split("/")
        with (
            suppress(OSError, BucketNotFoundError),
            self._lock(bucket, key, exclusive=True),
            self._folders(bucket, folders, create=False) as chain,
        ):
            current = os.stat(name, dir_fd=chain[-1], follow_symlinks=False)
            if _fingerprint(current) == sidecar.fingerprint:
                self._write_sidecar(bucket, key, sidecar)

    def _forget(self, bucket: str, key: str) -> None:
        """Drop the sidecar of a key whose file is gone: a photo deleted by hand (``rm``)
        leaves its sidecar, which names the key, and a deleted photo must leave no trace.
        Re-checked under the write lock, so a put of the same key in between is kept."""
        with suppress(OSError, BucketNotFoundError), self._lock(bucket, key, exclusive=True):
            try:
                with self._open_object(bucket, key):
                    return
            except ObjectNotFoundError:
                self._sidecar_path(bucket, key).unlink(missing_ok=True)

    # --- reading -------------------------------------------------------------------------

    def _read_object(self, bucket: str, key: str, *, with_data: bool) -> tuple[ObjectInfo, bytes]:
        """Info (and, if asked, data) of one object, consistent with each other."""
        with _os_errors(bucket, key):
            with (
                self._lock(bucket, key, exclusive=False),
                self._open_object(bucket, key) as (file, st),
            ):
                data = file.read() if with_data else b""
                sidecar = self._read_sidecar(bucket, key, st)
                computed = sidecar is None
                if sidecar is None:
                    sidecar = _describe_file(key, st, _md5(data) if with_data else _md5_file(file))
            if computed:  # only now that the shared lock is released: caching takes it exclusively
                self._remember(bucket, key, sidecar)
        return _info(bucket, key, st, sidecar), data

    @contextmanager
    def _open_object(self, bucket: str, key: str) -> Iterator[tuple[BinaryIO, os.stat_result]]:
        """The regular file holding ``key`` and its stat; ObjectNotFoundError if there is none.

        No symlink inside the bucket is followed, so a link cannot expose files outside it.
        """
        *folders, name = key.split("/")
        opened = None
        with _ignore_absent(), self._folders(bucket, folders, create=False) as chain:
            opened = _open_regular(chain[-1], name)
        if opened is None:
            raise object_not_found(bucket, key)
        file, st = opened
        with file:
            yield file, st

    def _read_sidecar(self, bucket: str, key: str, st: os.stat_result) -> _Sidecar | None:
        """The sidecar for ``key`` if it describes exactly the file ``st``, else None."""
        try:
            raw = self._sidecar_path(bucket, key).read_bytes()
        except FileNotFoundError:
            return None
        sidecar = _Sidecar.from_json(raw, key)
        if sidecar is None or sidecar.fingerprint != _fingerprint(st):
            return None
        return sidecar

    def _list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Walk only the folder the prefix names, in key order, yielding its regular files."""
        folder, _, _ = prefix.rpartition("/")
        folders = folder.split("/") if folder else []
        with _os_errors(bucket), ExitStack() as stack:
            chain = None
            with _ignore_absent():
                chain = stack.enter_context(self._folders(bucket, folders, create=False))
            if chain is not None:
                yield from self._walk(bucket, chain[-1], folder, prefix)

    def _walk(self, bucket: str, dir_fd: int, folder: str, prefix: str) -> Iterator[ObjectInfo]:
        for name, is_dir in _sorted_entries(dir_fd):
            key = f"{folder}/{name}" if folder else name
            if is_dir and f"{key}/".startswith(prefix):
                sub = _try_open(dir_fd, name, _DIR_FLAGS)
                if sub is not None:  # else it vanished or was replaced since it was listed
                    try:
                        yield from self._walk(bucket, sub, key, prefix)
                    finally:
                        os.close(sub)
            elif not is_dir and key.startswith(prefix):
                info = self._list_entry(bucket, dir_fd, name, key)
                if info is not None:
                    yield info

    def _list_entry(self, bucket: str, dir_fd: int, name: str, key: str) -> ObjectInfo | None:
        """Listing info for one file, or None if it is not an object (any more)."""
        if not is_valid_key(key):
            logger.debug("not listing %s in bucket %s: not a valid key", shown(key), bucket)
            return None
        opened = _open_regular(dir_fd, name)
        if opened is None:
            return None
        file, st = opened
        with file:
            sidecar = self._read_sidecar(bucket, key, st)
            if sidecar is None:
                sidecar = _describe_file(key, st, _md5_file(file))
                self._remember(bucket, key, sidecar)
        return dataclasses.replace(_info(bucket, key, st, sidecar), content_type="", metadata=None)

    # --- paths and locks -----------------------------------------------------------------

    @contextmanager
    def _folders(self, bucket: str, folders: list[str], *, create: bool) -> Iterator[list[int]]:
        """Open the bucket and each folder below it, never following a symlink.

        Yields the descriptors, bucket first; the last is the folder holding the key. The
        bucket folder itself may be a symlink: where the data lives is the user's choice.
        Raises BucketNotFoundError, or OSError for a folder that is missing or not a folder.
        """
        with ExitStack() as stack:
            chain = [self._open_bucket(bucket)]
            stack.callback(os.close, chain[0])
            for name in folders:
                chain.append(_open_folder(chain[-1], name, create=create))
                stack.callback(os.close, chain[-1])
            yield chain

    def _open_bucket(self, bucket: str) -> int:
        try:
            return os.open(self._root / bucket, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise bucket_not_found(bucket) from None

    def _sidecar_path(self, bucket: str, key: str) -> Path:
        digest = _digest(bucket, key)
        return self._root / _META_DIR / bucket / digest[:2] / f"{digest}.json"

    @contextmanager
    def _lock(self, bucket: str, key: str, *, exclusive: bool) -> Iterator[None]:
        """Hold the flock stripe of ``bucket/key``: exclusive to write, shared to read.

        Readers lock too, because a put writes the new sidecar just before renaming the new
        data into place; an unlocked reader in between would see old data with a sidecar that
        does not match it, and report the object without its metadata. On a read-only store
        nobody can write, so readers go on unlocked when the lock file cannot be created.
        """
        if not (self._root / bucket).is_dir():  # fail before creating .meta in a wrong root
            raise bucket_not_found(bucket)
        path = self._root / _META_DIR / _LOCKS_DIR / f"{_digest(bucket, key)[:2]}.lock"
        try:
            fd = _open_creating_parents(path, _LOCK_FLAGS)
        except OSError as exc:
            if exclusive or exc.errno not in _READ_ONLY_ERRNOS:
                raise
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def _open_folder(parent: int, name: str, *, create: bool) -> int:
    """Open folder ``name`` inside ``parent`` (creating it if asked) without following links."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    with suppress(FileExistsError):
        os.mkdir(name, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _open_creating_parents(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o666)


def _try_open(dir_fd: int, name: str, flags: int) -> int | None:
    """``os.open`` relative to ``dir_fd``, or None when nothing (but a symlink) is there."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _ABSENT_ERRNOS:
            return None
        raise


def _open_regular(dir_fd: int, name: str) -> tuple[BinaryIO, os.stat_result] | None:
    """Open ``name`` if it is a regular file: not a symlink, folder, FIFO or device."""
    fd = _try_open(dir_fd, name, _READ_FLAGS)
    if fd is None:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb"), st


def _write_atomically(
    dir_fd: int,
    name: str,
    data: bytes,
    before_commit: Callable[[os.stat_result], None] | None = None,
    *,
    durable: bool = True,
) -> os.stat_result:
    """Write ``data`` to a temp file in ``dir_fd`` and rename it over ``name``; fsync the file
    and the folder when ``durable`` (a rename alone is atomic, but a power cut may lose it).

    ``before_commit`` sees the temp file's final stat before the rename; if it or anything else
    fails, the temp file is removed and ``name`` is untouched. Returns that stat, which the
    rename preserves.
    """
    temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, _CREATE_FLAGS, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            if durable:
                os.fsync(fd)
            st = os.fstat(fd)
        if before_commit is not None:
            before_commit(st)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    if durable:
        os.fsync(dir_fd)  # make the rename itself survive a power cut
    return st


def _prune_empty(chain: list[int], folders: list[str]) -> None:
    """Remove folders a delete left empty, deepest first, stopping below the bucket."""
    for depth in reversed(range(len(folders))):
        try:
            os.rmdir(folders[depth], dir_fd=chain[depth])
        except OSError:  # not empty (or already gone): the folders above are not empty either
            return


def _sorted_entries(dir_fd: int) -> list[tuple[str, bool]]:
    """(name, is_folder) of the sub-folders and regular files in ``dir_fd``, in key order.

    Sorting a folder as ``name + "/"`` puts its keys exactly where S3's UTF-8 byte order puts
    them (``a-b`` < ``a/x`` < ``a0``); Python compares str by code point, which for valid
    UTF-8 is the same as comparing the bytes. Temp files and symlinks are skipped.
    """
    entries = []
    with os.scandir(dir_fd) as scan:
        for entry in scan:
            if entry.name.startswith(RESERVED_PREFIX):
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir or entry.is_file(follow_symlinks=False):
                entries.append((entry.name, is_dir))
    entries.sort(key=lambda item: f"{item[0]}/" if item[1] else item[0])
    return entries


@contextmanager
def _ignore_absent() -> Iterator[None]:
    """``contextlib.suppress`` for "nothing is at this path" errors only."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _ABSENT_ERRNOS:
            raise


@contextmanager
def _os_errors(bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn unexpected file-system failures into StoreError, retryable where that can help."""
    try:
        yield
    except OSError as exc:
        where = f"bucket {shown(bucket)}" + ("" if key is None else f", key {shown(key)}")
        error = StoreUnavailableError if exc.errno in _TRANSIENT_ERRNOS else StoreError
        raise error(f"folder store failed on {where}: {exc.strerror or exc}") from exc


def _describe_file(key: str, st: os.stat_result, etag: str) -> _Sidecar:
    """What a file says about itself when no sidecar describes it: no user metadata."""
    guessed, _ = mimetypes.guess_type(key)
    return _Sidecar(etag, guessed or DEFAULT_CONTENT_TYPE, {}, _fingerprint(st))


def _info(bucket: str, key: str, st: os.stat_result, sidecar: _Sidecar) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=st.st_size,
        etag=sidecar.etag,
        last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
        content_type=sidecar.content_type,
        metadata=dict(sidecar.metadata),
    )


def _digest(bucket: str, key: str) -> str:
    return hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()


def _fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _md5_file(file: BinaryIO) -> str:
    return hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
