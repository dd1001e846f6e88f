"""Object-store tests: one contract run against both backends, then each backend's own promises.

The contract tests take the ``store`` fixture, which is the folder store in one run and the S3
store (moto over real HTTP) in the other: anything the pipeline relies on must pass on both, or
code developed on a laptop would break on Kubernetes.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from minio import Minio

from facerank.errors import (
    BucketNotFoundError,
    ConfigError,
    InvalidKeyError,
    InvalidMetadataError,
    KeyConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from facerank.settings import Settings
from facerank.storage import FolderStore, ObjectInfo, ObjectStore, S3Store, folder, open_store
from facerank.storage.keys import (
    MAX_METADATA_BYTES,
    RESERVED_PREFIX,
    check_key,
    is_valid_key,
    normalise_metadata,
)
from tests.plugins.s3_server import S3_ACCESS_KEY, S3_SECRET_KEY

BUCKET = "faces"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def keys_of(infos: Iterator[ObjectInfo]) -> list[str]:
    return [info.key for info in infos]


def utf8_sorted(keys: list[str]) -> list[str]:
    return sorted(keys, key=str.encode)


@pytest.fixture
def bucket(store: ObjectStore) -> str:
    store.ensure_bucket(BUCKET)
    return BUCKET


@pytest.fixture
def folder_bucket(folder_store: FolderStore) -> Path:
    """The on-disk folder of bucket ``faces`` in the folder store."""
    folder_store.ensure_bucket(BUCKET)
    return folder_store.root / BUCKET


# --- contract: both backends -------------------------------------------------------------


def test_both_stores_satisfy_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_round_trip_keeps_bytes_content_type_and_metadata(store: ObjectStore, bucket: str) -> None:
    data = b"\xff\xd8 not really a jpeg"
    put = store.put(
        bucket, "alice/1.jpg", data, content_type="image/jpeg", metadata={"person": "alice"}
    )

    got = store.get(bucket, "alice/1.jpg")
    stat = store.stat(bucket, "alice/1.jpg")

    assert got.data == data
    for info in (put, got.info, stat):
        assert (info.bucket, info.key, info.size) == (bucket, "alice/1.jpg", len(data))
        assert info.etag == md5(data)
        assert info.content_type == "image/jpeg"
        assert info.metadata == {"person": "alice"}


def test_last_modified_is_aware_utc_and_recent(store: ObjectStore, bucket: str) -> None:
    info = store.stat(bucket, store.put(bucket, "k", b"x").key)

    assert info.last_modified.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - info.last_modified) < timedelta(minutes=5)


def test_empty_object(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "empty", b"")

    got = store.get(bucket, "empty")

    assert (got.data, got.info.size, got.info.etag) == (b"", 0, md5(b""))
    assert got.info.content_type == "application/octet-stream"


def test_metadata_names_are_lowercased(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"x", metadata={"Person-ID": "Alice-1"})

    assert store.stat(bucket, "k").metadata == {"person-id": "Alice-1"}


def test_metadata_named_like_http_headers_stays_metadata(store: ObjectStore, bucket: str) -> None:
    metadata = {"content-type": "evil/type", "x-amz-acl": "public-read", "etag": "forged"}

    store.put(bucket, "k", b"x", content_type="text/plain", metadata=metadata)
    info = store.stat(bucket, "k")

    assert info.metadata == metadata
    assert (info.content_type, info.etag) == ("text/plain", md5(b"x"))


def test_metadata_at_the_size_limit_is_kept(store: ObjectStore, bucket: str) -> None:
    metadata = {"n": "x" * (MAX_METADATA_BYTES - 1)}

    store.put(bucket, "k", b"x", metadata=metadata)

    assert store.stat(bucket, "k").metadata == metadata


def test_overwrite_replaces_data_and_metadata(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"old", content_type="text/plain", metadata={"v": "1", "old": "y"})
    store.put(bucket, "k", b"newer", content_type="image/png", metadata={"v": "2"})

    got = store.get(bucket, "k")

    assert got.data == b"newer"
    assert (got.info.etag, got.info.content_type) == (md5(b"newer"), "image/png")
    assert got.info.metadata == {"v": "2"}


def test_if_match_puts_only_over_the_etag_read(store: ObjectStore, bucket: str) -> None:
    read = store.put(bucket, "k", b"v1")
    store.put(bucket, "k", b"v2", if_match=read.etag)
    with pytest.raises(PreconditionFailedError):
        store.put(bucket, "k", b"lost update", if_match=read.etag)
    assert store.get(bucket, "k").data == b"v2"


def test_if_match_on_an_absent_key_fails(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(PreconditionFailedError):
        store.put(bucket, "gone", b"x", if_match=md5(b"x"))
    assert not store.exists(bucket, "gone")


def test_if_none_match_creates_once(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailedError):
        store.put(bucket, "k", b"second", if_none_match=True)
    assert store.get(bucket, "k").data == b"first"


def test_concurrent_read_modify_write_loses_no_update(store: ObjectStore, bucket: str) -> None:
    """Eight writers each add their name to one list with If-Match and retry on conflict."""
    store.put(bucket, "list", b"")

    def append(name: str) -> None:
        while True:
            current = store.get(bucket, "list")
            try:
                store.put(
                    bucket, "list", current.data + name.encode() + b",", if_match=current.info.etag
                )
                return
            except PreconditionFailedError:
                continue

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, [f"w{i}" for i in range(8)]))

    names = store.get(bucket, "list").data.decode().rstrip(",").split(",")
    assert sorted(names) == sorted(f"w{i}" for i in range(8))


LISTED_KEYS = ["a-b", "a/b", "a/c/d", "a0", "b", "zoë/1.jpg", "é", "😀"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", LISTED_KEYS),
        ("a", ["a-b", "a/b", "a/c/d", "a0"]),
        ("a/", ["a/b", "a/c/d"]),
        ("a/c/", ["a/c/d"]),
        ("zo", ["zoë/1.jpg"]),
        ("nothing/", []),
    ],
)
def test_list_is_recursive_sorted_and_without_metadata(
    store: ObjectStore, bucket: str, prefix: str, expected: list[str]
) -> None:
    for key in reversed(LISTED_KEYS):
        store.put(bucket, key, key.encode(), content_type="text/plain", metadata={"m": "v"})

    listed = list(store.list(bucket, prefix))

    assert [info.key for info in listed] == utf8_sorted(expected) == expected
    for info in listed:
        assert (info.size, info.etag) == (len(info.key.encode()), md5(info.key.encode()))
        assert (info.metadata, info.content_type) == (None, "")


def test_list_of_an_empty_bucket(store: ObjectStore, bucket: str) -> None:
    assert list(store.list(bucket)) == []


def test_delete_removes_and_is_idempotent(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "a/b/c", b"x")

    store.delete(bucket, "a/b/c")
    store.delete(bucket, "a/b/c")

    assert not store.exists(bucket, "a/b/c")
    assert list(store.list(bucket)) == []
    with pytest.raises(ObjectNotFoundError):
        store.get(bucket, "a/b/c")


def test_exists(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "here", b"x")

    assert store.exists(bucket, "here")
    assert not store.exists(bucket, "not-here")


@pytest.mark.parametrize("operation", ["get", "stat"])
def test_missing_key_is_object_not_found(store: ObjectStore, bucket: str, operation: str) -> None:
    with pytest.raises(ObjectNotFoundError, match="'missing/key'"):
        getattr(store, operation)(bucket, "missing/key")


def keyed_operations(store: ObjectStore, key: str) -> dict[str, Callable[[], object]]:
    """Every operation on ``key`` in bucket ``faces``, ready to call."""
    return {
        "put": lambda: store.put(BUCKET, key, b"x"),
        "get": lambda: store.get(BUCKET, key),
        "stat": lambda: store.stat(BUCKET, key),
        "exists": lambda: store.exists(BUCKET, key),
        "delete": lambda: store.delete(BUCKET, key),
    }


def bucket_operations(store: ObjectStore) -> dict[str, Callable[[], object]]:
    """Every operation on bucket ``faces``, ready to call."""
    return {**keyed_operations(store, "k"), "list": lambda: list(store.list(BUCKET))}


@pytest.mark.parametrize("operation", ["put", "get", "stat", "exists", "delete", "list"])
def test_missing_bucket_is_bucket_not_found(store: ObjectStore, operation: str) -> None:
    with pytest.raises(BucketNotFoundError, match="'faces'"):
        bucket_operations(store)[operation]()


def test_ensure_bucket_is_idempotent(store: ObjectStore) -> None:
    store.ensure_bucket(BUCKET)
    store.put(BUCKET, "k", b"x")
    store.ensure_bucket(BUCKET)

    assert store.get(BUCKET, "k").data == b"x"


def test_binary_data_with_every_byte_value(store: ObjectStore, bucket: str) -> None:
    data = bytes(range(256)) * 4

    store.put(bucket, "all-bytes.bin", data)

    assert store.get(bucket, "all-bytes.bin").data == data


def test_large_object_is_one_part_with_an_md5_etag(store: ObjectStore, bucket: str) -> None:
    data = os.urandom(6 * 1024 * 1024 + 1)  # above minio's 5 MiB multipart threshold

    put = store.put(bucket, "big.bin", data)
    got = store.get(bucket, "big.bin")

    assert got.data == data
    assert put.etag == got.info.etag == store.stat(bucket, "big.bin").etag == md5(data)


UNICODE_KEYS = [
    "faces/zoë/1.jpg",
    "faces/zoe\u0308/nfd.jpg",
    "写真/猫.png",
    "emoji/😀.jpg",
    "url/a+b c%20d?e#f&g=h;i~j.jpg",
    " leading space/x",
    "dots/a..b/.hidden",
]


def test_unicode_keys_round_trip_and_list(store: ObjectStore, bucket: str) -> None:
    for key in UNICODE_KEYS:
        store.put(bucket, key, key.encode())

    assert keys_of(store.list(bucket)) == utf8_sorted(UNICODE_KEYS)
    for key in UNICODE_KEYS:
        assert store.get(bucket, key).data == key.encode()


INVALID_KEYS = {
    "parent": "../x",
    "parent-inside": "a/../x",
    "absolute": "/abs",
    "double-slash": "a//b",
    "trailing-slash": "a/",
    "dot": "a/./b",
    "backslash": "a\\b",
    "nul": "a\x00b",
    "escape": "a\x1bb",
    "rtl-override": "photo\u202egpj.exe",
    "line-separator": "a\u2028b",
    "lone-surrogate": "a\ud800b",
    "1kb-name": "x" * 1025,
    "1kb-utf8-bytes": "é" * 513,
    "long-segment": "x" * 256,
    "temp-name": ".facerank-tmp-x",
    "temp-folder": "a/.facerank-y/b",
    "empty": "",
    "blank": "   ",
}


@pytest.mark.parametrize("key", INVALID_KEYS.values(), ids=INVALID_KEYS.keys())
def test_invalid_keys_are_rejected_before_any_io(store: ObjectStore, key: str) -> None:
    # The bucket does not exist: any I/O would raise BucketNotFoundError instead.
    for operation in keyed_operations(store, key).values():
        with pytest.raises(InvalidKeyError) as raised:
            operation()
        assert repr(key)[:10] in str(raised.value)
        assert len(str(raised.value)) < 300


@pytest.mark.parametrize(
    "bucket_name",
    ["ab", "Faces", "-faces", "faces-", "fa..ces", "fa.-ces", "192.168.1.1", ".meta", "fa_ces",
     "x" * 64, "xn--faces", "faces-s3alias", "fa/ces", ""],
)  # fmt: skip
def test_invalid_bucket_names_are_rejected(store: ObjectStore, bucket_name: str) -> None:
    with pytest.raises(InvalidKeyError, match="bucket"):
        store.ensure_bucket(bucket_name)
    with pytest.raises(InvalidKeyError):
        store.get(bucket_name, "k")


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "../", "a/./", "a\\", "\x00"])
def test_invalid_prefixes_are_rejected_when_listing_is_requested(
    store: ObjectStore, prefix: str
) -> None:
    with pytest.raises(InvalidKeyError, match="prefix"):
        store.list(BUCKET, prefix)  # not even iterated: checked at the call


INVALID_METADATA = {
    "underscore-name": {"a_b": "x"},
    "dotted-name": {"a.b": "x"},
    "non-ascii-name": {"é": "x"},
    "empty-name": {"": "x"},
    "non-ascii-value": {"a": "é"},
    "newline-value": {"a": "x\r\nx-amz-acl: public-read"},
    "nul-value": {"a": "\x00"},
    "leading-space": {"a": " x"},
    "trailing-space": {"a": "x "},
    "non-str-value": {"a": 1},
    "same-name-twice": {"Name": "1", "name": "2"},
    "too-large": {"a": "x" * MAX_METADATA_BYTES},
}


@pytest.mark.parametrize("metadata", INVALID_METADATA.values(), ids=INVALID_METADATA.keys())
def test_invalid_metadata_is_rejected(
    store: ObjectStore, bucket: str, metadata: dict[str, str]
) -> None:
    with pytest.raises(InvalidMetadataError):
        store.put(bucket, "k", b"x", metadata=metadata)
    assert not store.exists(bucket, "k")


@pytest.mark.parametrize("content_type", ["", "text/plain\r\nx: y", "tëxt/plain", " text/plain"])
def test_invalid_content_type_is_rejected(
    store: ObjectStore, bucket: str, content_type: str
) -> None:
    with pytest.raises(InvalidMetadataError, match="content type"):
        store.put(bucket, "k", b"x", content_type=content_type)


segments = st.text(min_size=1, max_size=12)
valid_keys = st.lists(segments, min_size=1, max_size=4).map("/".join).filter(is_valid_key)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=valid_keys)
def test_every_valid_key_round_trips(store: ObjectStore, bucket: str, key: str) -> None:
    store.put(bucket, key, key.encode(), metadata={"k": "v"})
    try:
        assert store.get(bucket, key).data == key.encode()
        assert keys_of(store.list(bucket, key)) == [key]
    finally:
        store.delete(bucket, key)  # keys of later examples may need this one's folders


# --- key and metadata rules, without a store ---------------------------------------------

tricky_chars = st.sampled_from(["a", "é", ".", "/", "\\", "\x00", "\x1b", " ", "\u202e", "-"])


@given(key=st.text(tricky_chars, max_size=30) | st.text(max_size=60))
def test_key_check_raises_only_invalid_key_and_accepted_keys_stay_in_the_bucket(key: str) -> None:
    try:
        check_key(key)
    except InvalidKeyError:
        return
    bucket_dir = "/data/buckets/faces"
    path = f"{bucket_dir}/{key}"
    assert os.path.normpath(path) == path  # no '.', '..' or '//' for the OS to resolve
    assert PurePosixPath(path).parent.is_relative_to(bucket_dir)
    assert not any(part.startswith(RESERVED_PREFIX) for part in key.split("/"))


@given(metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers()))
def test_metadata_check_raises_only_invalid_metadata(metadata: dict[str, str]) -> None:
    try:
        clean = normalise_metadata(metadata)
    except InvalidMetadataError:
        return
    assert all(name == name.lower() and name.isascii() for name in clean)


# --- folder store --------------------------------------------------------------------------


def test_file_dropped_by_hand_is_an_object(folder_store: FolderStore, folder_bucket: Path) -> None:
    path = folder_bucket / "alice" / "me.jpg"
    path.parent.mkdir()
    path.write_bytes(b"photo bytes")

    (listed,) = folder_store.list(BUCKET)
    info = folder_store.stat(BUCKET, "alice/me.jpg")

    assert (listed.key, listed.etag, listed.size) == ("alice/me.jpg", md5(b"photo bytes"), 11)
    assert (info.etag, info.content_type, info.metadata) == (md5(b"photo bytes"), "image/jpeg", {})
    assert folder_store.get(BUCKET, "alice/me.jpg").data == b"photo bytes"


def test_description_names_the_root(folder_store: FolderStore) -> None:
    assert folder_store.description == f"folder:{folder_store.root}"


def test_no_temp_files_remain(folder_store: FolderStore, folder_bucket: Path) -> None:
    for n in range(5):
        folder_store.put(BUCKET, f"a/{n}", b"x" * n, metadata={"n": str(n)})
        folder_store.put(BUCKET, f"a/{n}", b"y" * n)
    folder_store.delete(BUCKET, "a/0")

    leftovers = [p for p in folder_store.root.rglob("*") if p.name.startswith(RESERVED_PREFIX)]
    assert leftovers == []


def test_delete_prunes_empty_folders_but_keeps_the_bucket(
    folder_store: FolderStore, folder_bucket: Path
) -> None:
    folder_store.put(BUCKET, "p/q/r", b"x")
    folder_store.put(BUCKET, "p/s", b"x")

    folder_store.delete(BUCKET, "p/q/r")
    assert sorted(os.listdir(folder_bucket / "p")) == ["s"]
    folder_store.delete(BUCKET, "p/s")

    assert folder_bucket.is_dir()
    assert os.listdir(folder_bucket) == []


@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("a/b", "a")])
def test_a_key_cannot_be_both_file_and_folder(
    folder_store: FolderStore, folder_bucket: Path, first: str, second: str
) -> None:
    folder_store.put(BUCKET, first, b"first")

    with pytest.raises(KeyConflictError, match=repr(second)):
        folder_store.put(BUCKET, second, b"second")
    assert folder_store.get(BUCKET, first).data == b"first"


def test_symlinks_cannot_escape_the_bucket(
    folder_store: FolderStore, folder_bucket: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not serve")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_bytes(b"do not serve either")
    (folder_bucket / "leak.txt").symlink_to(secret)
    (folder_bucket / "passwd").symlink_to("/etc/passwd")
    (folder_bucket / "dir").symlink_to(outside)

    for key in ("leak.txt", "passwd", "dir/x"):
        with pytest.raises(ObjectNotFoundError):
            folder_store.get(BUCKET, key)
        assert not folder_store.exists(BUCKET, key)
    with pytest.raises(KeyConflictError):
        folder_store.put(BUCKET, "dir/y", b"planted")
    folder_store.delete(BUCKET, "dir/x")

    assert list(folder_store.list(BUCKET)) == []
    assert sorted(os.listdir(outside)) == ["x"]
    assert secret.read_bytes() == b"do not serve"


def test_fifo_is_not_an_object_and_does_not_block(
    folder_store: FolderStore, folder_bucket: Path
) -> None:
    os.mkfifo(folder_bucket / "pipe")

    with pytest.raises(ObjectNotFoundError):
        folder_store.get(BUCKET, "pipe")
    assert list(folder_store.list(BUCKET)) == []


def test_files_whose_names_are_not_valid_keys_are_not_listed(
    folder_store: FolderStore, folder_bucket: Path
) -> None:
    for name in ("back\\slash.jpg", "escape\x1b.jpg", "ok.jpg"):
        (folder_bucket / name).write_bytes(b"x")

    assert keys_of(folder_store.list(BUCKET)) == ["ok.jpg"]


def test_file_dropped_by_hand_is_hashed_only_once(
    folder_store: FolderStore, folder_bucket: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder_bucket / "me.jpg").write_bytes(b"photo bytes")
    list(folder_store.list(BUCKET))

    def no_more_hashing(file: object) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(folder, "_md5_file", no_more_hashing)
    (listed,) = folder_store.list(BUCKET)
    assert listed.etag == folder_store.stat(BUCKET, "me.jpg").etag == md5(b"photo bytes")


def test_stale_sidecar_is_ignored(folder_store: FolderStore, folder_bucket: Path) -> None:
    folder_store.put(BUCKET, "a.jpg", b"original", content_type="image/png", metadata={"v": "1"})
    folder_store.put(BUCKET, "b.jpg", b"original", content_type="image/png", metadata={"v": "1"})
    (folder_bucket / "a.jpg").write_bytes(b"edited in place, longer")  # same inode
    replacement = folder_bucket / "replacement"
    replacement.write_bytes(b"renamed!")  # same size, new inode
    replacement.replace(folder_bucket / "b.jpg")

    for key, data in (("a.jpg", b"edited in place, longer"), ("b.jpg", b"renamed!")):
        info = folder_store.stat(BUCKET, key)
        assert (info.etag, info.content_type, info.metadata) == (md5(data), "image/jpeg", {})
        assert folder_store.get(BUCKET, key).data == data


def test_leftover_temp_files_are_not_objects(
    folder_store: FolderStore, folder_bucket: Path
) -> None:
    folder_store.put(BUCKET, "sub/real", b"x")
    (folder_bucket / ".facerank-tmp-0123").write_bytes(b"torn")
    (folder_bucket / "sub" / ".facerank-tmp-4567").write_bytes(b"torn")

    assert keys_of(folder_store.list(BUCKET)) == ["sub/real"]
    with pytest.raises(InvalidKeyError):
        folder_store.get(BUCKET, ".facerank-tmp-0123")


def test_threads_putting_distinct_keys_lose_nothing(
    folder_store: FolderStore, folder_bucket: Path
) -> None:
    def put_many(writer: int) -> None:
        for n in range(20):
            folder_store.put(BUCKET, f"w{writer}/{n}", f"{writer}:{n}".encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put_many, range(8)))

    infos = list(folder_store.list(BUCKET))
    assert len(infos) == 160
    for info in infos:
        writer, n = info.key[1:].split("/")
        assert folder_store.get(BUCKET, info.key).data == f"{writer}:{n}".encode()


def payload(writer: int, n: int) -> tuple[bytes, dict[str, str]]:
    """Data and metadata that name each other, so a reader can check they belong together."""
    return f"writer {writer} put {n} ".encode() * (writer + 1), {"writer": str(writer), "n": str(n)}


def assert_consistent(store: ObjectStore, key: str) -> None:
    got = store.get(BUCKET, key)
    assert got.info.metadata is not None
    data, metadata = payload(int(got.info.metadata["writer"]), int(got.info.metadata["n"]))
    assert (got.data, got.info.metadata, got.info.etag) == (data, metadata, md5(data))


def read_until(done: Callable[[], bool], store: ObjectStore, key: str) -> int:
    """Check the object's consistency over and over while writers run; returns reads done."""
    reads = 0
    while not done():
        assert_consistent(store, key)
        reads += 1
    return reads


