"""The evaluation harness in-process: metrics against hand-computed cases and a brute-force
reference, the LBPH baseline against OpenCV itself, dataset walking, and full runs with their
report files on faces generated from scikit-image's LFW sample."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerank.errors import FacerankError
from facerank.evaluation import (
    DatasetError,
    EvaluationError,
    evaluate_distances,
    evaluate_embeddings,
)
from facerank.evaluation.baselines import LbphScorer, chi_square_alt, load_scorer
from facerank.evaluation.dataset import load_dataset
from facerank.evaluation.metrics import Roc, pairwise_distances
from facerank.evaluation.report import markdown, report_json, write_report
from facerank.evaluation.run import EvaluationRun, evaluate
from facerank.faces import DLIB_CHIP_150, HaarFaceDetector
from facerank.settings import Settings
from tests.plugins.faces import DETECTABLE_FACES, encode, face_shot, labelled_chips

SETTINGS = Settings.from_env({})
"""Default settings (tests start with an empty model cache: see tests/plugins/pretrained.py)."""


def write_face_dataset(
    root: Path, lfw_faces: np.ndarray, *, faces: tuple[int, ...] = DETECTABLE_FACES, shots: int = 4
) -> Path:
    """``root/person-<i>/<n>.(png|jpg)``: ``shots`` photos of each of ``faces``."""
    rng = np.random.default_rng(0)
    for index in faces:
        folder = root / f"person-{index}"
        folder.mkdir(parents=True)
        for n in range(shots):
            shot = face_shot(lfw_faces[index], rng, flip=n % 2 == 1)
            fmt, suffix = ("PNG", "png") if n % 2 else ("JPEG", "jpg")
            (folder / f"{n}.{suffix}").write_bytes(encode(shot, fmt))
    return root


# --- metrics: hand-computed ----------------------------------------------------------------

# Faces 0, 1 are "a"; 2, 3 are "b". Genuine pairs: 0.2 (0-1), 0.5 (2-3); impostor pairs: 0.4
# (0-2), 0.6 (1-2), 0.7 (1-3), 0.9 (0-3). Face 2's nearest "a" face (0.4) beats its genuine
# one (0.5): rank 2. Every other probe ranks first.
HAND = np.array(
    [
        [0.0, 0.2, 0.4, 0.9],
        [0.2, 0.0, 0.6, 0.7],
        [0.4, 0.6, 0.0, 0.5],
        [0.9, 0.7, 0.5, 0.0],
    ]
)
HAND_LABELS = ["a", "a", "b", "b"]


def test_identification_on_a_hand_computed_case() -> None:
    m = evaluate_distances(HAND, HAND_LABELS, threshold=0.45)
    assert (m.faces, m.identities, m.probes) == (4, 2, 4)
    assert m.rank1 == 0.75
    assert m.rank5 == 1.0
    [first, *rest] = m.worst_probes
    assert (first.index, first.rank) == (2, 2)
    assert (first.genuine_index, first.genuine_distance) == (3, 0.5)
    assert (first.impostor_index, first.impostor_distance) == (0, 0.4)
    # rank 1 each; 3's genuine is farther (0.5) than 0's and 1's (0.2); then by index
    assert [p.index for p in rest] == [3, 0, 1]


def test_verification_on_a_hand_computed_case() -> None:
    m = evaluate_distances(HAND, HAND_LABELS, threshold=0.45, far_targets=(0.25, 0.1))
    assert (m.genuine_pairs, m.impostor_pairs) == (2, 4)
    # accepting <= 0.2: one genuine in, every impostor out: 5 of 6 decisions right; 0.5 also
    # scores 5/6 but the lower threshold wins the tie
    assert (m.best.threshold, m.best.accuracy, m.best.tar, m.best.far) == (0.2, 5 / 6, 0.5, 0.0)
    # at 0.45: genuine 0.2 and impostor 0.4 accepted
    at = m.at_threshold
    assert at is not None
    assert (at.threshold, at.tar, at.far, at.accuracy) == (0.45, 0.5, 0.25, 4 / 6)
    [(quarter, at_quarter), (tenth, at_tenth)] = m.tar_at_far
    assert (quarter, at_quarter.threshold, at_quarter.tar, at_quarter.far) == (0.25, 0.5, 1.0, 0.25)
    assert (tenth, at_tenth.threshold, at_tenth.tar, at_tenth.far) == (0.1, 0.2, 0.5, 0.0)


def test_ties_count_against_the_probe() -> None:
    """Probe 0's genuine and nearest impostor are equally far: an implementation that sorts and
    takes the first hit would call it rank 1 (and a constant embedder perfect)."""
    distances = np.array([[0, 0.5, 0.5], [0.5, 0, 0.8], [0.5, 0.8, 0]])
    m = evaluate_distances(distances, ["a", "a", "b"])
    assert m.probes == 2  # "b" has a single face: a distractor only
    assert m.rank1 == 0.5  # probe 0 ranks 2 (tie), probe 1 ranks 1
    constant = evaluate_embeddings(np.ones((6, 4)), ["a", "a", "b", "b", "c", "c"])
    assert constant.rank1 == 0.0
    assert constant.rank5 == 1.0


def test_roc_accepts_tied_genuine_and_impostor_pairs_together() -> None:
    """A genuine and an impostor pair at the same distance cannot be split by any threshold:
    TAR 1 is only reachable at FAR 1/2, never at FAR 0."""
    roc = Roc.from_pairs(np.array([0.3]), np.array([0.3, 0.8]))
    assert roc.at_far(0.4).tar == 0.0
    assert (roc.at_far(0.5).tar, roc.at_far(0.5).far, roc.at_far(0.5).threshold) == (1.0, 0.5, 0.3)
    assert roc.at_threshold(0.3).far == 0.5
    assert roc.at_threshold(0.29).tar == 0.0
    assert roc.best_accuracy().accuracy == 2 / 3


def test_far_targets_are_compared_in_pair_counts() -> None:
    """29 false accepts of 100 meet a 0.29 target, though 0.29 * 100 is 28.999999999999996."""
    impostor = np.linspace(0.5, 1.5, 100)
    roc = Roc.from_pairs(np.array([0.1, 0.78]), impostor)
    point = roc.at_far(0.29)
    assert (point.far, point.tar, point.threshold) == (0.29, 1.0, impostor[28])


def test_singleton_identities_are_only_distractors() -> None:
    distances = np.array(
        [[0, 0.3, 0.2, 0.9], [0.3, 0, 0.9, 0.9], [0.2, 0.9, 0, 0.9], [0.9, 0.9, 0.9, 0]]
    )
    m = evaluate_distances(distances, ["a", "a", "c", "d"])
    assert (m.identities, m.probes) == (3, 2)
    assert m.rank1 == 0.5  # singleton "c" outranks "a" for probe 0
    assert {p.index for p in m.worst_probes} == {0, 1}


@pytest.mark.parametrize(
    ("distances", "labels", "error"),
    [
        (np.zeros((2, 3)), ["a", "b"], ValueError),
        (HAND, ["a", "a", "b"], ValueError),
        (np.where(np.eye(4) > 0, 0, np.nan), HAND_LABELS, ValueError),
        (HAND + np.triu(np.full((4, 4), 0.1), 1), HAND_LABELS, ValueError),
        (HAND, ["a"] * 4, EvaluationError),
        (HAND, ["a", "b", "c", "d"], EvaluationError),
    ],
    ids=["not square", "labels", "nan", "asymmetric", "one identity", "no genuine pair"],
)
def test_unusable_input_raises(distances: np.ndarray, labels: list[str], error: type) -> None:
    with pytest.raises(error):
        evaluate_distances(distances, labels)


# --- metrics: against a brute-force reference ----------------------------------------------


def reference_ranks(distances: np.ndarray, labels: np.ndarray) -> list[int]:
    """Identity ranks by explicit loops: the definition, written the slow obvious way."""
    ranks = []
    for i in range(len(labels)):
        best: dict[str, float] = {}
        for j in range(len(labels)):
            if j != i:
                best[labels[j]] = min(best.get(labels[j], np.inf), distances[i, j])
        if labels[i] in best:
            ranks.append(sum(d <= best[labels[i]] for d in best.values()))
    return ranks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_a_brute_force_reference(seed: int) -> None:
    """60 faces of 10 identities, vectors rounded to one decimal so that distances tie."""
    rng = np.random.default_rng(seed)
    identity = rng.integers(0, 10, size=60)
    labels = np.array(list("abcdefghij"))[identity]
    vectors = rng.normal(size=(10, 16))[identity] + rng.normal(size=(60, 16))
    vectors = np.round(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), 1)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    m = evaluate_distances(distances, labels, threshold=0.9)

    ranks = np.array(reference_ranks(distances, labels))
    assert m.probes == len(ranks)
    assert m.rank1 == pytest.approx(np.mean(ranks <= 1))
    assert m.rank5 == pytest.approx(np.mean(ranks <= 5))
    pairs = [(distances[i, j], labels[i] == labels[j]) for i in range(60) for j in range(i + 1, 60)]
    genuine = np.array([d for d, same in pairs if same])
    impostor = np.array([d for d, same in pairs if not same])
    assert (m.genuine_pairs, m.impostor_pairs) == (len(genuine), len(impostor))
    at = m.at_threshold
    assert at is not None
    assert (at.tar, at.far) == (np.mean(genuine <= 0.9), np.mean(impostor <= 0.9))
    accuracies = {
        t: (np.sum(genuine <= t) + np.sum(impostor > t)) / len(pairs) for t in np.unique(distances)
    }
    assert m.best.accuracy == pytest.approx(max(accuracies.values()))
    assert accuracies[m.best.threshold] == pytest.approx(m.best.accuracy)
    for target, point in m.tar_at_far:
        admissible = [t for t in np.unique(distances) if np.mean(impostor <= t) <= target]
        assert point.tar == np.mean(genuine <= max(admissible, default=-1.0))


def test_pairwise_distances_are_euclidean_symmetric_and_zero_on_the_diagonal() -> None:
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    distances = pairwise_distances(vectors)
    expected = np.linalg.norm(vectors[:, None].astype(np.float64) - vectors[None], axis=2)
    np.testing.assert_allclose(distances, expected, atol=1e-9)
    assert (distances == distances.T).all()
    assert (np.diag(distances) == 0).all()


# --- the LBPH baseline -----------------------------------------------------------------------


def test_lbph_distances_are_opencvs(lfw_faces: np.ndarray) -> None:
    """Our chi-square matrix equals ``compareHist(HISTCMP_CHISQR_ALT)``, and the nearest face
    it finds is the one OpenCV's own ``predict`` finds."""
    chips, labels = labelled_chips(lfw_faces[:6], LbphScorer.chip.size, per_identity=3)
    scorer = LbphScorer()
    histograms = scorer.features(chips)
    distances = scorer.distances(histograms)
    for i, j in [(0, 1), (0, 5), (4, 17), (9, 3)]:
        reference = cv2.compareHist(histograms[i], histograms[j], cv2.HISTCMP_CHISQR_ALT)
        assert distances[i, j] == pytest.approx(reference, rel=1e-6)
    gray = [cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY) for chip in chips]
    recognizer = cv2.face.LBPHFaceRecognizer_create()
    recognizer.train(gray[1:], np.arange(1, len(gray), dtype=np.int32))
    nearest, confidence = recognizer.predict(gray[0])
    assert nearest == 1 + int(np.argmin(distances[0, 1:]))
    assert confidence == pytest.approx(distances[0, nearest], rel=1e-6)
    assert labels[nearest] == labels[0]


