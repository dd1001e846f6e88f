"""A fuzz run of a few minutes over the decoder and the request parsers.

    .venv/bin/python bench/fuzz.py --minutes 3 [--examples 1000]
    .venv/bin/python -m bench.fuzz --minutes 3

The suite runs the property tests of ``tests/test_decode_fuzz.py`` (untrusted image bytes) and
``tests/test_hostile_parsers.py`` (CloudEvents, event data and the enroll handler, MinIO and
SNS notifications, predictor V1 and V2 bodies, keys and identities) with a few hundred examples
each, to stay fast. This runs the same tests round after round, each round with ``--examples``
examples per test and a fresh seed, until ``--minutes`` are spent (the last round may run over
by up to one round), and stops at the first failure. Hypothesis keeps every failing example in
``.hypothesis/`` and replays it first in later runs, the suite's included, so a crash found
here becomes a regression test by itself.

Prints one line per round and writes ``bench/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "fuzz.json"
TARGETS = ("tests/test_decode_fuzz.py", "tests/test_hostile_parsers.py")
_SUMMARY = re.compile(r"(\d+) (passed|failed|error)")
_PASSING = re.compile(r"(\d+) passing")
"""Hypothesis' own count of the examples a test ran (``--hypothesis-show-statistics``)."""


@dataclass(frozen=True)
class Round:
    seed: int
    counts: dict[str, int]
    """pytest's outcome counts: ``passed``, ``failed``, ``error``."""
    examples: int
    """Examples hypothesis ran, summed over the tests (fewer than asked where a strategy has
    fewer distinct values)."""
    seconds: float

    @property
    def tests(self) -> int:
        return sum(self.counts.values())

    @property
    def clean(self) -> bool:
        return self.counts.get("passed", 0) == self.tests > 0


def run_round(seed: int, examples: int) -> tuple[Round, str]:
    """One pytest run of every target with ``examples`` per test; the round and its output."""
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603 - our own interpreter running our own tests
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            f"--hypothesis-seed={seed}",
            "--hypothesis-show-statistics",
            "--timeout=0",
            *TARGETS,
        ],
        cwd=ROOT,
        env={**os.environ, "FACERANK_FUZZ_EXAMPLES": str(examples)},
        capture_output=True,
        text=True,
        check=False,
    )
    last = result.stdout.splitlines()[-1] if result.stdout else ""
    counts = {kind: int(n) for n, kind in _SUMMARY.findall(last)}
    examples = sum(int(n) for n in _PASSING.findall(result.stdout))
    return Round(seed, counts, examples, time.monotonic() - started), result.stdout[-4000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="time budget (default 3)")
    parser.add_argument(
        "--examples", type=int, default=1000, help="examples per test and round (default 1000)"
    )
    args = parser.parse_args()
    deadline = time.monotonic() + args.minutes * 60
    rounds: list[Round] = []
    failure = ""
    seed = int(time.time())
    while time.monotonic() < deadline and not failure:
        done, output = run_round(seed + len(rounds), args.examples)
        rounds.append(done)
        print(
            f"round {len(rounds)}: seed {done.seed}, {done.tests} tests, {done.examples} "
            f"examples, {done.seconds:.0f} s, {done.counts}",
            flush=True,
        )
        if not done.clean:
            failure = output
    examples = sum(r.examples for r in rounds)
    spent = sum(r.seconds for r in rounds)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "targets": list(TARGETS),
        "examples_per_test_and_round": args.examples,
        "rounds": [asdict(r) for r in rounds],
        "examples": examples,
        "seconds": spent,
        "examples_per_s": examples / spent if spent else 0.0,
        "failed": bool(failure),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{len(rounds)} round(s), {examples} examples in {spent:.0f} s; wrote {RESULTS}")
    if failure:
        print(failure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
