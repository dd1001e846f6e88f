"""A training run that needs no faces: random chips, the scratch backbone, two workers.

For checks about how a worker starts and stops (``tests/test_launch.py``,
``infra/images/check.py``), not what it learns: it never gets far enough to train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.backbones import backbone_chip
from training.config import TrainConfig
from training.data import write_dataset
from training.rundir import RunDir

CLUSTER_FORMING = "Started server with target"
"""TensorFlow's own line (INFO, from its C++) once MultiWorkerMirroredStrategy's start-up has
replaced the SIGTERM handler with its preemption notifier's and started the gRPC server; the
worker then waits for its peers in C++, holding the GIL. A SIGTERM sent after it certainly
meets that state. Our own line before the strategy would race with TensorFlow, and the signal
might come while the launcher's handling still had it to itself."""


def prepare_two_worker_run(shared: Path, run_id: str) -> RunDir:
    """A two-worker run under ``shared`` with a tiny dataset, as the retrain function leaves
    one; the start-up deadline is the default's, long past any check."""
    config = TrainConfig(
        run_id=run_id,
        version=f"ft-{run_id}",
        backbone="scratch",
        image_size=32,
        workers=2,
        epochs=1,
        steps_per_epoch=1,
        identities_per_batch=4,
        faces_per_identity=2,
        startup_timeout_s=600.0,
    )
    run = RunDir.create(shared, config)
    names = [f"person-{i}" for i in range(8) for _ in range(3)]
    chips = np.random.default_rng(0).integers(0, 255, (len(names), 32, 32, 3), dtype=np.uint8)
    write_dataset(run, backbone_chip(config), chips, names)
    return run
