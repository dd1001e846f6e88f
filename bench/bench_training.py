"""Training throughput with one worker and with two, side by side, through the real path.

    .venv/bin/python bench/bench_training.py [--repeat N] [--steps N]

Each run is a real training run started by the local launcher (``python -m training.worker``
processes, MultiWorkerMirroredStrategy, gRPC collectives on loopback), with the same global
batch (8 identities x 4 faces) for one and two workers; the figure is the chief's steady
images/s after the first step (which includes graph tracing). One- and two-worker runs
alternate, ``--repeat`` times, and the medians are compared, so background load hits both.
Backbones: ``scratch`` at 112 px, and ``pretrained`` (dlib's ResNet at 150 px, fine-tuning
from stage256) when its weights are set up (``facerank models fetch``).

Throughput does not depend on the pixels, so the chips are synthetic. Writes
``bench/results/training.json``.

Workers on one machine share its cores: this is no measure of scaling across machines. It
proves the distributed path and shows what it costs or gains on this machine (see NOTE).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sidebyside import Ratio

from facerank.descriptor.pretrained import RECOGNITION_MANIFEST, package_model_dir
from facerank.settings import Settings
from training.backbones import backbone_chip
from training.config import TrainConfig
from training.data import write_dataset
from training.launcher import LocalTrainingLauncher, run_local
from training.result import RunSucceeded
from training.rundir import RunDir

RESULTS = Path(__file__).resolve().parent / "results" / "training.json"
IDENTITIES, FACES_EACH = 40, 6
NOTE = (
    "Workers on one machine share its cores, so this is no measure of scaling across "
    "machines: it proves the distributed path (MWMS over gRPC, one gradient all-reduce per "
    "step) and shows what it costs or gains here. A small network can gain from a second "
    "process filling the cores one worker leaves idle between steps (Python and input work); "
    "a large one loses to the all-reduce and to contention for the same cores."
)


def one_run(shared: Path, name: str, workers: int, base: dict[str, Any]) -> dict[str, float]:
    config = TrainConfig(run_id=name, version=f"bench-{name}", workers=workers, **base)
    run = RunDir.create(shared, config)
    chip = backbone_chip(config)
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (IDENTITIES * FACES_EACH, chip.size, chip.size, 3), np.uint8)
    write_dataset(run, chip, chips, [f"p{i}" for i in range(IDENTITIES) for _ in range(FACES_EACH)])
    launcher = LocalTrainingLauncher(shared, max_restarts=0)
    outcome = run_local(run.config_path, workers, deadline_s=600, launcher=launcher)
    if not isinstance(outcome.result, RunSucceeded):
        logs = "\n".join(p.read_text()[-2000:] for p in run.logs_dir.glob("*.log"))
        raise SystemExit(f"run {name} failed: {outcome.result}\n{logs}")
    return {
        "images_per_s": outcome.result.training["images_per_s"],
        "train_s": outcome.result.timings["train_s"],
    }


def compare(shared: Path, label: str, base: dict[str, Any], repeat: int) -> dict[str, Any]:
    """One- and two-worker runs in alternating order (1, 2, then 2, 1, ...): neither is
    always first, so neither always meets a cold cache or a quiet machine."""
    samples: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for r in range(repeat):
        for workers in (1, 2) if r % 2 == 0 else (2, 1):
            samples[workers].append(one_run(shared, f"{label}-{workers}w-{r}", workers, base))
            print(
                f"  {label}: {workers} worker(s), run {r + 1}: "
                f"{samples[workers][-1]['images_per_s']:.1f} images/s",
                flush=True,
            )
    one = statistics.median(s["images_per_s"] for s in samples[1])
    two = statistics.median(s["images_per_s"] for s in samples[2])
    # Seconds per image, paired by repeat; one worker as the baseline, so the ratio is two
    # workers' speed over one's.
    ratio = Ratio.of(
        [1 / s["images_per_s"] for s in samples[2]], [1 / s["images_per_s"] for s in samples[1]]
    )
    return {
        "global_batch": base["identities_per_batch"] * base["faces_per_identity"],
        "steps": base["steps_per_epoch"],
        "one_worker_images_per_s": one,
        "two_workers_images_per_s": two,
        "ratio_two_to_one": two / one,
        "ratio_two_to_one_per_repeat": ratio.to_json(),
        "samples": {str(k): v for k, v in samples.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    common = {
        "epochs": 1,
        "identities_per_batch": 8,
        "faces_per_identity": 4,
        "holdout_fraction": 0.0,
        "log_every": 10,
        "checkpoint_every": 10_000,
    }
    benches = {
        "scratch_112": {**common, "backbone": "scratch", "steps_per_epoch": args.steps},
    }
    if (package_model_dir(Settings.from_env()) / RECOGNITION_MANIFEST).is_file():
        benches["pretrained_150"] = {
            **common,
            "backbone": "pretrained",
            "steps_per_epoch": max(5, args.steps // 3),
        }
    else:
        print("pretrained backbone skipped: run `facerank models fetch` first")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "note": NOTE,
    }
    with tempfile.TemporaryDirectory(prefix="bench-training-") as shared:
        for label, base in benches.items():
            print(f"{label}:", flush=True)
            results[label] = compare(Path(shared), label, base, args.repeat)
    print()
    print(f"{'backbone':<16}{'1 worker img/s':>16}{'2 workers img/s':>17}  2w / 1w per repeat")
    for label in benches:
        r = results[label]
        print(
            f"{label:<16}{r['one_worker_images_per_s']:>16.1f}"
            f"{r['two_workers_images_per_s']:>17.1f}  {r['ratio_two_to_one_per_repeat']['verdict']}"
        )
    print(f"\n{NOTE}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
