"""The report files of a pairs-protocol run: ``report.json``, ``report.md`` and ``roc.png``.

Laid out as the leave-one-out report is (the printed table first, then detection, the
protocol and notes) and built from the same helpers, so the two modes read alike and paths
from the user's file system are made safe the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facerank.evaluation.pairs import PairsFile
from facerank.evaluation.pairs_run import PairsResult, PairsRun
from facerank.evaluation.report import (
    ROC_POINTS,
    ReportFiles,
    cell,
    contender_json,
    methods_text,
    pass_json,
    pct,
    plot_curves,
    relative_path,
    safe_text,
    skipped_json,
    table,
    with_threshold,
)
from facerank.evaluation.run import DetectionPass
from facerank.evaluation.verification import Verification

MISSED_SHOWN = 50
"""Images without a face listed per detection pass in Markdown (the JSON lists all)."""


def write_pairs_report(run: PairsRun, out_dir: Path) -> ReportFiles:
    """Write the three report files into ``out_dir`` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / "report.json", out_dir / "report.md", out_dir / "roc.png")
    files.json.write_text(pairs_json_text(run), encoding="utf-8")
    files.markdown.write_text(pairs_markdown(run), encoding="utf-8")
    curves = [
        (_label(result), result.verification.roc)
        for result in run.results
        if result.verification.roc is not None
    ]
    plot_curves(curves, f"ROC of the pairs with both faces found: {run.test.path.name}", files.roc)
    return files


def pairs_json_text(run: PairsRun) -> str:
    return json.dumps(pairs_json(run), ensure_ascii=False, indent=2) + "\n"


def pairs_json(run: PairsRun) -> dict[str, Any]:
    root = run.dataset.root
    return {
        "protocol": {
            "test": _file_json(run.test),
            "train": None if run.train is None else _file_json(run.train),
            "cross_validation": run.test.cross_validation,
            "faces": run.face,
            "missed_face": "wrong",
        },
        "images": {
            "root": safe_text(str(root)),
            "named": len(run.dataset.images),
            "test": len(run.test_images),
        },
        "created": run.created.isoformat(timespec="seconds"),
        "seconds": run.seconds,
        "threshold": run.threshold,
        "detections": [
            {
                **pass_json(p),
                "unreadable": [skipped_json(root, s) for s in p.unreadable],
                "test_images_without_face": [
                    relative_path(root, run.dataset.images[i].path) for i in run.missed(p)
                ],
            }
            for p in run.passes
        ],
        "results": [_result_json(run, result) for result in run.results],
        "notes": list(run.notes),
    }


def _file_json(pairs: PairsFile) -> dict[str, Any]:
    every = pairs.pairs
    return {
        "path": safe_text(str(pairs.path)),
        "folds": len(pairs.folds),
        "pairs": len(every),
        "matched": sum(p.same for p in every),
        "mismatched": sum(not p.same for p in every),
    }


def _result_json(run: PairsRun, result: PairsResult) -> dict[str, Any]:
    verification = result.verification
    roc = verification.roc
    far, tar = roc.sampled(ROC_POINTS) if roc is not None else ((), ())
    return {
        **contender_json(result),
        "test_images_without_face": len(run.missed(run.pass_of(result))),
        "faces_per_s": _faces_per_s(run, result),
        "verification": verification.to_json(),
        "roc_found_pairs": {"far": list(far), "tar": list(tar)},
    }


def _faces_per_s(run: PairsRun, result: PairsResult) -> float:
    faces = len(run.pass_of(result).sources)
    return faces / result.feature_seconds if result.feature_seconds > 0 else 0.0


# --- Markdown ----------------------------------------------------------------------------


def pairs_table(run: PairsRun) -> str:
    """The side-by-side table: one row per detector, alignment and embedder."""
    targets = [target for target, _ in _first_tar_at_far(run)]
    header = [
        "detector",
        "align",
        "embedder",
        "accuracy (missed face = wrong)",
        "accuracy, both faces found",
        "test images with no face",
        "threshold",
        *(f"TAR at FAR {target:g}, found pairs (threshold)" for target in targets),
        "embed faces/s",
    ]
    return table(header, [_row(run, result, len(targets)) for result in run.results])


def _first_tar_at_far(run: PairsRun) -> tuple[tuple[float, Any], ...]:
    return next((r.verification.tar_at_far for r in run.results if r.verification.tar_at_far), ())


def _row(run: PairsRun, result: PairsResult, targets: int) -> list[str]:
    v = result.verification
    missed = len(run.missed(run.pass_of(result)))
    tars = [with_threshold(point.tar, point) for _, point in v.tar_at_far] or ["n/a"] * targets
    return [
        result.detector,
        result.align,
        cell(result.model_version),
        _mean_std(v.accuracy, v.accuracy_std),
        _mean_std(v.found_accuracy, v.found_accuracy_std),
        f"{missed:,}/{len(run.test_images):,} ({pct(missed / len(run.test_images))})",
        _threshold_text(v),
        *tars,
        f"{_faces_per_s(run, result):,.0f}",
    ]


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return pct(mean) if std is None else f"{pct(mean)} +- {100 * std:.1f}"


