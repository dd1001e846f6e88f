"""The retrain function: requests in, real distributed runs, the promotion gate, the switch.

The end-to-end tests post CloudEvents to the function's Flask app and let it run for real: the
gallery's crops are exported to the run folder, two ``python -m training.worker`` processes
train under MultiWorkerMirroredStrategy on loopback, the chief evaluates the candidate and the
active model on held-out identities, and the gate decides. The scratch backbone and a few
steps keep that under a minute; the margin decides the outcome so each test takes one known
path (the gate's comparisons have their own tests on real metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from cloudevents.http import CloudEvent

from facerank.cehttp import from_http, json_data, to_binary
from facerank.embedding import LbpEmbedder
from facerank.errors import InvalidEventError
from facerank.evaluation import evaluate_embeddings
from facerank.events import (
    GALLERY_REINDEXED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    MODEL_TRAINED,
    RETRAIN_REFUSED,
    RETRAIN_STARTED,
    retrain_request,
    run_id_of,
)
from facerank.settings import Settings
from functions.retrain.__main__ import in_background, make_launcher
from functions.retrain.app import create_app
from functions.retrain.gate import decide
from functions.retrain.handler import RetrainHandler
from functions.retrain.orchestrator import RunOrchestrator
from functions.retrain.request import RetrainRequest
from functions.retrain.training_run import SharedVolumeTrainer
from tests.plugins.cli import run_facerank
from tests.plugins.enroller import Enroller
from tests.plugins.faces import DETECTABLE_FACES, face_shot, labelled_chips
from tests.plugins.http import serving

PHOTOS = 4

# --- the gate, on real metrics ---------------------------------------------------------------


@pytest.fixture(scope="module")
def real_metrics(lfw_faces: np.ndarray) -> dict[str, dict[str, Any]]:
    """Held-out metrics of lbp-v0 and of lbp-v0 drowned in noise, on the same faces."""
    chips, labels = labelled_chips(lfw_faces[:12], 112, per_identity=4)
    good = LbpEmbedder().embed(chips)
    noise = np.random.default_rng(0).normal(0, 0.08, good.shape).astype(np.float32)
    poor = good + noise
    poor /= np.linalg.norm(poor, axis=1, keepdims=True)
    return {
        "good": evaluate_embeddings(good, labels, threshold=0.6).to_json(),
        "poor": evaluate_embeddings(poor, labels, threshold=0.6).to_json(),
    }


def test_the_gate_promotes_a_better_model_and_rejects_a_worse_one(
    real_metrics: dict[str, dict[str, Any]],
) -> None:
    good, poor = real_metrics["good"], real_metrics["poor"]
    assert decide(good, poor, margin=0.0).promote
    worse = decide(poor, good, margin=0.0)
    assert not worse.promote
    assert "not better" in worse.reason
    assert not decide(good, good, margin=0.0).promote  # equal is not better


def test_the_margin_is_what_a_candidate_must_win_by(
    real_metrics: dict[str, dict[str, Any]],
) -> None:
    good, poor = real_metrics["good"], real_metrics["poor"]
    tar = {
        m: next(p["tar"] for p in real_metrics[m]["tar_at_far"] if p["far_target"] == 0.01)
        for m in real_metrics
    }
    gap = tar["good"] - tar["poor"]
    assert gap > 0
    assert decide(good, poor, margin=gap / 2).promote
    assert not decide(good, poor, margin=gap * 2).promote


def test_metrics_without_the_gates_figures_are_refused() -> None:
    with pytest.raises(ValueError, match="TAR"):
        decide({"rank1": 1.0}, {"rank1": 0.5}, margin=0.0)


@pytest.mark.parametrize(
    "data",
    [
        {"workers": 0},
        {"workers": "2"},
        {"epochs": 10_000},
        {"loss": 3},
        {"steps": 5},
        ["workers", 2],
    ],
)
def test_bad_requests_are_refused_before_anything_starts(data: object) -> None:
    with pytest.raises(InvalidEventError):
        RetrainRequest.parse(data, Settings())


# --- end to end ---------------------------------------------------------------------------


@dataclass
class Retrain:
    url: str
    orchestrator: RunOrchestrator
    events: list[CloudEvent]
    enroller: Enroller

    def request(self, **parameters: Any) -> tuple[str, CloudEvent]:
        event = retrain_request(parameters, source="tests")
        headers, body = to_binary(event)
        response = requests.post(self.url, data=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        reply = from_http(response.headers, response.content)
        return run_id_of(event), CloudEvent(dict(reply.get_attributes()), json_data(reply))

    def wait_for_run(self, run_id: str, deadline_s: float = 240) -> dict[str, Any]:
        registry = self.orchestrator.registry
        deadline = time.monotonic() + deadline_s
        while True:
            record = registry.run(run_id) or {}
            if record.get("status") in ("promoted", "rejected", "failed"):
                return record
            assert time.monotonic() < deadline, f"run {run_id} still {record.get('status')}"
            time.sleep(0.5)

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


@pytest.fixture
def retrain(tmp_path: Path, lfw_faces: np.ndarray) -> Iterator[Callable[..., Retrain]]:
    def start(**settings: Any) -> Retrain:
        config = Settings(
            data_dir=tmp_path,
            model="lbp-v0",
            retrain_backbone="scratch",
            retrain_epochs=1,
            retrain_steps_per_epoch=4,
            **settings,
        )
        enroller = Enroller(config)
        rng = np.random.default_rng(0)
        for person in DETECTABLE_FACES:
            for photo in range(PHOTOS):
                shot = face_shot(lfw_faces[person], rng, flip=photo % 2 == 1)
                enroller.add(f"p{person}/{photo}.jpg", shot)
        events: list[CloudEvent] = []
        orchestrator = RunOrchestrator(
            config,
            enroller.handler.models,
            enroller.handler.gallery,
            SharedVolumeTrainer(config, enroller.handler.gallery),
            make_launcher(config),
            events.append,
        )
        url = servers.enter_context(
            serving(create_app(RetrainHandler(orchestrator, in_background), api_token=""))
        )
        return Retrain(url, orchestrator, events, enroller)

    with ExitStack() as servers:
        yield start


@pytest.mark.slow
def test_a_better_model_is_promoted_and_the_gallery_switches_to_it(
    retrain: Callable[..., Retrain],
) -> None:
    # A negative margin: promote even a model no better than lbp-v0 after four steps, so the
    # promotion path runs; which model is better is the gate's tests' business.
    service = retrain(promotion_margin=-1.0)
    run_id, reply = service.request(workers=2)
    assert reply["type"] == RETRAIN_STARTED
    assert reply.data["workers"] == 2
    assert service.request(workers=1)[1]["type"] == RETRAIN_REFUSED  # one run at a time

    record = service.wait_for_run(run_id)

    assert record["status"] == "promoted", record.get("reason")
    version = record["model_version"]
    pointer = service.orchestrator.registry.pointer()
    assert pointer is not None
    assert (pointer.active.version, pointer.pending) == (version, None)
    gallery = service.enroller.handler.gallery
    assert all(version in r.model_versions for r in gallery.records())
    assert service.types() == [MODEL_TRAINED, GALLERY_REINDEXED, MODEL_PROMOTED]
    card = service.orchestrator.registry.version(version)
    assert card is not None
    assert card["decision"] == "promoted"
    assert card["metrics"]["rank1"] >= 0
    assert card["config"]["workers"] == 2


@pytest.mark.slow
def test_a_model_that_is_not_better_is_rejected_and_nothing_switches(
    retrain: Callable[..., Retrain],
) -> None:
    service = retrain(promotion_margin=1.0)  # no model can win by a whole TAR
    run_id, reply = service.request(workers=1)
    assert reply["type"] == RETRAIN_STARTED

    record = service.wait_for_run(run_id)

    assert record["status"] == "rejected"
    assert "not better" in record["reason"]
    pointer = service.orchestrator.registry.pointer()
    assert pointer is not None
    assert (pointer.active.version, pointer.pending) == ("lbp-v0", None)
    assert service.types() == [MODEL_TRAINED, MODEL_REJECTED]
    card = service.orchestrator.registry.version(record["model_version"])
    assert card is not None
    assert card["decision"] == "rejected"
    # The lock is released: the next request starts a run (waited for: no stray workers).
    again, reply = service.request(workers=1)
    assert reply["type"] == RETRAIN_STARTED
    assert service.wait_for_run(again)["status"] == "rejected"


@pytest.mark.slow
def test_facerank_retrain_waits_for_the_decision_and_models_lists_it(
    retrain: Callable[..., Retrain], tmp_path: Path
) -> None:
    """The CLI as an operator runs it: request, follow the run, then list the versions."""
    service = retrain(promotion_margin=1.0)
    result = run_facerank(
        "retrain", "--workers", "1", "--wait", "--broker-url", service.url, data_dir=tmp_path
    )
    assert "retrain requested: run " in result.stdout
    assert ": rejected: not better by more than the margin" in result.stdout

    listing = json.loads(run_facerank("models", "--json", data_dir=tmp_path).stdout)
    assert listing["active"] == "lbp-v0"
    [run] = listing["runs"]
    assert (run["status"], run["steps_done"], run["steps_total"]) == ("rejected", 4, 4)
    [trained] = [m for m in listing["models"] if m["version"] == run["model_version"]]
    assert trained["decision"] == "rejected"
    assert trained["metrics"]["rank1"] >= 0

    table = run_facerank("models", data_dir=tmp_path).stdout
    [row] = [line for line in table.splitlines() if line.startswith(f" {run['model_version']} ")]
    tar = next(p["tar"] for p in trained["metrics"]["tar_at_far"] if p["far_target"] == 1e-3)
    assert f"{trained['metrics']['rank1']:.3f}" in row
    assert f"{tar:.3f}" in row
    assert "rejected" in row