def test_threads_putting_the_same_key_leave_data_and_metadata_consistent(
    folder_store: FolderStore, folder_bucket: Path
) -> None:
    def put_many(writer: int) -> None:
        for n in range(15):
            data, metadata = payload(writer, n)
            folder_store.put(BUCKET, "same", data, metadata=metadata)

    data, metadata = payload(0, 0)
    folder_store.put(BUCKET, "same", data, metadata=metadata)
    with ThreadPoolExecutor(10) as pool:
        writers = [pool.submit(put_many, writer) for writer in range(8)]
        readers = [
            pool.submit(read_until, lambda: all(w.done() for w in writers), folder_store, "same")
            for _ in range(2)
        ]
        for future in writers + readers:
            future.result()
    assert_consistent(folder_store, "same")


def put_from_another_process(root: str, writer: int, count: int) -> None:
    store = FolderStore(root)
    for n in range(count):
        data, metadata = payload(writer, n)
        store.put(BUCKET, "same", data, metadata=metadata)


def test_processes_putting_the_same_key_leave_data_and_metadata_consistent(
    folder_store: FolderStore, folder_bucket: Path
) -> None:
    data, metadata = payload(0, 0)
    folder_store.put(BUCKET, "same", data, metadata=metadata)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=spawn) as pool:
        writers = [
            pool.submit(put_from_another_process, str(folder_store.root), writer, 30)
            for writer in range(3)
        ]
        reads = read_until(lambda: all(w.done() for w in writers), folder_store, "same")
        for future in writers:
            future.result()
    assert reads > 0
    assert_consistent(folder_store, "same")


