"""The folder watcher on a real folder store with real inotify, posting to a real sink."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent

from facerank.events import OBJECT_CREATED, OBJECT_DELETED
from facerank.gallery import Gallery
from facerank.settings import Settings
from facerank.storage import FolderStore
from functions.source.emitter import Change, Emitter
from functions.source.watcher import FolderWatcher, RecentReports, nobody_writes
from tests.plugins.sink import EventSink
from tests.test_gallery import enroll

Watch = Callable[[], object]
"""Starts the watcher; tests call it once the files that must not be reported are in place."""

QUIET_S = 0.3
"""How long to listen for events that must not come: inotify delivers in milliseconds."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path)


@pytest.fixture
def store(settings: Settings) -> FolderStore:
    store = FolderStore(settings.buckets_dir)
    for bucket in ("faces", "gallery"):
        store.ensure_bucket(bucket)
    return store


@pytest.fixture
def gallery(store: FolderStore) -> Gallery:
    return Gallery(store, "gallery")


@pytest.fixture
def faces(store: FolderStore) -> Path:
    """The faces bucket folder, with identity folders ``alice`` and ``bob`` in it."""
    folder = store.root / "faces"
    for identity in ("alice", "bob"):
        (folder / identity).mkdir()
    return folder


@pytest.fixture
def watch(
    settings: Settings, store: FolderStore, gallery: Gallery, event_sink: EventSink
) -> Iterator[Watch]:
    """Start the watcher (after the test set up what should not be reported)."""
    emitter = Emitter(event_sink.url, settings, attempts=2, backoff=0.01)
    with ExitStack() as stack:
        yield lambda: stack.enter_context(FolderWatcher(store, gallery, emitter))


def subjects(events: list[CloudEvent]) -> list[tuple[str, str]]:
    return [(event["type"], event["subject"]) for event in events]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_slow_write_is_reported_once_after_close(
    faces: Path, watch: Watch, event_sink: EventSink
) -> None:
    watch()
    data = os.urandom(64 * 1024)
    with (faces / "alice" / "1.jpg").open("wb") as file:
        file.write(data[:1000])
        file.flush()
        event_sink.assert_quiet(0, QUIET_S)
        file.write(data[1000:])
    [event] = event_sink.wait_for(1)
    assert subjects([event]) == [(OBJECT_CREATED, "alice/1.jpg")]
    assert event.get_data() == {
        "bucket": "faces",
        "key": "alice/1.jpg",
        "etag": md5(data),
        "size": len(data),
    }
    event_sink.assert_quiet(1, QUIET_S)


def test_move_into_the_folder_is_reported(
    faces: Path, tmp_path: Path, watch: Watch, event_sink: EventSink
) -> None:
    outside = tmp_path / "download.jpg"
    outside.write_bytes(b"a photo")
    watch()
    outside.rename(faces / "alice" / "2.jpg")
    [event] = event_sink.wait_for(1)
    assert subjects([event]) == [(OBJECT_CREATED, "alice/2.jpg")]
    assert event.get_data()["etag"] == md5(b"a photo")


def test_store_put_is_one_event(
    store: FolderStore, faces: Path, watch: Watch, event_sink: EventSink
) -> None:
    watch()
    info = store.put("faces", "alice/3.jpg", b"stored atomically", content_type="image/jpeg")
    [event] = event_sink.wait_for(1)
    assert subjects([event]) == [(OBJECT_CREATED, "alice/3.jpg")]
    assert event.get_data()["etag"] == info.etag
    event_sink.assert_quiet(1, QUIET_S)


JUNK = [".facerank-tmp-0123abcd", ".hidden.jpg", "1.jpg~", ".#1.jpg", ".1.jpg.swp", "1.jpg.part"]


def test_temp_files_dotfiles_and_folders_are_ignored(
    faces: Path, watch: Watch, event_sink: EventSink
) -> None:
    watch()
    (faces / "alice" / ".thumbnails").mkdir()
    (faces / "alice" / ".thumbnails" / "1.jpg").write_bytes(b"thumbnail")
    for name in JUNK:
        (faces / "alice" / name).write_bytes(b"junk")
        (faces / "alice" / name).unlink()
    (faces / "alice" / "real.jpg").write_bytes(b"the photo")  # events arrive in order
    assert subjects(event_sink.wait_for(1)) == [(OBJECT_CREATED, "alice/real.jpg")]
    event_sink.assert_quiet(1, QUIET_S)


def test_rename_within_the_tree_is_a_deletion_and_a_creation(
    faces: Path, watch: Watch, event_sink: EventSink
) -> None:
    (faces / "alice" / "old.jpg").write_bytes(b"photo")
    watch()
    (faces / "alice" / "old.jpg").rename(faces / "bob" / "new.jpg")
    assert subjects(event_sink.wait_for(2)) == [
        (OBJECT_DELETED, "alice/old.jpg"),
        (OBJECT_CREATED, "bob/new.jpg"),
    ]


