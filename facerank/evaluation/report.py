"""The report files of an evaluation run: ``report.json``, ``report.md`` and ``roc.png``.

The Markdown report opens with the side-by-side table (the same one ``facerank eval`` prints),
then the detection figures, notes and each contender's hardest probes. Paths and identity
names come from the user's file system, so everything shown is made safe first: undecodable
file name bytes become visible escapes (JSON stays valid UTF-8) and table cells cannot break
the Markdown table or inject HTML.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from facerank.evaluation.dataset import LabelledImage, Skipped
from facerank.evaluation.metrics import OperatingPoint, Probe, Roc
from facerank.evaluation.run import DetectionPass, EvaluationRun, ScorerResult

HARDEST_SHOWN = 5
"""Hardest probes listed per contender in Markdown (the JSON has all the metrics found)."""

ROC_POINTS = 200


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    roc: Path


def write_report(run: EvaluationRun, out_dir: Path) -> ReportFiles:
    """Write the three report files into ``out_dir`` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / "report.json", out_dir / "report.md", out_dir / "roc.png")
    files.json.write_text(report_json_text(run), encoding="utf-8")
    files.markdown.write_text(markdown(run), encoding="utf-8")
    plot_roc(run, files.roc)
    return files


def report_json_text(run: EvaluationRun) -> str:
    return json.dumps(report_json(run), ensure_ascii=False, indent=2) + "\n"


def report_json(run: EvaluationRun) -> dict[str, Any]:
    dataset = run.dataset
    first = run.passes[0]
    return {
        "dataset": {
            "name": safe_text(dataset.name),
            "root": safe_text(str(dataset.root)),
            "files": len(dataset.images),
            "identities": len({image.identity for image in dataset.images}),
            "skipped": [skipped_json(dataset.root, s) for s in dataset.skipped],
            "unreadable": [skipped_json(dataset.root, s) for s in first.unreadable],
        },
        "created": run.created.isoformat(timespec="seconds"),
        "seconds": run.seconds,
        "threshold": run.threshold,
        "alignments": [pass_json(p) for p in run.passes],
        "results": [_result_json(run, result) for result in run.results],
        "notes": list(run.notes),
    }


def skipped_json(root: Path, skipped: Skipped) -> dict[str, str]:
    """A skipped or unreadable file, its path relative to the dataset's ``root``."""
    return {
        "path": relative_path(root, skipped.path),
        "code": skipped.code,
        "message": safe_text(skipped.message),
    }


def pass_json(detection: DetectionPass) -> dict[str, Any]:
    return {
        "detector": detection.detector,
        "align": detection.align,
        "images": detection.images,
        "faces": len(detection.sources),
        "detection_rate": detection.detection_rate,
        "alignment_methods": detection.methods,
        "seconds": detection.seconds,
        "images_per_s": detection.images / detection.seconds if detection.seconds > 0 else 0.0,
    }


def _result_json(run: EvaluationRun, result: ScorerResult) -> dict[str, Any]:
    metrics = result.metrics.to_json()
    metrics["worst_probes"] = [_probe_json(run, result, p) for p in result.metrics.worst_probes]
    far, tar = result.metrics.roc.sampled(ROC_POINTS)
    return {
        **contender_json(result),
        "faces_per_s": result.faces_per_s,
        "images_per_s": result.images_per_s,
        "feature_seconds": result.feature_seconds,
        "metrics": metrics,
        "roc": {"far": far.tolist(), "tar": tar.tolist()},
    }