CRASH_EXIT_CODE = 3


def crash_during_put(root: str, crash_at_rename: int) -> None:
    """Put v1, then die like a killed process at the n-th rename of putting v2."""
    store = FolderStore(root)
    store.put(BUCKET, "photo.jpg", b"v1", content_type="image/png", metadata={"v": "1"})
    renames = 0
    real_replace = os.replace

    def replace_or_die(*args: object, **kwargs: object) -> None:
        nonlocal renames
        renames += 1
        if renames == crash_at_rename:
            os._exit(CRASH_EXIT_CODE)
        real_replace(*args, **kwargs)

    os.replace = replace_or_die
    store.put(BUCKET, "photo.jpg", b"v2-longer", content_type="image/png", metadata={"v": "2"})


@pytest.mark.parametrize(
    ("crash_at_rename", "expected_metadata", "expected_type"),
    [
        (1, {"v": "1"}, "image/png"),  # before the sidecar landed: v1 intact
        (2, {}, "image/jpeg"),  # sidecar describes the lost v2 temp file: stale, ignored
    ],
)
def test_crash_mid_put_leaves_the_old_object_and_no_visible_debris(
    folder_store: FolderStore,
    folder_bucket: Path,
    crash_at_rename: int,
    expected_metadata: dict[str, str],
    expected_type: str,
) -> None:
    child = multiprocessing.get_context("spawn").Process(
        target=crash_during_put, args=(str(folder_store.root), crash_at_rename)
    )
    child.start()
    child.join(timeout=30)
    assert child.exitcode == CRASH_EXIT_CODE

    got = folder_store.get(BUCKET, "photo.jpg")
    assert (got.data, got.info.etag) == (b"v1", md5(b"v1"))
    assert (got.info.metadata, got.info.content_type) == (expected_metadata, expected_type)
    assert keys_of(folder_store.list(BUCKET)) == ["photo.jpg"]
    assert any(p.name.startswith(RESERVED_PREFIX) for p in folder_store.root.rglob("*"))

    folder_store.put(BUCKET, "photo.jpg", b"v3", metadata={"v": "3"})
    assert folder_store.stat(BUCKET, "photo.jpg").metadata == {"v": "3"}