def test_rm_is_a_deletion(faces: Path, watch: Watch, event_sink: EventSink) -> None:
    (faces / "alice" / "1.jpg").write_bytes(b"photo")
    watch()
    (faces / "alice" / "1.jpg").unlink()
    [event] = event_sink.wait_for(1)
    assert subjects([event]) == [(OBJECT_DELETED, "alice/1.jpg")]
    assert event.get_data() == {"bucket": "faces", "key": "alice/1.jpg"}


def test_rm_r_of_an_identity_is_one_deletion_per_file(
    faces: Path, watch: Watch, event_sink: EventSink
) -> None:
    names = ["1.jpg", "2.jpg", "holiday/3.jpg"]
    for name in names:
        path = faces / "bob" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode())
    watch()
    shutil.rmtree(faces / "bob")
    events = event_sink.wait_for(3)
    assert sorted(subjects(events)) == [(OBJECT_DELETED, f"bob/{name}") for name in names]
    event_sink.assert_quiet(3, QUIET_S)


def test_identity_moved_out_is_deleted_as_the_gallery_knows_it(
    faces: Path, tmp_path: Path, gallery: Gallery, watch: Watch, event_sink: EventSink
) -> None:
    for name in ("1.jpg", "2.jpg"):
        (faces / "alice" / name).write_bytes(name.encode())
        enroll(gallery, f"alice/{name}", md5(name.encode()))
    enroll(gallery, "bob/1.jpg", "e")  # another identity: stays
    watch()
    (faces / "alice").rename(tmp_path / "alice-archive")
    events = event_sink.wait_for(2)
    assert subjects(events) == [(OBJECT_DELETED, "alice/1.jpg"), (OBJECT_DELETED, "alice/2.jpg")]
    event_sink.assert_quiet(2, QUIET_S)


def test_identity_moved_in_is_created_file_by_file(
    faces: Path, tmp_path: Path, watch: Watch, event_sink: EventSink
) -> None:
    incoming = tmp_path / "carol"
    (incoming / "trip").mkdir(parents=True)
    for name in ("1.jpg", "trip/2.jpg"):
        (incoming / name).write_bytes(name.encode())
    watch()
    incoming.rename(faces / "carol")
    events = event_sink.wait_for(2)
    assert subjects(events) == [
        (OBJECT_CREATED, "carol/1.jpg"),
        (OBJECT_CREATED, "carol/trip/2.jpg"),
    ]
    assert [e.get_data()["etag"] for e in events] == [md5(b"1.jpg"), md5(b"trip/2.jpg")]
    event_sink.assert_quiet(2, QUIET_S)


def test_new_folders_filled_at_once_are_reported_once_per_file(
    store: FolderStore, faces: Path, watch: Watch, event_sink: EventSink
) -> None:
    watch()
    expected = set()
    for n in range(10):  # the file is often closed before the new folder is watched
        (faces / f"new{n}").mkdir()
        (faces / f"new{n}" / "1.jpg").write_bytes(f"copied {n}".encode())
        store.put("faces", f"put{n}/1.jpg", f"put {n}".encode())
        expected |= {(OBJECT_CREATED, f"new{n}/1.jpg"), (OBJECT_CREATED, f"put{n}/1.jpg")}
    event_sink.wait_until(lambda events: set(subjects(events)) == expected)
    event_sink.assert_quiet(len(expected), QUIET_S)


def test_file_still_written_in_a_new_folder_waits_for_its_close(
    faces: Path, watch: Watch, event_sink: EventSink
) -> None:
    watch()
    (faces / "erin").mkdir()
    with (faces / "erin" / "1.jpg").open("wb") as file:
        file.write(b"half a photo")
        file.flush()
        (faces / "erin" / "2.jpg").write_bytes(b"done")  # reported after the folder's scan
        event_sink.wait_until(lambda events: (OBJECT_CREATED, "erin/2.jpg") in subjects(events))
        file.write(b", and the rest")
    events = event_sink.wait_for(2)
    assert subjects(events) == [(OBJECT_CREATED, "erin/2.jpg"), (OBJECT_CREATED, "erin/1.jpg")]
    assert events[1].get_data()["etag"] == md5(b"half a photo, and the rest")


def test_nobody_writes_asks_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    with path.open("wb") as file:
        file.write(b"x")
        assert not nobody_writes(path)
    assert nobody_writes(path)
    assert not nobody_writes(tmp_path / "missing.jpg")


def test_recent_reports_suppress_a_version_only_within_the_window() -> None:
    now = [100.0]
    recent = RecentReports(window=0.05, clock=lambda: now[0])
    v1, v2 = Change.created("faces", "a/1.jpg", "e1"), Change.created("faces", "a/1.jpg", "e2")
    recent.remember(v1)
    now[0] += 0.049
    assert not recent.is_new(v1)
    assert recent.is_new(v2)
    recent.remember(Change.deleted("faces", "a/1.jpg"))
    assert recent.is_new(v1)
    recent.remember(v1)
    now[0] += 0.051
    assert recent.is_new(v1)
