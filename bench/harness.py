"""Shared measurement types and timing helpers for the benchmark scenarios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """One row of a scenario table: our figure against named baselines from the same run.

    `ratios` always holds ours / baseline; `lower_is_better` says how to read it
    (times: below 1 is better; throughputs: above 1 is better).
    """

    scenario: str
    name: str
    unit: str
    ours: float
    baselines: dict[str, float] = field(default_factory=dict)
    lower_is_better: bool = True
    goal: str = ""
    goal_met: bool | None = None
    notes: str = ""

    @property
    def ratios(self) -> dict[str, float]:
        return {k: (self.ours / v if v else float("inf")) for k, v in self.baselines.items()}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = self.ratios
        return data


def time_per_call(fn: Callable[[], object], *, min_time: float = 0.2, repeat: int = 5) -> float:
    """Median seconds per call of `fn`, calibrated so each sample runs at least `min_time`."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 4 or n >= 1 << 24:
            break
        n *= 4
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n)
    return statistics.median(samples)


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
