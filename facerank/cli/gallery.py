"""``facerank gallery ls|rm|mv|reindex``: see who is enrolled, remove a person completely,
rename or merge one, and rebuild the gallery index from the records."""

from __future__ import annotations

import argparse
import sys

from facerank.cli.output import emit_json
from facerank.gallery import Gallery, normalise_identity
from facerank.identities import move_identity, photos_of
from facerank.registry import ModelRegistry
from facerank.settings import Settings
from facerank.storage import open_store


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gallery", help="list or remove enrolled identities")
    commands = parser.add_subparsers(title="gallery commands", required=True, metavar="COMMAND")
    ls = commands.add_parser("ls", help="identities with their face counts and the model version")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_ls)
    rm = commands.add_parser(
        "rm",
        help="remove an identity: its photos in the faces bucket and its gallery entries",
        description="Deletes the identity's photos from the faces bucket (so no notification "
        "or reconcile can enroll them again) and every gallery entry of the identity.",
    )
    rm.add_argument("identity")
    rm.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(handler=run_rm)
    reindex = commands.add_parser(
        "reindex",
        help="bring every model version's index in line with the records",
        description="Adds the faces records list but the index lacks, drops those no record "
        "lists (what a crash between a record write and its index write leaves), then "
        "merges small segments. With --rebuild the index is first dropped and built anew.",
    )
    reindex.add_argument("--rebuild", action="store_true", help="drop the index first")
    reindex.add_argument("--json", action="store_true")
    reindex.set_defaults(handler=run_reindex)
    mv = commands.add_parser(
        "mv",
        help="rename an identity, or merge it into another, by moving its photos",
        description="Moves the photos of OLD to NEW in the faces bucket; the events of those "
        "moves enroll them as NEW and remove OLD from the gallery (with `facerank up` or the "
        "cluster running, or at their next reconcile).",
    )
    mv.add_argument("old", metavar="OLD")
    mv.add_argument("new", metavar="NEW")
    mv.set_defaults(handler=run_mv)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    gallery = Gallery(store, settings.gallery_bucket)
    gallery.ensure()
    counts = gallery.identities()
    listing = {
        "model_version": ModelRegistry(store, settings.models_bucket).describe_active(),
        "identities": [{"identity": name, "faces": counts[name]} for name in sorted(counts)],
    }
    if args.json:
        emit_json(listing)
        return 0
    print(f"model version: {listing['model_version']}")
    print(f"{'identity':<40} {'faces':>6}")
    for entry in listing["identities"]:
        print(f"{entry['identity']:<40} {entry['faces']:>6}")
    print(f"{len(counts)} identities, {sum(counts.values())} faces")
    return 0


def run_rm(args: argparse.Namespace, settings: Settings) -> int:
    identity = normalise_identity(args.identity)
    store = open_store(settings)
    gallery = Gallery(store, settings.gallery_bucket)
    photos = photos_of(store, settings.faces_bucket, identity)
    if not args.yes and not confirm(
        f"remove {identity!r}: {len(photos)} photo(s) and all their faces?"
    ):
        print("nothing removed", file=sys.stderr)
        return 1
    for key in photos:
        store.delete(settings.faces_bucket, key)
    records = gallery.remove_identity(identity)
    faces = sum(len(r.faces) for r in records)
    print(f"removed {identity!r}: {len(photos)} photo(s), {faces} enrolled face(s)")
    return 0


def run_reindex(args: argparse.Namespace, settings: Settings) -> int:
    gallery = Gallery(open_store(settings), settings.gallery_bucket)
    gallery.ensure()
    if args.rebuild:
        for version in gallery.index_versions():
            gallery.index(version).clear()
    changes = gallery.repair_indexes()
    report = {
        version: {
            "added": c.added,
            "removed": c.removed,
            "faces": gallery.index(version).read()[0].rows,
        }
        for version, c in changes.items()
    }
    if args.json:
        emit_json({"versions": report})
        return 0
    for version, entry in report.items():
        print(
            f"{version}: {entry['faces']} face(s) indexed, {entry['added']} added, "
            f"{entry['removed']} removed"
        )
    if not report:
        print("the gallery has no records and no index")
    return 0


def run_mv(args: argparse.Namespace, settings: Settings) -> int:
    moved = move_identity(open_store(settings), settings.faces_bucket, args.old, args.new)
    old, new = normalise_identity(args.old), normalise_identity(args.new)
    print(f"moved {len(moved)} photo(s) of {old!r} to {new!r}; events update the gallery")
    return 0


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"facerank gallery rm: {question} Pass --yes to confirm.", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