class Contender(Protocol):
    """What every result row says about whom it measures (both protocols' results)."""

    @property
    def name(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def detector(self) -> str: ...
    @property
    def align(self) -> str: ...
    @property
    def unit_distances(self) -> bool: ...


def contender_json(result: Contender) -> dict[str, str]:
    return {
        "embedder": safe_text(result.name),
        "model_version": result.model_version,
        "detector": result.detector,
        "align": result.align,
        "distance": "euclidean" if result.unit_distances else "chi-square",
    }


def _probe_json(run: EvaluationRun, result: ScorerResult, probe: Probe) -> dict[str, Any]:
    image = _image_of(run, result)
    return {
        "probe": _relative(run, image(probe.index).path),
        "identity": image(probe.index).identity,
        "rank": probe.rank,
        "genuine": {
            "path": _relative(run, image(probe.genuine_index).path),
            "distance": probe.genuine_distance,
        },
        "impostor": {
            "path": _relative(run, image(probe.impostor_index).path),
            "identity": image(probe.impostor_index).identity,
            "distance": probe.impostor_distance,
        },
    }


def _image_of(run: EvaluationRun, result: ScorerResult) -> Callable[[int], LabelledImage]:
    """Face index of ``result`` -> its dataset image."""
    [detection] = [
        p for p in run.passes if (p.detector, p.align) == (result.detector, result.align)
    ]
    return lambda face: run.dataset.images[detection.sources[face]]


# --- Markdown ----------------------------------------------------------------------------


def summary_table(run: EvaluationRun) -> str:
    """The side-by-side table: one row per contender and alignment variant."""
    targets = [target for target, _ in run.results[0].metrics.tar_at_far]
    header = [
        "embedder",
        "align",
        "detector",
        "faces",
        "rank-1",
        "rank-5",
        "best accuracy (threshold)",
        "at the match threshold: accuracy / TAR / FAR"
        if run.threshold is None
        else f"at match {run.threshold:g}: accuracy / TAR / FAR",
        *(f"TAR at FAR {target:g} (threshold)" for target in targets),
        "embed faces/s",
        "end-to-end images/s",
    ]
    rows = [_summary_row(result) for result in run.results]
    return table(header, rows)


def _summary_row(result: ScorerResult) -> list[str]:
    m = result.metrics
    at_match = (
        f"{pct(m.at_threshold.accuracy)} / {pct(m.at_threshold.tar)} / "
        f"{pct(m.at_threshold.far)} at {m.at_threshold.threshold:g}"
        if m.at_threshold is not None
        else "n/a (chi-square distances)"
    )
    return [
        cell(result.model_version),
        result.align,
        result.detector,
        f"{m.faces}/{result.images}",
        pct(m.rank1),
        pct(m.rank5),
        with_threshold(m.best.accuracy, m.best),
        at_match,
        *(with_threshold(point.tar, point) for _, point in m.tar_at_far),
        f"{result.faces_per_s:,.0f}",
        f"{result.images_per_s:,.1f}",
    ]


def markdown(run: EvaluationRun) -> str:
    dataset = run.dataset
    first = run.passes[0]
    parts = [
        f"# facerank eval: {cell(dataset.name)}\n",
        summary_table(run),
        f"Dataset {cell(str(dataset.root))}: {len(dataset.images)} files of "
        f"{len({i.identity for i in dataset.images})} identities ({len(first.unreadable)} "
        f"unreadable as images); skipped entries: {len(dataset.skipped)}. Run "
        f"{run.created.isoformat(timespec='seconds')}, {run.seconds:.1f} s.\n",
        _detection_section(run),
        _notes_section(run),
        *(_hardest_section(run, result) for result in run.results),
        _skipped_section(run),
    ]
    return "\n".join(part for part in parts if part)


def _detection_section(run: EvaluationRun) -> str:
    rows = [
        [
            p.detector,
            p.align,
            f"{len(p.sources)}/{p.images} ({pct(p.detection_rate)})",
            methods_text(p),
            f"{p.images / p.seconds:,.1f}" if p.seconds > 0 else "-",
        ]
        for p in run.passes
    ]
    header = ["detector", "align", "faces found / images", "faces placed by", "images/s"]
    return "## Detection and alignment\n\n" + table(header, rows)


def methods_text(detection: DetectionPass) -> str:
    """How many faces each alignment method placed, e.g. ``box 3, landmarks 97``."""
    return ", ".join(f"{name} {count}" for name, count in sorted(detection.methods.items()))


def _notes_section(run: EvaluationRun) -> str:
    m = run.results[0].metrics
    reject_all = m.impostor_pairs / (m.genuine_pairs + m.impostor_pairs)
    notes = [
        "Only faces found are evaluated (the largest face of each image). Identification is "
        "leave-one-out over identities ranked by their closest face (ties count against the "
        "probe); identities with a single face are distractors only.",
        f"Verification covers all {m.genuine_pairs:,} same-identity and {m.impostor_pairs:,} "
        f"different-identity pairs; rejecting every pair would score accuracy "
        f"{pct(reject_all)}. A pair is accepted when its distance <= the threshold.",
        "Throughput: embedding is timed alone, after a warm-up; end-to-end adds the shared "
        "decode + detect + align pass of the variant.",
        *(safe_text(note) for note in run.notes),
    ]
    return "## Notes\n\n" + "".join(f"- {note}\n" for note in notes)


def _hardest_section(run: EvaluationRun, result: ScorerResult) -> str:
    image = _image_of(run, result)
    rows = [
        [
            str(p.rank),
            cell(_relative(run, image(p.index).path)),
            f"{cell(_relative(run, image(p.genuine_index).path))} ({p.genuine_distance:.4g})",
            f"{cell(_relative(run, image(p.impostor_index).path))} ({p.impostor_distance:.4g})",
        ]
        for p in result.metrics.worst_probes[:HARDEST_SHOWN]
    ]
    header = ["rank", "probe", "nearest same identity", "nearest other identity"]
    title = (
        f"## Hardest probes: {cell(result.model_version)}, {result.align}, {result.detector}\n\n"
    )
    return title + table(header, rows)


def _skipped_section(run: EvaluationRun) -> str:
    entries = [*run.dataset.skipped, *run.passes[0].unreadable]
    if not entries:
        return ""
    lines = [f"- {cell(_relative(run, s.path))}: {s.code}: {cell(s.message)}" for s in entries]
    return "## Skipped and unreadable\n\n" + "\n".join(lines) + "\n"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (cells must already be safe: see :func:`cell`)."""
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def with_threshold(value: float, point: OperatingPoint) -> str:
    return f"{pct(value)} ({point.threshold:.4g})"


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _relative(run: EvaluationRun, path: Path) -> str:
    return relative_path(run.dataset.root, path)


def relative_path(root: Path, path: Path) -> str:
    return safe_text(os.path.relpath(path, root))


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8: file name bytes that did not decode become ``\\udcXX`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def cell(text: str) -> str:
    """Text for a Markdown table cell: control characters escaped, no ``|``, no raw HTML."""
    visible = "".join(c if c.isprintable() else repr(c)[1:-1] for c in safe_text(text))
    return html.escape(visible, quote=False).replace("|", "\\|")


# --- ROC plot ----------------------------------------------------------------------------


def plot_roc(run: EvaluationRun, path: Path) -> None:
    """One ROC curve per contender and variant of a leave-one-out run."""
    curves = [(f"{r.align}, {r.detector}: {r.model_version}", r.metrics.roc) for r in run.results]
    plot_curves(curves, f"ROC: {run.dataset.name}", path)


def plot_curves(curves: Sequence[tuple[str, Roc]], title: str, path: Path) -> None:
    """TAR against FAR on a log axis, one labelled curve each (Agg, no display).

    A bare ``Figure`` draws with the Agg canvas and leaves pyplot's global state alone.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), dpi=120)
    axes = figure.subplots()
    for label, roc in curves:
        far, tar = roc.sampled(ROC_POINTS)
        axes.step(far, tar, where="post", label=_plot_text(label))
    lowest = min((1 / roc.impostor_pairs for _, roc in curves), default=1e-3)
    axes.set_xscale("log")
    axes.set_xlim(lowest, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (different-identity pairs accepted)")
    axes.set_ylabel("true accept rate (same-identity pairs accepted)")
    axes.set_title(_plot_text(title))
    axes.grid(visible=True, which="both", alpha=0.3)
    if curves:
        axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, format="png")


def _plot_text(text: str) -> str:
    """Matplotlib reads ``$...$`` as math (and fails on an odd ``$``): keep names literal."""
    return safe_text(text).replace("$", r"\$")
