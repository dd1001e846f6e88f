"""LFW's pairs protocol in-process: the pairs-file parser, the threshold fit and the folds on
hand-computed distances, pair distances against the all-pairs ones, and whole runs on a
generated LFW-style folder (faces scikit-image ships, a non-face image, a missing file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facerank.evaluation.baselines import (
    EmbedderScorer,
    chi_square_alt,
    chi_square_alt_pairs,
    load_scorer,
)
from facerank.evaluation.errors import EvaluationError, PairsFileError
from facerank.evaluation.metrics import pairwise_distances
from facerank.evaluation.pairs import ImageRef, PairsFile, parse_pairs, read_pairs
from facerank.evaluation.pairs_run import PairsRun, evaluate_pairs
from facerank.evaluation.run import pick_face
from facerank.evaluation.verification import fit_threshold, score_at, verify
from facerank.faces import Detection, HaarFaceDetector
from facerank.faces.find import FoundFace
from facerank.settings import Settings
from tests.plugins.faces import DETECTABLE_FACES, encode, face_shot, variant

SETTINGS = Settings.from_env({})

PEOPLE = tuple(f"Person_{chr(ord('A') + i)}" for i in range(len(DETECTABLE_FACES)))
"""One LFW-style name per detectable ``lfw_subset`` face, three photos each."""
ASTRONAUT = "Eileen_Collins"
NOT_A_FACE = "Grey_Wall"
MISSING = "Nobody_Here"


def write_lfw_folder(root: Path, lfw_faces: np.ndarray, astronaut: np.ndarray) -> Path:
    """``root/<name>/<name>_<NNNN>.jpg`` as LFW lays its images out: three shots of each of
    :data:`PEOPLE`, two of the astronaut, one textured image with no face, and no
    ``Nobody_Here`` folder at all."""
    rng = np.random.default_rng(0)
    shots: dict[str, list[np.ndarray]] = {
        name: [face_shot(lfw_faces[face], rng, flip=False) for _ in range(3)]
        for name, face in zip(PEOPLE, DETECTABLE_FACES, strict=True)
    }
    shots[ASTRONAUT] = [variant(astronaut, rng) for _ in range(2)]
    wall = rng.normal(128, 20, (250, 250, 3)).clip(0, 255).astype(np.uint8)
    shots[NOT_A_FACE] = [wall]
    for name, images in shots.items():
        (root / name).mkdir(parents=True)
        for number, pixels in enumerate(images, 1):
            (root / name / f"{name}_{number:04d}.jpg").write_bytes(encode(pixels, "JPEG"))
    return root


def pairs_text(matched: list[str], mismatched: list[str]) -> str:
    return f"{len(matched)}\t{len(mismatched)}\n" + "".join(
        f"{line}\n" for line in [*matched, *mismatched]
    )


TEST_MATCHED = [f"{name}\t1\t{n}" for name in PEOPLE[:4] for n in (2, 3)] + [f"{ASTRONAUT}\t1\t2"]
TEST_MISMATCHED = [
    f"{PEOPLE[i]}\t{1 + i % 3}\t{PEOPLE[(i + 1) % 4]}\t{1 + (i + 1) % 3}" for i in range(4)
] + [f"{ASTRONAUT}\t1\t{PEOPLE[0]}\t1", f"{ASTRONAUT}\t2\t{PEOPLE[2]}\t3"]
TRAIN_MATCHED = [f"{name}\t{a}\t{b}" for name in PEOPLE[4:] for a, b in ((1, 2), (2, 3))]
TRAIN_MISMATCHED = [
    f"{PEOPLE[4 + i]}\t{1 + i % 3}\t{PEOPLE[4 + (i + j) % 4]}\t{1 + j}"
    for i in range(4)
    for j in (1, 2)
]
MISSED_PAIRS = [f"{NOT_A_FACE}\t1\t{PEOPLE[0]}\t1", f"{MISSING}\t1\t{PEOPLE[1]}\t2"]
"""Mismatched pairs that name an image without a face and a file that does not exist."""


@pytest.fixture(scope="module")
def lfw_folder(
    tmp_path_factory: pytest.TempPathFactory, lfw_faces: np.ndarray, astronaut: np.ndarray
) -> Path:
    return write_lfw_folder(tmp_path_factory.mktemp("lfw") / "images", lfw_faces, astronaut)


def parse(text: str, name: str = "pairs.txt") -> PairsFile:
    return parse_pairs(text, Path(name))


def run_pairs(
    images: Path,
    test: PairsFile,
    train: PairsFile | None = None,
    *,
    scorers: tuple[str, ...] = ("lbp-v0",),
    threshold: float | None = None,
) -> PairsRun:
    return evaluate_pairs(
        images,
        test,
        train,
        [load_scorer(name, SETTINGS) for name in scorers],
        ["box"],
        detectors={"haar": HaarFaceDetector()},
        threshold=threshold,
    )


# --- the pairs file ------------------------------------------------------------------------


def test_a_single_set_with_one_count_as_lfw_publishes_view_1() -> None:
    pairs = parse("2\nAaron_Guiel\t1\t2\nB 1 3\nAaron_Guiel 1 B 1\nC 2 D 13\n")
    assert not pairs.cross_validation
    [fold] = pairs.folds
    assert [(p.same, p.line) for p in fold] == [(True, 2), (True, 3), (False, 4), (False, 5)]
    assert fold[0].left.relative == Path("Aaron_Guiel/Aaron_Guiel_0001.jpg")
    assert fold[3].right == ImageRef("D", 13)
    assert fold[3].right.relative == Path("D/D_0013.jpg")
    assert pairs.images == tuple(
        sorted(
            {ImageRef("Aaron_Guiel", 1), ImageRef("Aaron_Guiel", 2), ImageRef("B", 1)}
            | {ImageRef("B", 3), ImageRef("C", 2), ImageRef("D", 13)}
        )
    )


def test_matched_and_mismatched_counts_with_blank_lines_and_crlf() -> None:
    pairs = parse("2\t1\r\nA\t1\t2\r\n\r\nB\t1\t3\r\nA\t1\tB\t1\r\n\r\n")
    assert [[p.same for p in fold] for fold in pairs.folds] == [[True, True, False]]
    assert [p.line for p in pairs.pairs] == [2, 4, 5]


def test_ten_fold_layout_as_view_2() -> None:
    """``F P``: F folds of P matched then P mismatched pairs (View 2's ``10 300``)."""
    folds, per = 3, 2
    lines = []
    for k in range(folds):
        lines += [f"M{k} 1 {n}" for n in (2, 3)] + [f"M{k} 1 X{k} {n}" for n in (1, 2)]
    pairs = parse(f"{folds} {per}\n" + "\n".join(lines) + "\n")
    assert pairs.cross_validation
    assert [[(p.same, p.left.name) for p in fold] for fold in pairs.folds] == [
        [(True, f"M{k}"), (True, f"M{k}"), (False, f"M{k}"), (False, f"M{k}")] for k in range(folds)
    ]
    # "1 1" fits both layouts, which then describe the same two pairs
    assert len(parse("1 1\nA 1 2\nA 1 B 1\n").folds) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "pairs.txt is empty"),
        ("\n\n", "pairs.txt is empty"),
        ("x\n", "pairs.txt line 1: expected the pair counts"),
        ("1 2 3\n", "line 1: expected the pair counts"),
        ("0 0\n", "line 1: the file announces no pairs"),
        ("2\nA 1 2\n", "the counts announce 4 pair lines (2 matched, then 2 mismatched), but 1"),
        ("2 3\nA 1 2\n", "announce 5 pair lines (2 matched, then 3 mismatched) or 12 (2 folds"),
        ("1 1\nA 1 B 2\nA 1 2\n", "pairs.txt line 2: expected a matched pair 'name n1 n2'"),
        ("1 1\nA 1 2\nA 1 2\n", "line 3: expected a mismatched pair 'name1 n1 name2 n2' here"),
        ("1 1\nA 1 2 3 4 5\nA 1 B 2\n", "line 2: expected a matched pair 'name n1 n2' here, got 6"),
        ("1 1\nA 1 x\nA 1 B 2\n", "line 2: image number 'x' is not a positive integer"),
        ("1 1\nA 0 1\nA 1 B 2\n", "line 2: image number '0' is not a positive integer"),
        ("1 1\nA 1 2\nA 1 B -2\n", "line 3: image number '-2' is not"),
        ("1 1\n../etc 1 2\nA 1 B 1\n", "line 2: '../etc' is not a person's folder name"),
        ("1 1\nA 1 2\n.git 1 B 1\n", "line 3: '.git' is not a person's folder name"),
        ("1 1\nA 1 1\nA 1 B 1\n", "line 2: a matched pair of one image with itself"),
        ("1 1\nA 1 2\nA 1 A 2\n", "line 3: a mismatched pair of one person (A)"),
        # 2 folds of 1 + 1: line 4 opens the second fold and must be a matched pair
        ("2 1\nA 1 2\nB 1 C 1\nD 1 E 1\nF 1 2\n", "line 4: expected a matched pair"),
    ],
)
def test_malformed_pairs_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PairsFileError) as caught:
        parse(text)
    assert message in str(caught.value)
    assert caught.value.code == "invalid_pairs_file"