# --- S3 store ------------------------------------------------------------------------------


def test_unreachable_endpoint_fails_fast_and_retryable(free_port: Callable[[], int]) -> None:
    store = S3Store(f"http://127.0.0.1:{free_port()}", S3_ACCESS_KEY, S3_SECRET_KEY)
    started = time.monotonic()

    for operation in bucket_operations(store).values():
        with pytest.raises(StoreUnavailableError) as raised:
            operation()
        assert raised.value.retryable
        assert S3_SECRET_KEY not in str(raised.value)

    assert time.monotonic() - started < 15


class _FixedResponseHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with the class's status and body, like a broken S3."""

    status = 500
    content_type = "application/xml"
    body = b""

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        """Silence per-request logging."""


def s3_error_body(code: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()


@pytest.fixture
def broken_s3(request: pytest.FixtureRequest) -> Iterator[str]:
    """Endpoint of a server answering every request with ``request.param`` (status, type, body)."""
    status, content_type, body = request.param
    handler = type("Handler", (_FixedResponseHandler,), {
        "status": status, "content_type": content_type, "body": body
    })  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("broken_s3", "error", "retryable"),
    [
        ((503, "text/html", b"<h1>proxy says no</h1>"), StoreUnavailableError, True),
        ((500, "application/xml", s3_error_body("InternalError")), StoreUnavailableError, True),
        ((403, "application/xml", s3_error_body("AccessDenied")), StoreError, False),
    ],
    indirect=["broken_s3"],
    ids=["503-html", "500-internal-error", "403-access-denied"],
)
def test_server_errors_map_to_store_errors(
    broken_s3: str, error: type[StoreError], retryable: bool
) -> None:
    store = S3Store(broken_s3, S3_ACCESS_KEY, S3_SECRET_KEY)

    with pytest.raises(error) as raised:
        store.get(BUCKET, "k")

    assert raised.value.retryable is retryable


