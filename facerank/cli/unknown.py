"""``facerank unknown ls|name``: faces of query photos nobody matched, grouped for naming."""

from __future__ import annotations

import argparse

from facerank.cli.output import emit_json
from facerank.identities import name_group
from facerank.settings import Settings
from facerank.storage import open_store
from facerank.unknown import UnknownFaces, listing


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unknown", help="list the groups of unknown faces, or name one (enrolls its photos)"
    )
    commands = parser.add_subparsers(title="unknown commands", required=True, metavar="COMMAND")
    ls = commands.add_parser("ls", help="groups with their sizes and sample faces")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_ls)
    name = commands.add_parser(
        "name",
        help="name a group: its photos are copied into faces/<IDENTITY>/ and the group removed",
        description="Copies the photos of GROUP into faces/<IDENTITY>/named/, so they are "
        "enrolled through the normal event path, and forgets the group.",
    )
    name.add_argument("group", metavar="GROUP")
    name.add_argument("identity", metavar="IDENTITY")
    name.set_defaults(handler=run_name)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    result = listing(UnknownFaces(open_store(settings), settings.gallery_bucket))
    if args.json:
        emit_json(result)
        return 0
    print(f"model version: {result['model_version'] or '-'}")
    print(f"{'group':<8} {'faces':>6} {'photos':>7}  samples")
    for entry in result["groups"]:
        samples = ", ".join(f"{s['bucket']}/{s['key']}" for s in entry["samples"])
        print(f"{entry['group']:<8} {entry['faces']:>6} {entry['photos']:>7}  {samples}")
    print(f"{len(result['groups'])} groups, {sum(e['faces'] for e in result['groups'])} faces")
    return 0


def run_name(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    unknown = UnknownFaces(store, settings.gallery_bucket)
    written = name_group(store, settings.faces_bucket, unknown, args.group, args.identity)
    print(f"named {args.group}: {len(written)} photo(s) copied to {settings.faces_bucket}/")
    return 0
