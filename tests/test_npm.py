"""Fetching npm tarballs: integrity pinning, the offline cache, and hostile archive members.

Archives are built here with tarfile, so everything but one test runs without npm or a
network; that one really packs the face-api package and is skipped, saying why, where npm or
the registry is unavailable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from facerank.npm import (
    FACE_API,
    FILE_MODE,
    PackageIntegrityError,
    PackageUnavailableError,
    UnsafeArchiveError,
    cache_path,
    extract_members,
    fetch_package,
)

SPEC = "@example/assets@1.0.0"


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def build_tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def add_special(path: Path, info: tarfile.TarInfo) -> None:
    """Append a member that is not a regular file (a link, a device) to an archive."""
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(tarfile.TarInfo("package/demo/ok.jpg"), io.BytesIO(b""))
        archive.addfile(info)


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return build_tarball(
        tmp_path / "pkg.tgz",
        {
            "package/demo/sample1.jpg": b"one",
            "package/demo/sample2.jpg": b"two",
            "package/demo/deeper/sample3.jpg": b"not matched: * does not cross /",
            "package/model/weights.bin": b"weights",
        },
    )


@pytest.fixture
def no_npm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH without npm, so any attempt to run it is visible as PackageUnavailableError."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


def test_cached_tarball_is_reused_without_npm(tarball: Path, tmp_path: Path, no_npm: None) -> None:
    integrity = sri(tarball.read_bytes())
    cache = tmp_path / "cache"
    cached = cache_path(SPEC, integrity, cache)
    cached.parent.mkdir(parents=True)
    shutil.copy(tarball, cached)
    assert fetch_package(SPEC, integrity, cache) == cached


def test_cached_tarball_with_other_content_is_not_trusted(
    tarball: Path, tmp_path: Path, no_npm: None
) -> None:
    integrity = sri(b"the real package")
    cached = cache_path(SPEC, integrity, tmp_path)
    shutil.copy(tarball, cached)
    with pytest.raises(PackageUnavailableError, match="npm command is not installed"):
        fetch_package(SPEC, integrity, tmp_path)


@pytest.mark.parametrize(
    "integrity",
    ["md5-AAAA", "sha512-not base64!", "sha512-" + base64.b64encode(b"short").decode(), ""],
)
def test_malformed_integrity_is_refused(tmp_path: Path, integrity: str) -> None:
    with pytest.raises(PackageIntegrityError):
        fetch_package(SPEC, integrity, tmp_path)


def test_npm_failure_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in npm that fails like an offline registry: the error carries npm's message."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "npm"
    fake.write_text("#!/bin/sh\necho 'npm ERR! code ENOTFOUND' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(PackageUnavailableError, match="ENOTFOUND") as caught:
        fetch_package(SPEC, sri(b"x"), tmp_path / "cache")
    assert caught.value.code == "package_unavailable"
    assert not list((tmp_path / "cache").iterdir())  # no partial download left behind


def test_wrong_integrity_from_npm_is_not_cached(
    tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in npm that 'downloads' a tarball with other content than the pinned one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "npm"
    fake.write_text(f'#!/bin/sh\n/bin/cp {tarball} "$4/pkg-1.0.0.tgz"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    cache = tmp_path / "cache"
    with pytest.raises(PackageIntegrityError):
        fetch_package(SPEC, sri(b"something else"), cache)
    assert not list(cache.iterdir())
    # With the right pin the same download is verified and moved into the cache.
    fetched = fetch_package(SPEC, sri(tarball.read_bytes()), cache)
    assert fetched.read_bytes() == tarball.read_bytes()
    assert list(cache.iterdir()) == [fetched]


def test_extract_only_matching_members(tarball: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    written = extract_members(tarball, ["package/demo/sample*.jpg"], dest)
    assert [p.relative_to(dest).as_posix() for p in written] == [
        "package/demo/sample1.jpg",
        "package/demo/sample2.jpg",
    ]
    assert written[1].read_bytes() == b"two"
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["package/demo/sample1.jpg", "package/demo/sample2.jpg"]


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("../escape.jpg", "*/*.jpg"), ("package/../../escape.jpg", "*/*/*/*.jpg")],
)
def test_dot_dot_members_are_refused(tmp_path: Path, name: str, pattern: str) -> None:
    archive = build_tarball(tmp_path / "evil.tgz", {name: b"x"})
    with pytest.raises(UnsafeArchiveError, match="unsafe path"):
        extract_members(archive, [pattern], tmp_path / "out")
    assert not (tmp_path / "escape.jpg").exists()


def test_absolute_member_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "abs.jpg"
    archive = build_tarball(tmp_path / "evil.tgz", {str(target): b"x"})
    with pytest.raises(UnsafeArchiveError, match="unsafe path"):
        extract_members(archive, [str(target)], tmp_path / "out")
    assert not target.exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_links_and_devices_are_refused(tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("package/demo/sample1.jpg")
    info.type = kind
    info.linkname = "/etc/passwd" if kind != tarfile.LNKTYPE else "package/demo/ok.jpg"
    archive = tmp_path / "evil.tgz"
    add_special(archive, info)
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        extract_members(archive, ["package/demo/sample*.jpg"], tmp_path / "out")
    assert not (tmp_path / "out" / "package" / "demo" / "sample1.jpg").exists()


def test_huge_member_is_refused_before_writing(tmp_path: Path) -> None:
    archive = build_tarball(tmp_path / "big.tgz", {"package/demo/sample1.jpg": bytes(4096)})
    with pytest.raises(UnsafeArchiveError, match="over the 1024 byte limit"):
        extract_members(archive, ["package/*/*"], tmp_path / "out", max_member_bytes=1024)
    assert not (tmp_path / "out" / "package" / "demo" / "sample1.jpg").exists()


def test_extracted_files_get_a_plain_mode(tmp_path: Path) -> None:
    archive = tmp_path / "modes.tgz"
    with tarfile.open(archive, "w:gz") as writer:
        info = tarfile.TarInfo("package/demo/sample1.jpg")
        info.size, info.mode = 3, 0o4777  # setuid, executable, world-writable
        writer.addfile(info, io.BytesIO(b"one"))
    (written,) = extract_members(archive, ["package/demo/*"], tmp_path / "out")
    assert written.read_bytes() == b"one"
    assert written.stat().st_mode & 0o7777 == FILE_MODE == 0o644


def test_extraction_works_without_tarfile_filters(
    tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python before 3.11.4 (Debian bookworm's is 3.11.2) has neither ``filter=`` nor the
    filter functions: tarfile is made to look like that one's."""
    original = tarfile.TarFile.extract

    def extract_3_11_2(
        self: tarfile.TarFile,
        member: str | tarfile.TarInfo,
        path: str = "",
        set_attrs: bool = True,
        *,
        numeric_owner: bool = False,
    ) -> None:
        original(self, member, path, set_attrs, numeric_owner=numeric_owner)

    monkeypatch.setattr(tarfile.TarFile, "extract", extract_3_11_2)
    for name in ("data_filter", "FilterError"):
        monkeypatch.delattr(tarfile, name)
    written = extract_members(tarball, ["package/*/*"], tmp_path / "out")
    assert [p.read_bytes() for p in written] == [b"one", b"two", b"weights"]


def test_not_an_archive_is_a_typed_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(UnsafeArchiveError, match="not a readable tar archive"):
        extract_members(junk, ["*"], tmp_path / "out")


@pytest.mark.slow
def test_real_face_api_package(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``npm pack`` of the pinned face-api release, then a cache hit (12.7 MB, seconds)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    cache = tmp_path_factory.mktemp("npm-cache")
    try:
        tarball = fetch_package(FACE_API.spec, FACE_API.integrity, cache)
    except PackageUnavailableError as exc:
        pytest.skip(f"the npm registry is unavailable: {exc}")
    samples = extract_members(tarball, ["package/demo/sample*.jpg"], cache / "out")
    assert sorted(p.name for p in samples) == [f"sample{n}.jpg" for n in range(1, 7)]
    assert all(p.read_bytes()[:2] == b"\xff\xd8" for p in samples)  # JPEG start of image
    assert fetch_package(FACE_API.spec, FACE_API.integrity, cache) == tarball  # cached
