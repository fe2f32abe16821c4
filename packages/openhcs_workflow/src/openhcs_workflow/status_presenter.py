"""The status-bar line that summarises every plate the service knows about."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from openhcs_workflow.plate_state import PlateState

__all__ = ["ExecutionServerStatusPresenter", "StatusSummary"]

# (state, the part it counts in); states not listed (created, init pending, ready) are not counted.
_CATEGORY: dict[PlateState, str] = {
    PlateState.COMPILE_PENDING: "compiling",
    PlateState.QUEUED: "queued",
    PlateState.EXECUTING: "executing",
    PlateState.COMPILED: "compiled",
    PlateState.COMPLETED: "complete",
    PlateState.FAILED: "failed",
    PlateState.COMPILE_FAILED: "failed",
    PlateState.CANCELLED: "cancelled",
}
# Finished states count as 100 % in the average whatever their last progress was.
_FULL = frozenset({PlateState.COMPILED, PlateState.COMPLETED})

# The parts of the line, in order: (field, icon, word).
_PARTS = (
    ("compiling", "⏳", "compiling"),
    ("queued", "🕒", "queued"),
    ("executing", "⚙️", "executing"),
    ("compiled", "✓", "compiled"),
    ("complete", "✅", "complete"),
    ("failed", "❌", "failed"),
    ("cancelled", "✗", "cancelled"),
)


@attrs.frozen(kw_only=True)
class StatusSummary:
    """How many plates are in each part of the line, and their mean percent."""

    compiling: int = 0
    queued: int = 0
    executing: int = 0
    compiled: int = 0
    complete: int = 0
    failed: int = 0
    cancelled: int = 0
    average_percent: float = 0.0

    @property
    def plates(self) -> int:
        """The number of plates counted in the line."""
        return sum(getattr(self, field) for field, _, _ in _PARTS)

    @classmethod
    def of(cls, plates: Iterable[tuple[PlateState, float]]) -> StatusSummary:
        """Summarise `(state, percent)` pairs; plates not in a workflow state are left out."""
        counts = dict.fromkeys(_CATEGORY.values(), 0)
        total = 0.0
        n = 0
        for state, percent in plates:
            category = _CATEGORY.get(state)
            if category is None:
                continue
            counts[category] += 1
            total += 100.0 if state in _FULL else percent
            n += 1
        return cls(**counts, average_percent=total / n if n else 0.0)


class ExecutionServerStatusPresenter:
    """Builds the status line and decides when it may be shown.

    `Ready` when no plate is in a workflow state; otherwise
    `Server: ⏳ 2 compiling, ⚙️ 1 executing, ✓ 1 compiled, ✅ 3 complete, ❌ 1 failed | 8 plates |
    avg 62.5%` with only the non-zero parts, in the order compiling, queued, executing, compiled,
    complete, failed, cancelled.

    The line never overwrites a newer message: call `observe()` on every change of the summary
    and `message_emitted()` whenever another status message (such as `All done: …`) is shown;
    `take_text()` then returns the line only when the summary changed after that message.
    """

    def __init__(self) -> None:
        self._observed: str | None = None
        self._pending = False

    @staticmethod
    def build_status_text(summary: StatusSummary) -> str:
        """The line for `summary`."""
        plates = summary.plates
        if plates == 0:
            return "Ready"
        parts = [
            f"{icon} {getattr(summary, field)} {word}"
            for field, icon, word in _PARTS
            if getattr(summary, field)
        ]
        return f"Server: {', '.join(parts)} | {plates} plates | avg {summary.average_percent:.1f}%"

    def observe(self, summary: StatusSummary) -> None:
        """Note the current summary; a different line than before becomes pending."""
        text = self.build_status_text(summary)
        if text != self._observed:
            self._observed = text
            self._pending = True

    def message_emitted(self) -> None:
        """Another message now holds the status line; it is newer than the observed summary."""
        self._pending = False

    def take_text(self) -> str | None:
        """The line to show now, once per change, or None."""
        if not self._pending:
            return None
        self._pending = False
        return self._observed

    @property
    def pending(self) -> bool:
        """True when `take_text()` would return a line."""
        return self._pending
