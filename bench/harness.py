"""Shared measurement types and timing helpers for the benchmark scenarios."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _finite(value: float | None) -> float | None:
    """`value` if it is a finite number, else None (JSON has no inf/nan)."""
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Measurement:
    """One row of a scenario table: our figure against named baselines from the same run.

    `baselines` maps a name (a peer, the physical limit, the design we replace) to its figure
    in the same unit, or to None when it could not be measured in this run (`notes` says
    why). `ratios` always holds ours / baseline; `lower_is_better` says how to read it
    (times: below 1 is better; throughputs: above 1 is better).
    """

    scenario: str
    name: str
    unit: str
    ours: float
    baselines: dict[str, float | None] = field(default_factory=dict)
    lower_is_better: bool = True
    goal: str = ""
    goal_met: bool | None = None
    notes: str = ""

    @property
    def ratios(self) -> dict[str, float | None]:
        """ours / baseline per baseline; None where the baseline is missing or zero."""
        return {
            k: (_finite(self.ours / v) if v else None) if v is not None else None
            for k, v in self.baselines.items()
        }

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-safe values (inf/nan become null), with its ratios."""
        data = asdict(self)
        data["ours"] = _finite(self.ours)
        data["baselines"] = {k: _finite(v) for k, v in self.baselines.items()}
        data["ratios"] = self.ratios
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        """A row read back from `to_json` output (extra keys such as `ratios` ignored)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if values.get("ours") is None:
            values["ours"] = float("nan")
        return cls(**values)


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


def fastest_in_turns(timers: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """The fewest seconds each timer took over `rounds` rounds, run in turns (each round runs
    every timer once): a slow spell of a shared machine weighs on every side of a ratio
    alike, and other processes only ever add time, so the minimum is the estimate."""
    best = dict.fromkeys(timers, math.inf)
    for _ in range(rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], timer())
    return best


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