def test_chi_square_handles_empty_histograms() -> None:
    histograms = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.25, 0.5, 0.25]], dtype=np.float32)
    # 2 * sum((a - b)^2 / (a + b)), empty bins skipped: rows 1, 2 give 2 * (1/12 + 0 + 1/4)
    expected = [[0, 2, 2], [2, 0, 2 / 3], [2, 2 / 3, 0]]
    np.testing.assert_allclose(chi_square_alt(histograms), expected, rtol=1e-6)
    opencv = [
        [cv2.compareHist(a, b, cv2.HISTCMP_CHISQR_ALT) for b in histograms] for a in histograms
    ]
    np.testing.assert_allclose(opencv, expected, rtol=1e-6)


def test_unknown_embedder_is_a_typed_error() -> None:
    with pytest.raises(FacerankError, match="unknown model"):
        load_scorer("no-such-model", SETTINGS)


# --- dataset ---------------------------------------------------------------------------------


def test_dataset_layout_rules(tmp_path: Path) -> None:
    for name in ["zoë/1.jpg", "zoë/holiday/2.jpg", "alice/b.png", "alice/a.png", "a|b/1.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("top-level file")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ignored")
    (tmp_path / "alice" / ".DS_Store").write_text("ignored")
    (tmp_path / "alice" / "loop").symlink_to(tmp_path / "alice")
    dataset = load_dataset(tmp_path)
    assert [(str(i.path.relative_to(tmp_path)), i.identity) for i in dataset.images] == [
        ("alice/a.png", "alice"),
        ("alice/b.png", "alice"),
        ("zoë/1.jpg", "zoë"),
        ("zoë/holiday/2.jpg", "zoë"),
    ]
    skipped = {s.path.name: s.code for s in dataset.skipped}
    assert skipped == {"a|b": "invalid_identity", "notes.txt": "not_in_identity_folder"}


