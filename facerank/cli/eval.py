"""``facerank eval``: accuracy and speed of embedders, side by side, on labelled faces.

Every later model choice (the detector, the default embedder, the alignment, the match
threshold, whether a retrained model is better) is argued with these numbers, so one run
compares every contender on the very same detected faces and writes everything needed to check
the claim: a JSON report, a Markdown report and a ROC plot. Two protocols: leave-one-out over
a folder of identity folders (``facerank eval DATASET_DIR``), and LFW's pairs
(``facerank eval --pairs PAIRS.txt [--pairs-train TRAIN.txt] IMAGES_DIR``). TensorFlow loads
only if a SavedModel contender does.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar, get_args

from facerank.errors import ConfigError
from facerank.evaluation.baselines import LBPH, Scorer, default_scorers, load_scorer
from facerank.evaluation.dataset import load_dataset
from facerank.evaluation.pairs import PairsFile, read_pairs
from facerank.evaluation.pairs_report import pairs_json_text, pairs_table, write_pairs_report
from facerank.evaluation.pairs_run import evaluate_pairs
from facerank.evaluation.report import ReportFiles, report_json_text, summary_table, write_report
from facerank.evaluation.run import FacePick, evaluate
from facerank.faces import AlignMode, FaceDetector, LandmarkLocator
from facerank.pipeline import (
    alignment_from_settings,
    detector_from_settings,
    image_limits,
    locator_from_settings,
)
from facerank.progress import progress
from facerank.settings import DetectorKind, Settings

T = TypeVar("T")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure accuracy and speed on identity folders, or on LFW's pairs",
        description="Evaluate embedders on DATASET_DIR/<identity>/<image>: face detection "
        "rate, leave-one-out rank-1 and rank-5 identification, verification accuracy over "
        "all pairs (best threshold, and the match threshold), TAR at FAR 1e-2 and 1e-3, "
        "throughput and the hardest probes, for every detector, alignment and embedder side "
        "by side. With --pairs, LFW's protocol on IMAGES_DIR/<name>/<name>_<NNNN>.jpg "
        "instead: verification accuracy of the test pairs (a pair with a missed face counts "
        "as wrong) at the threshold fitted on --pairs-train (a 10-fold file: on the other "
        "folds; neither: the model's own), the accuracy on pairs with both faces found, "
        "images without a face and TAR at FAR. Writes report.json, report.md and roc.png to "
        "--out and prints the table (or the JSON). Default embedders: lbp-v0, "
        f"{LBPH} (OpenCV's LBPH recognizer) and the pretrained descriptor when it is set up.",
    )
    parser.add_argument(
        "dataset",
        type=Path,
        metavar="DATASET_DIR",
        help="identity folders; with --pairs, LFW's images folder (IMAGES_DIR)",
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        metavar="PAIRS.txt",
        help="LFW pairs file to score: a single set (pairsDevTest.txt) or 10 folds (pairs.txt)",
    )
    parser.add_argument(
        "--pairs-train",
        type=Path,
        metavar="TRAIN.txt",
        help="LFW pairs file to fit the threshold on (pairsDevTrain.txt); single sets only",
    )
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
        "--detector",
        action="append",
        dest="detectors",
        choices=get_args(DetectorKind),
        help="face detector; repeat to compare (default: FACERANK_DETECTOR)",
    )
    parser.add_argument(
        "--face",
        choices=get_args(FacePick),
        default="primary",
        help="with --pairs: which face of an image with several to compare (default: the "
        "primary one, as the product enrolls; 'largest': as it enrolls with "
        "FACERANK_ENROLL_FACES=largest; 'centre': the one nearest the image centre, where LFW "
        "puts its subject)",
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
    if args.pairs_train is not None and args.pairs is None:
        raise ConfigError("--pairs-train needs --pairs: the test pairs to score")
    if args.face != "primary" and args.pairs is None:
        raise ConfigError("--face applies to --pairs; identity folders compare the primary face")
    if args.pairs is None:
        dataset = load_dataset(args.dataset)
        name = dataset.name
    else:
        test, train = _pairs_files(args.pairs, args.pairs_train, args.dataset)
        name = args.pairs.stem
    scorers, notes = _scorers(args.embedders, settings)
    for note in notes:
        print(f"facerank: {note}", file=sys.stderr)
    out = _out_dir(args.out, name)
    aligns, locator = _alignments(args.aligns, settings)
    contenders = (scorers, aligns)
    options = {
        "detectors": _detectors(args.detectors, settings),
        "locator": locator,
        "threshold": settings.match_threshold,
        "limits": image_limits(settings),
        "notes": notes,
        "progress": partial(progress, enabled=args.progress),
    }
    if args.pairs is None:
        result = evaluate(dataset, *contenders, **options)
        files = _write(write_report, result, out)
        sys.stdout.write(report_json_text(result) if args.json else summary_table(result))
    else:
        pairs = evaluate_pairs(args.dataset, test, train, *contenders, **options, face=args.face)
        files = _write(write_pairs_report, pairs, out)
        sys.stdout.write(pairs_json_text(pairs) if args.json else pairs_table(pairs))
    print(f"facerank: report in {files.markdown}, {files.json}, {files.roc}", file=sys.stderr)
    return 0


def _pairs_files(
    test_path: Path, train_path: Path | None, images_dir: Path
) -> tuple[PairsFile, PairsFile | None]:
    """The test and training pairs, checked before anything slow runs."""
    test = read_pairs(test_path)
    train = read_pairs(train_path) if train_path is not None else None
    if train is not None and test.cross_validation:
        raise ConfigError(
            f"--pairs {test_path} has {len(test.folds)} folds, each scored at the threshold "
            "fitted on the others: --pairs-train does not apply"
        )
    if not images_dir.is_dir():
        raise ConfigError(f"IMAGES_DIR {images_dir} is not a folder of <name>/ folders")
    return test, train


def _out_dir(out: Path | None, name: str) -> Path:
    """``--out``, or ``./eval-<name>-<UTC time>``; checked before a long run, not after it."""
    started = datetime.now(UTC)
    out = out or Path(f"eval-{_UNSAFE_NAME.sub('_', name)}-{started:%Y%m%dT%H%M%SZ}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    return out


def _write(writer: Callable[[T, Path], ReportFiles], result: T, out: Path) -> ReportFiles:
    try:
        return writer(result, out)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc


def _alignments(
    names: list[AlignMode] | None, settings: Settings
) -> tuple[list[AlignMode], LandmarkLocator | None]:
    """The alignments named (default: the settings'), and the landmark locator they need."""
    default, locator = alignment_from_settings(settings)
    aligns = list(dict.fromkeys(names or [default]))
    if locator is None and "landmarks" in aligns:
        locator = locator_from_settings(settings.replace(align="landmarks"))
    if "landmarks" in aligns and locator is None:
        raise ConfigError("--align landmarks needs the landmark model: run facerank models fetch")
    return aligns, locator


def _detectors(names: list[DetectorKind] | None, settings: Settings) -> dict[str, FaceDetector]:
    """The detectors named (default: ``FACERANK_DETECTOR``), each once, built as the product
    builds them."""
    chosen = dict.fromkeys(names or [settings.detector])
    return {name: detector_from_settings(settings.replace(detector=name)) for name in chosen}


def _scorers(names: list[str] | None, settings: Settings) -> tuple[list[Scorer], list[str]]:
    """The contenders named (each once, in order), or the defaults with notes on any left out."""
    if not names:
        return default_scorers(settings)
    return [load_scorer(name, settings) for name in dict.fromkeys(names)], []