def test_description_and_repr_carry_no_credentials() -> None:
    store = S3Store("https://minio.example:9000", "AKIAFACERANK", "very-secret-value")

    assert store.description == "s3:https://minio.example:9000"
    for text in (store.description, repr(store)):
        assert "AKIAFACERANK" not in text
        assert "very-secret-value" not in text


@pytest.mark.parametrize(
    "endpoint", ["http://user:hunter2@minio:9000", "ftp://minio", "http://minio:9000/path", "minio"]
)
def test_bad_endpoints_are_config_errors_that_do_not_echo_them(endpoint: str) -> None:
    with pytest.raises(ConfigError) as raised:
        S3Store(endpoint, S3_ACCESS_KEY, S3_SECRET_KEY)
    assert "hunter2" not in str(raised.value)


def test_half_set_credentials_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="together"):
        S3Store("http://127.0.0.1:9000", S3_ACCESS_KEY, "")


@pytest.fixture
def other_s3_client(s3_store: S3Store, s3_server: str) -> Minio:
    """A plain minio client on bucket ``faces``, standing in for other tools writing to S3."""
    s3_store.ensure_bucket(BUCKET)
    return Minio(s3_server.removeprefix("http://"), S3_ACCESS_KEY, S3_SECRET_KEY, secure=False)