def test_unreadable_pairs_files(tmp_path: Path) -> None:
    with pytest.raises(PairsFileError, match=r"cannot read pairs file .*missing\.txt"):
        read_pairs(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"1 1\nJos\xe9 1 2\nA 1 B 1\n")
    with pytest.raises(PairsFileError, match=r"latin1\.txt is not UTF-8 text"):
        read_pairs(tmp_path / "latin1.txt")
    (tmp_path / "ok.txt").write_text("1 1\nJosé 1 2\nA 1 B 1\n", encoding="utf-8")
    assert read_pairs(tmp_path / "ok.txt").pairs[0].left.name == "José"


# --- threshold fit and folds: hand-computed -----------------------------------------------


def test_fit_threshold_picks_the_lowest_best_interval_and_its_middle() -> None:
    # Accuracy by threshold: <0.2: 3/5, 0.2: 4/5, 0.4: 3/5, 0.5: 4/5, 0.6: 3/5, 0.9: 2/5. The
    # best (4/5) is first reached at 0.2, and holds until the next distance, 0.4.
    distances = np.array([0.2, 0.5, 0.4, 0.6, 0.9])
    same = np.array([True, True, False, False, False])
    assert fit_threshold(distances, same) == pytest.approx(0.3)
    # missed pairs (NaN) are wrong at any threshold, so they do not move the fit
    with_missed = np.append(distances, [np.nan, np.nan])
    assert fit_threshold(with_missed, np.append(same, [True, False])) == pytest.approx(0.3)
    # separable: halfway between the farthest genuine and the nearest impostor pair
    separable = np.array([True, True, False, False])
    assert fit_threshold(np.array([0.1, 0.3, 0.7, 0.8]), separable) == pytest.approx(0.5)
    # every impostor closer than every genuine pair: accepting nothing is best
    assert fit_threshold(np.array([0.9, 0.1]), np.array([True, False])) < 0.1


