"""Entry point of the ``facerank`` console script.

Global flags override ``FACERANK_*`` settings for this run; each sub-command lives in its own
module and registers itself through ``add_parser``. Errors facerank raises on purpose end the
run with their message and exit status 2; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from facerank import __version__
from facerank.cli import (
    detect,
    embed,
    eval,
    gallery,
    models,
    query,
    retrain,
    unknown,
    up,
    upload,
)
from facerank.errors import FacerankError
from facerank.settings import Settings

COMMANDS = (up, query, detect, embed, upload, gallery, unknown, models, eval, retrain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerank",
        description="Face similarity: detect, align and embed faces; run the pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"facerank {__version__}")
    parser.add_argument("--data-dir", type=Path, help="overrides FACERANK_DATA_DIR")
    parser.add_argument("--model", help="embedder name or model directory (FACERANK_MODEL)")
    parser.add_argument(
        "--align", choices=("landmarks", "eyes", "box"), help="overrides FACERANK_ALIGN"
    )
    parser.add_argument("--min-face-size", type=int, help="overrides FACERANK_MIN_FACE_SIZE")
    parser.add_argument("--max-faces", type=int, help="overrides FACERANK_MAX_FACES")
    parser.add_argument("--log-level", help="overrides FACERANK_LOG_LEVEL")
    subparsers = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Commands that load a model import TensorFlow: keep its C++ info logs off the terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(
            data_dir=args.data_dir,
            model=args.model,
            align=args.align,
            min_face_size=args.min_face_size,
            max_faces=args.max_faces,
            log_level=args.log_level,
        )
        logging.basicConfig(
            level=settings.log_level.upper(), stream=sys.stderr, format="facerank: %(message)s"
        )
        return int(args.handler(args, settings))
    except FacerankError as exc:
        print(f"facerank: {exc.code}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `facerank embed ... | head` closed stdout: not an error worth a traceback.
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
