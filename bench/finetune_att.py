"""Does fine-tuning dlib-r34-v1 help, and with which loss? An experiment on the AT&T faces.

    .venv/bin/python bench/finetune_att.py --dataset att_faces [--losses semihard,...] [--steps N]

The AT&T set (``att_faces/s1 ... s40``, 10 photos each; README's "Evaluation data" says where to
get it) is split twice:

* people ``s1``-``s30`` are trained on, with their photos 1-5 only;
* (a) *seen people, new photos*: their photos 6-10, never used in training;
* (b) *unseen people*: every photo of ``s31``-``s40``, people the training never saw.

Each loss fine-tunes the pretrained descriptor through the real training path (one local
worker, the default freeze policy), and the exported model is compared with the pretrained
one on (a) and (b) with :mod:`facerank.evaluation.metrics` (leave-one-out rank-1, best
verification accuracy, TAR at FAR 1e-2), the numbers ``facerank eval`` reports. Faces are
detected and aligned once, by the same pipeline facerank serves with. (b) decides the default
loss: a retrained model must generalise to people enrolled after it was trained.

Writes ``bench/results/finetune_att.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerank.descriptor.pretrained import PRETRAINED_VERSION
from facerank.embedding import Embedder, load_embedder
from facerank.evaluation.metrics import Metrics, evaluate_embeddings
from facerank.faces.align import DLIB_CHIP_150
from facerank.pipeline import FacePipeline
from facerank.registry.locate import load_model, model_ref
from facerank.settings import Settings
from training.config import TrainConfig
from training.data import FaceDataset, export_folder_dataset, read_dataset, write_dataset
from training.launcher import LocalTrainingLauncher, run_local
from training.result import RunSucceeded
from training.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "finetune_att.json"
TRAINED_PEOPLE = 30
TRAIN_PHOTOS = 5
LOSSES = ("semihard", "batchhard", "arcface+semihard", "arcface")


def person(name: str) -> int:
    return int(name.removeprefix("s"))


def photo(source: str) -> int:
    return int(Path(source).stem)


def summary(metrics: Metrics) -> dict[str, float]:
    tar = dict(metrics.tar_at_far)
    return {
        "faces": metrics.faces,
        "rank1": metrics.rank1,
        "rank5": metrics.rank5,
        "accuracy": metrics.best.accuracy,
        "threshold": metrics.best.threshold,
        "tar_at_far_1e-2": tar[1e-2].tar,
        "tar_at_far_1e-3": tar[1e-3].tar,
    }


def evaluate(embedder: Embedder, data: FaceDataset, sets: dict[str, np.ndarray]) -> dict[str, Any]:
    vectors = embedder.embed(data.chips)
    return {
        name: summary(evaluate_embeddings(vectors[i], data.labels[i])) for name, i in sets.items()
    }


def fine_tune(
    shared: Path, loss: str, data: FaceDataset, train: np.ndarray, args: argparse.Namespace
) -> tuple[Path, dict[str, Any]]:
    config = TrainConfig(
        run_id=loss.replace("+", "-"),
        version=f"att-{loss.replace('+', '-')}",
        backbone="pretrained",
        loss=loss,
        warmup_steps=args.warmup if "arcface" in loss else 0,
        epochs=1,
        steps_per_epoch=args.steps,
        identities_per_batch=8,
        faces_per_identity=4,
        learning_rate=args.learning_rate,
        holdout_fraction=0.0,
        seed=1,
        log_every=10,
        checkpoint_every=args.steps,
    )
    run = RunDir.create(shared, config)
    names = [data.identities[label] for label in data.labels[train]]
    write_dataset(run, data.chip, data.chips[train], names)
    began = time.monotonic()
    outcome = run_local(
        run.config_path,
        1,
        deadline_s=3600,
        on_progress=lambda r: (
            r["event"] == "step"
            and print(
                f"    step {r['step']:>4} loss {r['loss']:.4f} ({r['images_per_s']:.0f} images/s)",
                flush=True,
            )
        ),
        launcher=LocalTrainingLauncher(shared, max_restarts=0),
    )
    result = outcome.result
    if not isinstance(result, RunSucceeded):
        logs = "\n".join(p.read_text()[-3000:] for p in run.logs_dir.glob("*.log"))
        raise SystemExit(f"fine-tuning with {loss} failed: {result}\n{logs}")
    return Path(result.export_dir), {
        "wall_s": time.monotonic() - began,
        "final_loss": result.training["final_loss"],
        "images_per_s": result.training["images_per_s"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dataset", type=Path, required=True, help="the AT&T faces: DATASET/s1 ... s40/<image>"
    )
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--warmup", type=int, default=50, help="ArcFace head-only warm-up steps (ArcFace losses)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy each fine-tuned export to KEEP/<loss>, e.g. for `facerank eval --embedder`",
    )
    args = parser.parse_args(argv)
    if not args.dataset.is_dir():
        raise SystemExit(f"{args.dataset} is missing: this experiment needs the AT&T faces there")
    settings = Settings.from_env()
    pretrained = load_model(model_ref(PRETRAINED_VERSION, settings), settings)
    pipeline = FacePipeline.from_settings(settings, pretrained)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "protocol": {
            "trained_people": f"s1-s{TRAINED_PEOPLE}, photos 1-{TRAIN_PHOTOS}",
            "a_seen_people_new_photos": f"s1-s{TRAINED_PEOPLE}, photos {TRAIN_PHOTOS + 1}-10",
            "b_unseen_people": f"s{TRAINED_PEOPLE + 1}-s40, all photos",
            "align": pipeline.align_mode,
            "steps": args.steps,
            "batch": "8 identities x 4 faces",
            "learning_rate": args.learning_rate,
            "arcface_warmup_steps": args.warmup,
        },
    }
    with tempfile.TemporaryDirectory(prefix="finetune-att-") as tmp:
        shared = Path(tmp)
        everything = RunDir.of(shared, "att")
        skipped = export_folder_dataset(
            args.dataset, pipeline, everything, DLIB_CHIP_150, progress=True
        )
        data = read_dataset(everything)
        people = np.array([person(data.identities[label]) for label in data.labels])
        photos = np.array([photo(source) for source in data.sources])
        seen = people <= TRAINED_PEOPLE
        train = np.flatnonzero(seen & (photos <= TRAIN_PHOTOS))
        sets = {
            "a_seen_people_new_photos": np.flatnonzero(seen & (photos > TRAIN_PHOTOS)),
            "b_unseen_people": np.flatnonzero(~seen),
        }
        results["faces"] = {
            "detected": len(data.labels),
            "skipped": len(skipped),
            "train": len(train),
            **{name: len(i) for name, i in sets.items()},
        }
        print(f"faces: {results['faces']}", flush=True)
        results["pretrained"] = evaluate(pretrained, data, sets)
        results["fine_tuned"] = {}
        for loss in args.losses.split(","):
            print(f"fine-tuning with {loss}:", flush=True)
            export_dir, training = fine_tune(shared, loss, data, train, args)
            if args.keep is not None:
                shutil.copytree(export_dir, args.keep / loss)
            scores = evaluate(load_embedder(str(export_dir)), data, sets)
            results["fine_tuned"][loss] = {"training": training, **scores}
    report(results)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


def report(results: dict[str, Any]) -> None:
    """The side-by-side table, and the loss with the best accuracy on unseen people."""
    rows = {"pretrained (before)": results["pretrained"]}
    rows.update({f"{loss} (after)": r for loss, r in results["fine_tuned"].items()})
    print()
    header = f"{'model':<26}"
    for name in ("a: seen, new photos", "b: unseen people"):
        header += f"{name + ' rank-1 / acc / TAR@1e-2':>44}"
    print(header)
    for label, r in rows.items():
        line = f"{label:<26}"
        for key in ("a_seen_people_new_photos", "b_unseen_people"):
            s = r[key]
            line += f"{s['rank1']:>24.3f} / {s['accuracy']:.3f} / {s['tar_at_far_1e-2']:.3f}"
        print(line)
    if results["fine_tuned"]:
        best = max(
            results["fine_tuned"],
            key=lambda loss: (
                results["fine_tuned"][loss]["b_unseen_people"]["accuracy"],
                results["fine_tuned"][loss]["b_unseen_people"]["tar_at_far_1e-2"],
            ),
        )
        results["best_loss_on_unseen_people"] = best
        print(f"\nbest held-out (unseen people) accuracy: {best}")


if __name__ == "__main__":
    main()