def test_fit_threshold_needs_both_kinds_of_found_pair() -> None:
    with pytest.raises(EvaluationError, match="0 matched and 2 mismatched"):
        fit_threshold(np.array([0.3, 0.4, np.nan]), np.array([False, False, True]))


def test_a_missed_pair_is_wrong_at_any_threshold() -> None:
    distances = np.array([0.1, np.nan, 0.3, 0.7])
    same = np.array([True, True, False, False])
    score = score_at(distances, same, 0.35)  # 0.1 accepted: right; 0.3 accepted: wrong
    assert (score.pairs, score.found, score.correct) == (4, 3, 2)
    assert score.accuracy == 0.5
    assert score.found_accuracy == pytest.approx(2 / 3)
    assert score_at(distances, same, 5.0).correct == 1  # the missed genuine pair stays wrong


def test_cross_validation_fits_each_fold_on_the_others() -> None:
    # fold 0: genuine 0.1 and a missed genuine pair, impostor 0.5; fold 1: genuine 0.3,
    # impostor 0.35; fold 2: genuine 0.45, impostor 0.9.
    distances = np.array([0.1, np.nan, 0.5, 0.3, 0.35, 0.45, 0.9])
    same = np.array([True, True, False, True, False, True, False])
    fold = np.array([0, 0, 0, 1, 1, 2, 2])
    result = verify(distances, same, fold, threshold=None, source="folds")
    # without fold 0: 0.3 g, 0.35 i, 0.45 g, 0.9 i: best 3/4 first at 0.3 -> 0.325
    # without fold 1: separable, 0.45 g < 0.5 i -> 0.475
    # without fold 2: 0.1 g, 0.3 g, 0.35 i, 0.5 i: best at 0.3 -> 0.325
    assert [f.threshold for f in result.folds] == pytest.approx([0.325, 0.475, 0.325])
    # fold 0: both found pairs right, the missed one wrong; fold 1: 0.35 <= 0.475 accepted,
    # wrong; fold 2: 0.45 > 0.325 rejected, wrong
    assert [(f.correct, f.pairs, f.found) for f in result.folds] == [
        (2, 3, 2),
        (1, 2, 2),
        (1, 2, 2),
    ]
    accuracies = [2 / 3, 1 / 2, 1 / 2]
    assert result.accuracy == pytest.approx(np.mean(accuracies))
    assert result.accuracy_std == pytest.approx(np.std(accuracies))
    assert result.found_accuracy == pytest.approx(np.mean([1, 1 / 2, 1 / 2]))
    assert (result.pairs, result.found, result.genuine_found, result.impostor_found) == (7, 6, 3, 3)
    # TAR at FAR on the found pairs pooled: no false accept allowed of 3 -> accept up to 0.3
    [(target, point), _] = result.tar_at_far
    assert (target, point.threshold, point.tar, point.far) == (0.01, 0.3, pytest.approx(2 / 3), 0.0)


