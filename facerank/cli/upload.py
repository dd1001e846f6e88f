"""``facerank upload PATH... [--identity NAME]``: put photos into the faces bucket.

Goes through the store API, so the same command feeds the folder store of ``facerank up`` and
a MinIO bucket in a cluster; enrollment then follows from the bucket's notifications.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facerank.errors import FacerankError
from facerank.gallery import normalise_identity
from facerank.progress import progress
from facerank.settings import Settings
from facerank.storage import open_store
from facerank.storage.keys import check_key

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".webp",
        ".gif",
        ".tif",
        ".tiff",
        ".pgm",
        ".ppm",
        ".pbm",
        ".pnm",
    }
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="upload photos or identity folders into the faces bucket",
        description="Each FOLDER is an identity folder: its name is the identity (unless "
        "--identity is given) and its image files, in sub-folders too, are uploaded to "
        "faces/<identity>/<relative path>. Each FILE needs --identity.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--identity", help="identity for every photo given")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Upload:
    path: Path
    key: str


def run(args: argparse.Namespace, settings: Settings) -> int:
    uploads, problems = plan_uploads(args.paths, args.identity, settings.max_image_bytes)
    store = open_store(settings)
    store.ensure_bucket(settings.faces_bucket)
    uploaded: set[str] = set()
    for upload in progress(uploads, total=len(uploads), unit="photo", enabled=args.progress):
        content_type = mimetypes.guess_type(upload.path.name)[0] or "application/octet-stream"
        try:
            data = upload.path.read_bytes()
            store.put(settings.faces_bucket, upload.key, data, content_type=content_type)
        except (OSError, FacerankError) as exc:
            problems.append(f"{upload.path}: {exc}")
        else:
            uploaded.add(upload.key)
    for problem in problems:
        print(f"facerank upload: {problem}", file=sys.stderr)
    identities = {key.split("/", 1)[0] for key in uploaded}
    print(
        f"uploaded {len(uploaded)} photo(s) of {len(identities)} identities "
        f"to {store.description}/{settings.faces_bucket}"
    )
    return 1 if problems else 0


def plan_uploads(
    paths: list[Path], identity: str | None, max_bytes: int
) -> tuple[list[Upload], list[str]]:
    """Decide every key before the first byte is sent, so a bad name stops nothing half-way."""
    uploads: list[Upload] = []
    problems: list[str] = []
    for path in paths:
        try:
            uploads.extend(_uploads_for(path, identity, max_bytes))
        except (FacerankError, OSError) as exc:
            problems.append(f"{path}: {exc}")
    return uploads, problems


def _uploads_for(path: Path, identity: str | None, max_bytes: int) -> Iterator[Upload]:
    if path.is_dir():
        name = normalise_identity(identity or path.resolve().name)
        files = sorted(p for p in path.rglob("*") if _is_photo(p, path))
        for file in files:
            yield _upload(file, f"{name}/{file.relative_to(path).as_posix()}", max_bytes)
    elif path.is_file():
        if identity is None:
            raise FacerankError("a single file needs --identity (or upload its identity folder)")
        yield _upload(path, f"{normalise_identity(identity)}/{path.name}", max_bytes)
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")


def _is_photo(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return path.is_file() and not hidden and path.suffix.lower() in IMAGE_SUFFIXES


def _upload(path: Path, key: str, max_bytes: int) -> Upload:
    size = path.stat().st_size
    if size > max_bytes:
        raise FacerankError(f"{path} is {size} bytes, more than the limit of {max_bytes}")
    return Upload(path, check_key(key))
