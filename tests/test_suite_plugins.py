"""The suite's own switches: strict mode fails a skip, ``--order`` runs tests in another order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SKIPPING = """
import pytest

def test_skips_for_a_missing_part():
    pytest.skip("no kubectl")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
"""


def test_strict_mode_turns_a_skip_into_a_failure_with_its_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_part=SKIPPING)
    monkeypatch.setenv("FACERANK_TEST_STRICT", "1")
    result = pytester.runpytest("-p", "tests.plugins.strict")
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*FACERANK_TEST_STRICT=1 makes this skip a failure*no kubectl*"])


def test_strict_mode_fails_a_module_that_skips_at_import(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_part="import pytest\npytest.importorskip('no_such_module')\n")
    monkeypatch.setenv("FACERANK_TEST_STRICT", "1")
    result = pytester.runpytest("-p", "tests.plugins.strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*makes this skip a failure*no_such_module*"])


def test_without_strict_mode_a_skip_stays_a_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_part=SKIPPING)
    monkeypatch.delenv("FACERANK_TEST_STRICT", raising=False)
    pytester.runpytest("-p", "tests.plugins.strict").assert_outcomes(skipped=1, xfailed=1)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("file", ["test_a.py::test_1", "test_a.py::test_2", "test_b.py::test_1"]),
        ("reverse", ["test_b.py::test_1", "test_a.py::test_2", "test_a.py::test_1"]),
    ],
)
def test_order_option_reverses_modules_and_tests(
    pytester: pytest.Pytester, order: str, expected: list[str]
) -> None:
    pytester.makepyfile(
        test_a="def test_1(): pass\ndef test_2(): pass\n", test_b="def test_1(): pass\n"
    )
    result = pytester.runpytest("-p", "tests.plugins.order", "--order", order, "-v")
    passed = [line.split(" ")[0] for line in result.outlines if " PASSED" in line]
    assert passed == expected


def test_shuffle_keeps_modules_together_and_replays_from_its_seed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_a="".join(f"def test_{i}(): pass\n" for i in range(6)),
        test_b="".join(f"def test_{i}(): pass\n" for i in range(6)),
    )

    def run() -> list[str]:
        result = pytester.runpytest("-p", "tests.plugins.order", "--order", "shuffle:7", "-v")
        result.stdout.fnmatch_lines(["order: shuffle:7"])
        return [line.split(" ")[0] for line in result.outlines if " PASSED" in line]

    first = run()
    assert first == run()
    assert sorted(first) != first  # seed 7 does move them
    modules = [name.split("::")[0] for name in first]
    assert modules == sorted(modules, key=modules.index)  # each module's tests together


@pytest.fixture
def importable_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pytest subprocess (and its xdist workers) can import ``tests.plugins``: ``make test``
    puts no repository path on ``PYTHONPATH``, pytest's own rootdir insertion reaches only the
    process it runs in."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), path])))


@pytest.mark.usefixtures("importable_plugins")
def test_under_xdist_reverse_hands_out_modules_in_reverse(pytester: pytest.Pytester) -> None:
    """xdist hands out the module with the most tests first unless an order is asked for: one
    worker then runs test_b (one test) before test_a (two), as without xdist."""
    pytester.makepyfile(
        test_a="def test_1(): pass\ndef test_2(): pass\n", test_b="def test_1(): pass\n"
    )
    args = ("-p", "tests.plugins.order", "-n", "1", "--dist", "loadfile", "-v")
    ran = {}
    for order in ("file", "reverse"):
        result = pytester.runpytest_subprocess(*args, "--order", order)
        result.assert_outcomes(passed=3)
        ran[order] = [line.split()[-1] for line in result.outlines if " PASSED " in line]
    assert ran["file"] == ["test_a.py::test_1", "test_a.py::test_2", "test_b.py::test_1"]
    assert ran["reverse"] == ["test_b.py::test_1", "test_a.py::test_2", "test_a.py::test_1"]


@pytest.mark.usefixtures("importable_plugins")
def test_under_xdist_every_worker_shuffles_with_the_controllers_seed(
    pytester: pytest.Pytester,
) -> None:
    """Without a seed each process would draw its own and the workers' collections differ,
    which xdist refuses to run."""
    pytester.makepyfile(
        test_a="".join(f"def test_{i}(): pass\n" for i in range(6)),
        test_b="".join(f"def test_{i}(): pass\n" for i in range(6)),
    )
    result = pytester.runpytest_subprocess(
        "-p", "tests.plugins.order", "-n", "2", "--dist", "loadfile", "--order", "shuffle"
    )
    result.assert_outcomes(passed=12)
    result.stdout.no_fnmatch_line("*Different tests collected*")