def test_a_given_threshold_scores_all_pairs_as_one_fold() -> None:
    distances, same = np.array([0.2, 0.6, 0.4, 0.8]), np.array([True, True, False, False])
    result = verify(distances, same, np.zeros(4), threshold=0.7, source="given")
    [fold] = result.folds  # 0.2 and 0.6 accepted, right; 0.4 accepted, wrong; 0.8 rejected
    assert (fold.threshold, fold.correct) == (0.7, 3)
    assert result.accuracy_std is None
    none = verify(distances, same, np.zeros(4), threshold=None, source="none")
    assert (none.folds, none.accuracy, none.found_accuracy) == ((), None, None)
    assert none.tar_at_far  # still measured: it needs no threshold
    with pytest.raises(EvaluationError, match="no test pairs"):
        verify(np.array([]), np.array([], bool), np.array([]), threshold=0.5, source="")


def test_which_face_of_an_image_with_several() -> None:
    """Largest first, as detectors report; ``primary`` weighs size against distance from the
    centre, as the product enrolls; ``centre`` picks the box nearest the image centre (LFW
    centres its subject), the larger one on a tie."""
    corner = FoundFace(Detection(box=(0, 0, 120, 120), confidence=0.9), None)
    central = FoundFace(Detection(box=(130, 60, 60, 60), confidence=0.9), None)  # at (160, 90)
    mirrored = FoundFace(Detection(box=(170, 60, 60, 60), confidence=0.9), None)  # at (200, 90)
    shape = (180, 360, 3)  # image centre (180, 90): both small boxes 20 px off
    assert pick_face([corner, central, mirrored], shape, "largest") is corner
    assert pick_face([corner, central, mirrored], shape, "primary") is central
    assert pick_face([corner, central, mirrored], shape, "centre") is central
    assert pick_face([corner, mirrored, central], shape, "centre") is mirrored


# --- pair distances ------------------------------------------------------------------------


