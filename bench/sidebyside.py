"""Side-by-side timing whose ratios carry their own noise.

A ratio from one pair of medians hides how much it moves between runs: on a shared 2-core
machine the same call varies by tens of percent, and a 1.2x "speed-up" can be that noise.
So every repeat times both contenders back to back, in alternating order (ABBA: a contender
is never always first, when caches are cold, or always second, when a neighbour's job has
woken up), and yields one ratio per repeat. The figure reported is the median ratio with its
interquartile range (its whole range under 4 repeats); where that range includes 1.0, the
honest verdict is "no measurable difference", and that is what the benchmarks print and write.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

NO_DIFFERENCE = "no measurable difference"


@dataclass(frozen=True)
class Ratio:
    """``baseline / ours`` per repeat (above 1: ours is faster), summarised."""

    median: float
    low: float
    """25th percentile of the per-repeat ratios (the smallest, with fewer than 4 repeats)."""
    high: float
    """75th percentile (the largest, with fewer than 4 repeats)."""
    repeats: int

    @classmethod
    def of(cls, ours: Sequence[float], baseline: Sequence[float]) -> Ratio:
        """From paired samples (seconds, or any cost where less is better)."""
        ratios = sorted(b / o for o, b in zip(ours, baseline, strict=True))
        if len(ratios) < 4:  # too few for quartiles: the whole range, which is stricter
            return cls(statistics.median(ratios), ratios[0], ratios[-1], len(ratios))
        low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return cls(statistics.median(ratios), low, high, len(ratios))

    @property
    def verdict(self) -> str:
        """``"1.85x (1.70-1.97)"``, or :data:`NO_DIFFERENCE` when the range includes 1.0."""
        if self.low <= 1.0 <= self.high:
            return NO_DIFFERENCE
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"

    def to_json(self) -> dict[str, Any]:
        return {
            "ratio": self.median,
            "ratio_iqr": [self.low, self.high],
            "repeats": self.repeats,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Timing:
    """Median seconds of each contender and the ratio of their paired repeats."""

    ours_s: float
    baseline_s: float
    ratio: Ratio


def time_pair(ours: Callable[[], object], baseline: Callable[[], object], repeat: int) -> Timing:
    """Time both ``repeat`` times, alternating which goes first, after one warm-up call each."""
    ours()
    baseline()
    samples: dict[str, list[float]] = {"ours": [], "baseline": []}
    contenders = {"ours": ours, "baseline": baseline}
    for r in range(repeat):
        for name in ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours"):
            start = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - start)
    return Timing(
        statistics.median(samples["ours"]),
        statistics.median(samples["baseline"]),
        Ratio.of(samples["ours"], samples["baseline"]),
    )
