"""``facerank retrain [--workers N] [--epochs E] [--loss L] [--wait]``: ask for a training run.

Sends ``dev.facerank.retrain.requested.v1`` to the broker (the local one of ``facerank up``,
or a Knative Broker's ingress with ``--broker-url``), like any other producer would. The retrain
function decides (it refuses a second concurrent run), trains, evaluates and promotes or
rejects. With ``--wait`` the command follows the run in the model registry, where the function
records each step, and ends with the decision.
"""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from facerank.errors import FacerankError
from facerank.events import retrain_request, run_id_of, send_event
from facerank.registry import ModelRegistry
from facerank.settings import Settings
from facerank.storage import open_store

POLL_S = 1.0
FINAL = ("promoted", "rejected", "failed", "refused")
"""Run statuses after which nothing more happens to the run."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retrain",
        help="start a training run (distributed, triplet loss) and promote it if it is better",
        description="Sends a retrain request to the broker. The retrain function fine-tunes "
        "the embedding model on the enrolled faces with N MultiWorkerMirroredStrategy workers, "
        "compares it with the active model on held-out identities and promotes it only if it "
        "is better, re-embedding the gallery first.",
    )
    parser.add_argument("--workers", type=int, help="training workers (default: settings)")
    parser.add_argument("--epochs", type=int, help="epochs (default: settings)")
    parser.add_argument("--loss", help="training loss (default: the measured best)")
    parser.add_argument(
        "--broker-url", help="broker ingress URL (default: the local broker of facerank up)"
    )
    parser.add_argument("--wait", action="store_true", help="follow the run to its decision")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    parameters = {
        name: value
        for name, value in (("workers", args.workers), ("epochs", args.epochs), ("loss", args.loss))
        if value is not None
    }
    request = retrain_request(parameters, source="facerank/cli")
    url = args.broker_url or f"http://127.0.0.1:{settings.broker_port}/"
    send_event(url, request)
    run_id = run_id_of(request)
    print(f"retrain requested: run {run_id}")
    if not args.wait:
        return 0
    status = follow(ModelRegistry(open_store(settings), settings.models_bucket), run_id, args)
    return 0 if status in ("promoted", "rejected") else 1


def follow(registry: ModelRegistry, run_id: str, args: argparse.Namespace) -> str:
    """Show the run's steps as the retrain function records them; its final status."""
    with tqdm(
        file=sys.stderr,
        disable=None if args.progress is None else not args.progress,
        dynamic_ncols=True,
        unit="step",
    ) as bar:
        while True:
            record = registry.run(run_id) or {}
            status = str(record.get("status", "requested"))
            bar.set_description_str(f"{run_id}: {status}", refresh=False)
            bar.total = record.get("steps_total") or bar.total
            bar.update(int(record.get("steps_done", 0)) - bar.n)
            if status in FINAL:
                break
            time.sleep(POLL_S)
    print(f"run {run_id}: {status}: {record.get('reason', '')}".rstrip(": "))
    if status == "failed":
        raise FacerankError(f"training run {run_id} failed: {record.get('reason', '')}")
    return status