def test_pair_distances_are_the_all_pairs_ones() -> None:
    rng = np.random.default_rng(1)
    left, right = np.array([0, 3, 5, 2]), np.array([1, 1, 0, 4])
    vectors = rng.normal(size=(6, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scorer = EmbedderScorer("lbp-v0", load_scorer("lbp-v0", SETTINGS).embedder)
    assert scorer.pair_distances(vectors, left, right) == pytest.approx(
        pairwise_distances(vectors)[left, right], abs=1e-12
    )
    histograms = (rng.random((6, 300)) < 0.2) * rng.integers(1, 9, (6, 300))
    histograms[2] = 0  # an empty histogram
    reference = chi_square_alt(histograms)[left, right]
    assert chi_square_alt_pairs(histograms, left, right, chunk=3) == pytest.approx(reference)


# --- whole runs on a generated LFW folder -------------------------------------------------


def test_train_and_test_pairs(lfw_folder: Path) -> None:
    test = parse(pairs_text(TEST_MATCHED, TEST_MISMATCHED), "test.txt")
    train = parse(pairs_text(TRAIN_MATCHED, TRAIN_MISMATCHED), "train.txt")
    run = run_pairs(lfw_folder, test, train, scorers=("lbp-v0", "lbph"))
    assert len(run.dataset.images) == len(PEOPLE) * 3 + 2
    assert len(run.test_images) == 4 * 3 + 2
    [detection] = run.passes
    assert (detection.detector, detection.align) == ("haar", "box")
    assert run.missed(detection) == []
    for result in run.results:
        v = result.verification
        assert v.threshold_source == "fitted on train.txt"
        assert (v.pairs, v.found) == (len(TEST_MATCHED) + len(TEST_MISMATCHED),) * 2
        assert v.accuracy == v.found_accuracy >= 0.8  # re-shots of one face vs other faces
        [fold] = v.folds
        assert 0 < fold.threshold < (2 if result.unit_distances else np.inf)


def test_a_missed_face_counts_as_a_wrong_pair(lfw_folder: Path) -> None:
    """The same pairs plus two whose image has no face (a textured wall, a missing file): both
    are wrong, so accuracy drops to the same correct count over two more pairs, while the
    accuracy on pairs with both faces found does not move."""
    base = run_pairs(lfw_folder, parse(pairs_text(TEST_MATCHED, TEST_MISMATCHED)), threshold=0.6)
    more = parse(pairs_text(TEST_MATCHED, TEST_MISMATCHED + MISSED_PAIRS))
    missed = run_pairs(lfw_folder, more, threshold=0.6)
    [before], [after] = base.results, missed.results
    b, a = before.verification, after.verification
    assert (
        b.threshold_source
        == a.threshold_source
        == "given (--threshold or FACERANK_MATCH_THRESHOLD)"
    )
    assert b.found == b.pairs  # every face found before
    assert (a.pairs, a.found) == (b.pairs + 2, b.found)
    assert a.folds[0].correct == b.folds[0].correct
    assert a.accuracy == pytest.approx(b.folds[0].correct / (b.pairs + 2))
    assert a.accuracy < b.accuracy
    assert a.found_accuracy == b.found_accuracy
    [detection] = missed.passes
    names = [missed.dataset.images[i].path.name for i in missed.missed(detection)]
    assert names == [f"{NOT_A_FACE}_0001.jpg", f"{MISSING}_0001.jpg"]
    [unreadable] = detection.unreadable
    assert (unreadable.path.name, unreadable.code) == (f"{MISSING}_0001.jpg", "unreadable_file")


def test_the_models_own_threshold_without_training_pairs(lfw_folder: Path) -> None:
    run = run_pairs(
        lfw_folder, parse(pairs_text(TEST_MATCHED, TEST_MISMATCHED)), scorers=("lbp-v0", "lbph")
    )
    lbp, lbph = (r.verification for r in run.results)
    assert lbp.threshold_source == "the model's own calibrated match threshold"
    assert lbp.folds[0].threshold == load_scorer("lbp-v0", SETTINGS).match_threshold
    assert lbph.threshold_source.startswith("none: lbph has no calibrated threshold")
    assert lbph.accuracy is None


def test_a_fold_file_is_cross_validated(lfw_folder: Path) -> None:
    matched, mismatched = TEST_MATCHED[:6], TEST_MISMATCHED[:3] + TRAIN_MISMATCHED[:3]
    lines = [
        line
        for k in range(3)
        for line in (*matched[2 * k : 2 * k + 2], *mismatched[2 * k : 2 * k + 2])
    ]
    run = run_pairs(lfw_folder, parse("3 2\n" + "\n".join(lines)))
    [result] = run.results
    v = result.verification
    assert v.threshold_source == "fitted on the other 2 folds, fold by fold"
    assert len(v.folds) == 3
    assert all(fold.pairs == 4 for fold in v.folds)
    assert v.accuracy_std is not None
    with pytest.raises(ValueError, match="takes no training pairs"):
        run_pairs(lfw_folder, run.test, run.test)


def test_no_face_in_any_image_is_a_typed_error(lfw_folder: Path) -> None:
    only_wall = parse(f"0 1\n{NOT_A_FACE} 1 {MISSING} 1\n")
    with pytest.raises(EvaluationError, match="no face found in any of the 1 readable images"):
        run_pairs(lfw_folder, only_wall)
