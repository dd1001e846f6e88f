"""``facerank eval DATASET_DIR``: accuracy and speed of embedders, side by side, on labelled faces.

Every later model choice (the default embedder, the alignment, the match threshold, whether a
retrained model is better) is argued with these numbers, so one run compares every contender
on the very same detected faces and writes everything needed to check the claim: a JSON
report, a Markdown report and a ROC plot. TensorFlow loads only if a SavedModel contender does.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import get_args

from facerank.cli.output import progress
from facerank.errors import ConfigError
from facerank.evaluation.baselines import LBPH, Scorer, default_scorers, load_scorer
from facerank.evaluation.dataset import load_dataset
from facerank.evaluation.report import report_json_text, summary_table, write_report
from facerank.evaluation.run import evaluate
from facerank.faces import AlignMode
from facerank.pipeline import (
    alignment_from_settings,
    detector_from_settings,
    image_limits,
    locator_from_settings,
)
from facerank.settings import Settings

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure embedders' accuracy and speed on a folder of identity folders",
        description="Evaluate embedders on DATASET_DIR/<identity>/<image>: face detection "
        "rate, leave-one-out rank-1 and rank-5 identification, verification accuracy over "
        "all pairs (best threshold, and the match threshold), TAR at FAR 1e-2 and 1e-3, "
        "throughput and the hardest probes, for every embedder and alignment side by side. "
        "Writes report.json, report.md and roc.png to --out and prints the table (or the "
        f"JSON). Default embedders: lbp-v0, {LBPH} (OpenCV's LBPH recognizer) and the "
        "pretrained descriptor when it is set up.",
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR")
    parser.add_argument(
        "--embedder",
        action="append",
        dest="embedders",
        metavar="NAME",
        help=f"embedder name, model directory or '{LBPH}'; repeat to compare several",
    )
    parser.add_argument(
        "--align",
        action="append",
        dest="aligns",
        choices=get_args(AlignMode),
        help="alignment variant; repeat to compare (default: FACERANK_ALIGN)",
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default: ./eval-<dataset>-<UTC time>/)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="match threshold to report TAR/FAR at, for every model (default: "
        "FACERANK_MATCH_THRESHOLD if set, else each model's own calibrated threshold)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.threshold is not None:
        settings = settings.replace(match_threshold=args.threshold)  # validates it
    dataset = load_dataset(args.dataset)
    scorers, notes = _scorers(args.embedders, settings)
    for note in notes:
        print(f"facerank: {note}", file=sys.stderr)
    started = datetime.now(UTC)
    out = args.out or Path(f"eval-{_UNSAFE_NAME.sub('_', dataset.name)}-{started:%Y%m%dT%H%M%SZ}")
    _check_out_dir(out)

    default, locator = alignment_from_settings(settings)
    aligns = list(dict.fromkeys(args.aligns or [default]))
    if locator is None and "landmarks" in aligns:
        locator = locator_from_settings(settings.replace(align="landmarks"))
    if "landmarks" in aligns and locator is None:
        raise ConfigError("--align landmarks needs the landmark model: run facerank models fetch")
    result = evaluate(
        dataset,
        scorers,
        aligns,
        detector=detector_from_settings(settings),
        locator=locator,
        threshold=settings.match_threshold,
        limits=image_limits(settings),
        notes=notes,
        progress=partial(progress, enabled=args.progress),
    )
    try:
        files = write_report(result, out)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    sys.stdout.write(report_json_text(result) if args.json else summary_table(result))
    print(f"facerank: report in {files.markdown}, {files.json}, {files.roc}", file=sys.stderr)
    return 0


def _scorers(names: list[str] | None, settings: Settings) -> tuple[list[Scorer], list[str]]:
    """The contenders named (each once, in order), or the defaults with notes on any left out."""
    if not names:
        return default_scorers(settings)
    return [load_scorer(name, settings) for name in dict.fromkeys(names)], []


def _check_out_dir(out: Path) -> None:
    """Fail before a long run, not after it, when the report cannot go where it should."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