@pytest.mark.parametrize("layout", ["missing", "file", "empty", "only-skipped"])
def test_unusable_dataset_folders_raise(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("not a folder")
    elif layout == "empty":
        root.mkdir()
    elif layout == "only-skipped":
        (root / "bad|name").mkdir(parents=True)
        (root / "bad|name" / "1.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=str(root)):
        load_dataset(root)


# --- whole runs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_dataset(tmp_path_factory: pytest.TempPathFactory, lfw_faces: np.ndarray) -> Path:
    root = write_face_dataset(tmp_path_factory.mktemp("faces") / "lfw-sample", lfw_faces)
    (root / "person-0" / "notes.jpg").write_text("not a photo")
    return root


def run_on(root: Path) -> EvaluationRun:
    return evaluate(
        load_dataset(root),
        [load_scorer("lbp-v0", SETTINGS), load_scorer("lbph", SETTINGS)],
        ["eyes", "box"],
        detectors={"haar": HaarFaceDetector()},
        threshold=0.6,
    )


@pytest.fixture(scope="module")
def face_run(face_dataset: Path) -> EvaluationRun:
    return run_on(face_dataset)


def test_run_scores_every_contender_on_the_same_faces(face_run: EvaluationRun) -> None:
    eyes, box = face_run.passes
    assert eyes.sources == box.sources  # detection is the same; only alignment differs
    assert eyes.images == len(DETECTABLE_FACES) * 4  # the text file is unreadable, not an image
    assert len(eyes.sources) == eyes.images
    [unreadable] = eyes.unreadable
    assert (unreadable.path.name, unreadable.code) == ("notes.jpg", "not_an_image")
    assert [(r.name, r.align) for r in face_run.results] == [
        ("lbp-v0", "eyes"),
        ("lbph", "eyes"),
        ("lbp-v0", "box"),
        ("lbph", "box"),
    ]
    for result in face_run.results:
        assert result.metrics.identities == len(DETECTABLE_FACES)
        assert result.metrics.rank1 >= 0.9  # re-shots of one face: wrong labels would give ~1/8
        assert result.faces_per_s > 0
        assert 0 < result.images_per_s < result.faces_per_s
        assert (result.metrics.at_threshold is None) == (result.name == "lbph")


def test_run_is_deterministic(face_dataset: Path, face_run: EvaluationRun) -> None:
    again = run_on(face_dataset)
    metrics = [[r.metrics.to_json() for r in run.results] for run in (face_run, again)]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_a_savedmodel_contender_gets_its_own_chip_layout(
    face_dataset: Path, tmp_path: Path
) -> None:
    """An exported model (150 px dlib chips) beside lbp-v0 (112 px): one detection pass
    serves both layouts, and the model's warm-up keeps graph tracing out of its throughput."""
    import tensorflow as tf

    from facerank.embedding.savedmodel import export_embedder

    class Pixels(tf.Module):
        """A training-free "embedding": the chip averaged over 10 px blocks."""

        def __call__(self, images: tf.Tensor) -> tf.Tensor:
            return tf.reshape(tf.nn.avg_pool2d(images, 10, 10, "VALID"), [-1, 15 * 15 * 3])

    model_dir = tmp_path / "pixels-1"
    export_embedder(Pixels(), model_dir, version="pixels-1", chip=DLIB_CHIP_150)
    run = evaluate(
        load_dataset(face_dataset),
        [load_scorer("lbp-v0", SETTINGS), load_scorer(str(model_dir), SETTINGS)],
        ["eyes"],
        detectors={"haar": HaarFaceDetector()},
        threshold=0.6,
    )
    [detection] = run.passes
    assert {spec.size for spec in detection.chips} == {112, 150}
    lbp, pixels = run.results
    assert (pixels.name, pixels.model_version) == (str(model_dir), "pixels-1")
    assert pixels.metrics.faces == lbp.metrics.faces == len(detection.sources)
    assert pixels.metrics.rank1 > 0.5
    assert pixels.metrics.at_threshold is not None
    assert "| pixels-1 | eyes | haar |" in markdown(run)


def test_report_files(face_run: EvaluationRun, tmp_path: Path) -> None:
    files = write_report(face_run, tmp_path / "out")
    text = files.markdown.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# facerank eval: lfw-sample"
    assert lines[2].startswith("| embedder | align | detector | faces | rank-1 | rank-5 |")
    assert lines[4].startswith("| lbp-v0 | eyes | haar | 32/32 |")
    assert "- person-0/notes.jpg: not_an_image: " in text
    report = json.loads(files.json.read_text(encoding="utf-8"))
    assert report == json.loads(json.dumps(report_json(face_run)))
    assert [r["embedder"] for r in report["results"]] == ["lbp-v0", "lbph", "lbp-v0", "lbph"]
    hardest = report["results"][0]["metrics"]["worst_probes"][0]
    assert hardest["probe"].startswith(hardest["identity"] + "/")
    assert (face_run.dataset.root / hardest["genuine"]["path"]).is_file()
    roc = report["results"][0]["roc"]
    assert roc["far"] == sorted(roc["far"])
    assert roc["tar"] == sorted(roc["tar"])
    assert files.roc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(files.roc)).shape[:2] == (600, 840)


def test_hostile_names_cannot_break_the_reports(tmp_path: Path, lfw_faces: np.ndarray) -> None:
    root = write_face_dataset(tmp_path / "data $x$", lfw_faces, faces=(0, 1), shots=2)
    (root / "person-0" / "1.png").rename(root / "person-0" / "a|b\n<i>x.png")
    raw = os.fsencode(root / "person-1") + b"/\xff\xfe.jpg"
    os.rename(os.fsencode(root / "person-1" / "0.jpg"), raw)
    (root / "<script>").mkdir()
    (root / "bad\nname").mkdir()
    run = evaluate(
        load_dataset(root),
        [load_scorer("lbp-v0", SETTINGS)],
        ["eyes"],
        detectors={"haar": HaarFaceDetector()},
        threshold=0.6,
    )
    files = write_report(run, tmp_path / "out")
    text = files.markdown.read_text(encoding="utf-8")
    assert "a\\|b\\n&lt;i&gt;x.png" in text
    assert "person-1/\\udcff\\udcfe.jpg" in text
    assert "- &lt;script&gt;: invalid_identity: " in text
    assert "<i>" not in text
    assert "<script>" not in text
    cells = [line.count(" | ") for line in text.splitlines() if line.startswith("|")]
    assert all(line.endswith(" |") for line in text.splitlines() if line.startswith("|"))
    assert cells[:3] == [11, 11, 11]  # the summary table: 12 columns
    assert cells[-6:] == [3] * 6  # the hardest probes: 4 columns, all 4 faces listed
    report = json.loads(files.json.read_bytes().decode("utf-8"))
    assert {s["code"] for s in report["dataset"]["skipped"]} == {"invalid_identity"}
    assert markdown(run) == text


def test_a_set_without_faces_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "grey").mkdir()
    (tmp_path / "grey" / "1.png").write_bytes(encode(np.full((120, 120, 3), 128, np.uint8)))
    (tmp_path / "grey" / "2.txt").write_text("text")
    with pytest.raises(EvaluationError, match="no face found in any of the 1 readable images"):
        run_on(tmp_path)