def test_listing_skips_keys_other_tools_wrote_that_break_the_rules(
    s3_store: S3Store, other_s3_client: Minio
) -> None:
    for key in ("folder-marker/", "a//b", "ok"):
        other_s3_client.put_object(BUCKET, key, io.BytesIO(b"x"), 1)

    assert keys_of(s3_store.list(BUCKET)) == ["ok"]


def test_get_returns_stored_bytes_even_when_marked_gzip(
    s3_store: S3Store, other_s3_client: Minio
) -> None:
    data = gzip.compress(b"a gzipped csv")
    headers = {"Content-Encoding": "gzip"}
    other_s3_client.put_object(
        BUCKET, "table.csv.gz", io.BytesIO(data), len(data), metadata=headers
    )

    got = s3_store.get(BUCKET, "table.csv.gz")

    assert (got.data, got.info.etag) == (data, md5(data))


# --- factory ---------------------------------------------------------------------------------


def test_open_store_picks_the_backend_from_settings(tmp_path: Path) -> None:
    folder = open_store(Settings(data_dir=tmp_path))
    s3 = open_store(
        Settings(
            data_dir=tmp_path,
            store="s3",
            s3_endpoint="http://127.0.0.1:9000",
            s3_access_key=S3_ACCESS_KEY,
            s3_secret_key=S3_SECRET_KEY,
        )
    )

    assert isinstance(folder, FolderStore)
    assert folder.root == tmp_path / "buckets"
    assert isinstance(s3, S3Store)
    assert s3.description == "s3:http://127.0.0.1:9000"
