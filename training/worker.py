"""``python -m training.worker``: one worker of a training run (a pod, or a local process).

Reads the run's config from ``FACERANK_TRAIN_CONFIG``, its place in the cluster from
``TF_CONFIG`` or the ``FACERANK_TRAIN_*`` variables (:mod:`training.cluster`), trains its share
(:mod:`training.loop`); then the chief exports the model to ``export/<version>/``, scores it and
the baseline on the held-out identities and writes ``result.json``, and all workers leave
together.

Exit status, what the launchers act on: 0 done (also when the run had already succeeded: a
restarted pod of a finished run has nothing to do); 2 a permanent failure (bad config or data,
unavailable backbone: the chief records it in ``result.json``), never worth a retry; 1 anything
else (a lost peer, a collective or watchdog timeout, a crash), which a restart resumes from the
latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from facerank.embedding.savedmodel import export_embedder
from facerank.errors import FacerankError
from facerank.settings import Settings
from training.cluster import Cluster, cluster_from_env
from training.config import TrainConfig
from training.data import FaceDataset, Split, read_dataset, split_by_identity
from training.errors import ClusterConfigError
from training.evaluate import calibrated_threshold, embed_with_model, score, score_baseline
from training.result import RunFailed, RunSucceeded
from training.rundir import ProgressLog, RunDir
from training.watchdog import Watchdog

if TYPE_CHECKING:
    from training.loop import TrainOutcome

log = logging.getLogger("training.worker")

EXIT_OK, EXIT_RETRY, EXIT_FINAL = 0, 1, 2
CONFIG_ENV = "FACERANK_TRAIN_CONFIG"


class Worker:
    """This process's part in a run: its cluster index, and the chief's extra duties."""

    def __init__(
        self, config: TrainConfig, run: RunDir, cluster: Cluster | None, settings: Settings
    ) -> None:
        if (cluster.size if cluster else 1) != config.workers:
            raise ClusterConfigError(
                f"the config asks for {config.workers} workers, the cluster has "
                f"{cluster.size if cluster else 1}"
            )
        self.config = config
        self.run = run
        self.cluster = cluster
        self.index = cluster.index if cluster else 0
        self.chief = cluster.is_chief if cluster else True
        self.progress = ProgressLog(run) if self.chief else None
        self.watchdog = Watchdog()
        self.settings = settings
        """Where the pretrained weights and the baseline model are found."""

    def main(self) -> int:
        config, run = self.config, self.run
        if isinstance(run.read_result(), RunSucceeded):
            log.info("run %s already succeeded; nothing to do", config.run_id)
            return EXIT_OK
        started = time.monotonic()
        dataset = read_dataset(run)  # before TensorFlow: bad data fails in a second
        split = split_by_identity(dataset.labels, config.holdout_fraction, config.seed)
        if self.cluster is not None:
            os.environ["TF_CONFIG"] = self.cluster.tf_config()
        peers = ", ".join(self.cluster.workers) if self.cluster else "this process"
        from training.loop import DistributedTrainer, barrier, cluster_strategy  # TensorFlow

        # The start-up deadline is for the peers to meet, so it starts once TensorFlow is
        # imported: importing it takes many seconds on a loaded node and is no missing peer.
        self.watchdog.arm(config.startup_timeout_s, f"the cluster ({peers}) forming")
        strategy = cluster_strategy(config)
        trainer = DistributedTrainer(
            strategy, config, run, self.index, self.watchdog, self.progress
        )
        outcome = trainer.train(dataset, split, self.settings)
        if self.chief:
            self._finish(dataset, split, outcome, started)
        log.info("waiting for every worker to finish")
        barrier(strategy, config.startup_timeout_s)  # the chief's scoring and export included
        return EXIT_OK

    def _finish(
        self, dataset: FaceDataset, split: Split, outcome: TrainOutcome, started: float
    ) -> None:
        """Score, export and write ``result.json`` (the chief only)."""
        from training.backbones import build_backbone

        config, run, settings = self.config, self.run, self.settings
        began = time.monotonic()
        exported_config = config.replace(backbone=outcome.backbone.kind)
        plain = build_backbone(exported_config, dataset.chip, settings, pretrained_weights=False)
        plain.model.set_weights(outcome.backbone.model.get_weights())
        faces = split.faces(dataset.labels, split.heldout)
        chips, labels = dataset.chips[faces], dataset.labels[faces]
        candidate = (
            score(embed_with_model(plain.model, chips), labels, config.threshold)
            if len(faces)
            else None
        )
        threshold = calibrated_threshold(candidate)
        export_dir = run.export_dir(config.version)
        if export_dir.exists():
            log.info("%s was exported by an earlier attempt; keeping it", export_dir)
        else:
            export_embedder(
                plain.model,
                export_dir,
                version=config.version,
                chip=dataset.chip,
                match_threshold=threshold,
            )
        self._record("exported", path=str(export_dir), match_threshold=threshold)
        baseline_version, baseline = None, None
        if config.baseline and len(faces):
            baseline_version, baseline = score_baseline(
                config.baseline, settings, chips, dataset.chip, labels, config.threshold
            )
        result = RunSucceeded(
            run_id=config.run_id,
            version=config.version,
            export_dir=str(export_dir),
            match_threshold=threshold,
            backbone=outcome.backbone.kind,
            candidate=None if candidate is None else candidate.to_json(),
            baseline=None if baseline is None else baseline.to_json(),
            baseline_version=baseline_version,
            split={
                "train_identities": [dataset.identities[i] for i in split.train],
                "heldout_identities": [dataset.identities[i] for i in split.heldout],
                "train_faces": len(split.faces(dataset.labels, split.train)),
                "heldout_faces": len(faces),
            },
            training={
                "workers": config.workers,
                "steps": outcome.steps,
                "resumed_from": outcome.resumed_from,
                "final_loss": outcome.final_loss,
                "images_per_s": outcome.images_per_s,
            },
            timings={
                "train_s": outcome.seconds,
                "finish_s": time.monotonic() - began,
                "total_s": time.monotonic() - started,
            },
        )
        run.write_result(result)
        self._record("finished", status="succeeded")
        log.info("run %s succeeded: %s exported to %s", config.run_id, config.version, export_dir)

    def _record(self, event: str, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.append({"event": event, "time": time.time(), **fields})

    def fail(self, exc: FacerankError) -> None:
        """Record a permanent failure in ``result.json`` (the chief's job)."""
        if self.chief:
            self.run.write_result(RunFailed.of(self.config.run_id, exc))


def main(argv: list[str] | None = None) -> int:
    """Run one worker; the config path comes from ``FACERANK_TRAIN_CONFIG`` or ``argv[0]``."""
    try:
        settings = Settings.from_env()
    except FacerankError as exc:
        print(f"training.worker: cannot start ({exc.code}): {exc}", file=sys.stderr)
        return EXIT_FINAL
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else os.environ.get(CONFIG_ENV)
    if not path:
        log.error("no run config: set %s (or pass its path)", CONFIG_ENV)
        return EXIT_FINAL
    try:
        # The pod's place in the cluster first: it needs no I/O, and a broken pod template is
        # then reported as such even where the shared volume is missing too.
        cluster = cluster_from_env(os.environ)
        run = RunDir.of_config(path)
        worker = Worker(run.read_config(), run, cluster, settings)
    except FacerankError as exc:
        log.error("cannot start (%s): %s", exc.code, exc)
        return EXIT_FINAL
    try:
        return worker.main()
    except FacerankError as exc:
        if exc.retryable:
            log.exception("worker failed; a restart may resume it")
            return EXIT_RETRY
        log.error("run %s failed: %s", worker.config.run_id, exc)
        worker.fail(exc)
        return EXIT_FINAL
    except Exception:
        log.exception("worker failed; a restart resumes from the latest checkpoint")
        return EXIT_RETRY


if __name__ == "__main__":
    sys.exit(main())