def _threshold_text(v: Verification) -> str:
    thresholds = [fold.threshold for fold in v.folds]
    if not thresholds:
        return "n/a"
    if len(thresholds) == 1:
        return f"{thresholds[0]:.4g}"
    low, high = min(thresholds), max(thresholds)
    return f"{sum(thresholds) / len(thresholds):.4g} ({low:.4g}..{high:.4g})"


def pairs_markdown(run: PairsRun) -> str:
    parts = [
        f"# facerank eval --pairs: {cell(run.test.path.name)}\n",
        pairs_table(run),
        _protocol_section(run),
        _detection_section(run),
        _folds_section(run),
        _missed_section(run),
    ]
    return "\n".join(part for part in parts if part)


def _describe(pairs: PairsFile) -> str:
    every = pairs.pairs
    matched = sum(p.same for p in every)
    folds = f" in {len(pairs.folds)} folds" if pairs.cross_validation else ""
    return (
        f"{cell(str(pairs.path))}: {len(every):,} pairs ({matched:,} matched, "
        f"{len(every) - matched:,} mismatched){folds}"
    )


def _protocol_section(run: PairsRun) -> str:
    sources = sorted({r.verification.threshold_source for r in run.results})
    first = run.results[0].verification
    lines = [
        f"Test pairs: {_describe(run.test)}.",
        f"Training pairs: {_describe(run.train)}." if run.train else "No training pairs.",
        f"Images: {cell(str(run.dataset.root))}, {len(run.dataset.images):,} named by the "
        f"pairs ({len(run.test_images):,} by the test pairs). Run "
        f"{run.created.isoformat(timespec='seconds')}, {run.seconds:.1f} s.",
        "Threshold: " + "; ".join(cell(s) for s in sources) + ".",
        (
            "Each image's face nearest the image centre is compared (--face centre), "
            "not the one the product enrolls."
            if run.face == "centre"
            else f"Each image's {run.face} face is compared, as the product enrolls one photo "
            f"(FACERANK_ENROLL_FACES={run.face})."
        )
        + " A pair where either image has no face found, or "
        "cannot be read, counts as a wrong answer in the accuracy; the second accuracy "
        "leaves those pairs out.",
        "Accuracy over folds is the mean +- the standard deviation over the folds, each fold "
        "at the threshold fitted on the others."
        if run.test.cross_validation
        else "",
        f"TAR at FAR is measured on the test pairs with both faces found, folds pooled "
        f"(here {first.genuine_found:,} matched and {first.impostor_found:,} mismatched for "
        f"the first row): the lowest FAR it can resolve is one false accept in "
        f"{max(first.impostor_found, 1):,}.",
        *(cell(note) for note in run.notes),
    ]
    return "## Protocol\n\n" + "".join(f"- {line}\n" for line in lines if line)


def _detection_section(run: PairsRun) -> str:
    rows = [
        [
            p.detector,
            p.align,
            f"{len(p.sources):,}/{p.images:,} ({pct(p.detection_rate)})",
            f"{len(p.unreadable):,}",
            f"{len(run.missed(p)):,}",
            methods_text(p),
            f"{p.images / p.seconds:,.1f}" if p.seconds > 0 else "-",
        ]
        for p in run.passes
    ]
    header = [
        "detector",
        "align",
        "faces found / images read",
        "unreadable or missing",
        "test images with no face",
        "faces placed by",
        "images/s",
    ]
    return "## Detection and alignment\n\n" + table(header, rows)


def _folds_section(run: PairsRun) -> str:
    if not run.test.cross_validation:
        return ""
    folds = len(run.test.folds)
    header = ["detector", "align", "embedder", *(f"fold {k + 1}" for k in range(folds))]
    rows = [
        [
            r.detector,
            r.align,
            cell(r.model_version),
            *(pct(f.accuracy) for f in r.verification.folds),
        ]
        for r in run.results
        if r.verification.folds
    ]
    return "## Accuracy per fold (missed face = wrong)\n\n" + table(header, rows)


def _missed_section(run: PairsRun) -> str:
    sections = []
    for detection in _distinct_detectors(run):
        missed = run.missed(detection)
        if not missed:
            continue
        shown = [
            f"- {cell(relative_path(run.dataset.root, run.dataset.images[i].path))}"
            for i in missed[:MISSED_SHOWN]
        ]
        more = [f"- ... and {len(missed) - MISSED_SHOWN:,} more (see report.json)"]
        sections.append(
            f"## Test images with no face: {detection.detector}\n\n"
            + "\n".join(shown + (more if len(missed) > MISSED_SHOWN else []))
            + "\n"
        )
    return "\n".join(sections)


def _distinct_detectors(run: PairsRun) -> list[DetectionPass]:
    """One pass per detector: alignment does not change which faces are found."""
    first: dict[str, DetectionPass] = {}
    for detection in run.passes:
        first.setdefault(detection.detector, detection)
    return list(first.values())


def _label(result: PairsResult) -> str:
    return f"{result.detector}, {result.align}: {result.model_version}"
