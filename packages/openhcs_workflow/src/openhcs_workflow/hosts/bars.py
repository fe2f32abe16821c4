"""`TqdmBars`: one progress bar per plate and one for the whole batch, with any tqdm class.

The console host uses `tqdm.std.tqdm` (text bars redrawn in place), the notebook host
`tqdm.auto.tqdm` (widget bars in Jupyter). Bars count percent (0–100): a plate's bar is its
execution's percent, the overall bar the batch's (finished plates count 100 %). Bars are only
redrawn when what they show changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openhcs_workflow.hosts.rows import BatchProgress, PlateRow

__all__ = ["TqdmBars", "plate_detail"]

# The detail text travels in `unit` (unused otherwise): `{postfix}` would prefix it with ", ".
_PLATE_FORMAT = "{desc} {percentage:5.1f}%|{bar}| {unit}"
_OVERALL_FORMAT = "{desc} {percentage:5.1f}%|{bar}| {unit} [{elapsed}]"


def plate_detail(row: PlateRow) -> str:
    """`12/24 wells · ⚙️ Executing · otsu_threshold · B03`: wells once the execution reported
    them, the state, then the step and well while running or the reason it failed."""
    parts = [f"{row.wells_done}/{row.wells_total} wells"] if row.wells_total else []
    parts.append(row.state_text)
    if row.state.is_run_terminal and row.error:
        parts.append(row.error)
    elif not row.state.is_run_terminal:
        parts.extend(p for p in (row.step_name, row.well) if p)
    return " · ".join(parts)


class TqdmBars:
    """The bars of one batch: `open`, then `update` as often as wanted, then `close`.

    `tqdm_class` is a tqdm class (`tqdm.std.tqdm`, `tqdm.auto.tqdm`, ...); `options` go to
    every bar it makes (`file=`, `ncols=`, ...). `max_plate_bars` caps the number of plate bars
    (the overall bar covers every plate). `text` adapts every text shown (the console
    host drops emoji variation selectors, which terminals draw at unpredictable widths).
    """

    def __init__(
        self,
        tqdm_class: Any,
        *,
        max_plate_bars: int = 16,
        text: Callable[[str], str] = str,
        **options: Any,
    ) -> None:
        self._tqdm = tqdm_class
        self._text = text
        self._options = options
        self._max_plate_bars = max_plate_bars
        self._overall: Any = None
        self._plates: dict[str, Any] = {}
        self._shown: dict[str, tuple[float, str]] = {}

    @property
    def is_open(self) -> bool:
        return self._overall is not None

    def open(self, progress: BatchProgress) -> None:
        """Create the bars (closing those of a previous batch)."""
        self.close()
        width = max((len(row.name) for row in progress.rows), default=7)
        self._overall = self._bar(f"{'overall':<{width}}", _OVERALL_FORMAT)
        for row in progress.rows[: self._max_plate_bars]:
            self._plates[row.plate_id] = self._bar(f"{row.name:<{width}}", _PLATE_FORMAT)
        self.update(progress)

    def update(self, progress: BatchProgress) -> None:
        """Move the bars to `progress` (bars of plates not in this batch are left alone)."""
        if self._overall is None:
            return
        total = len(progress.rows)
        self._move("", self._overall, progress.percent, f"{progress.finished}/{total} plates")
        for row in progress.rows:
            bar = self._plates.get(row.plate_id)
            if bar is not None:
                self._move(row.plate_id, bar, row.percent, plate_detail(row))

    def write(self, text: str) -> None:
        """Print a line above the bars without breaking them."""
        self._tqdm.write(self._text(text), file=self._options.get("file"))

    def close(self) -> None:
        """Close every bar, top to bottom; they stay on screen (`leave=True`)."""
        for bar in [self._overall, *self._plates.values()]:
            if bar is not None:
                bar.close()
        self._overall = None
        self._plates.clear()
        self._shown.clear()

    def _bar(self, desc: str, bar_format: str) -> Any:
        options = {"leave": True, "dynamic_ncols": True, "unit": "", **self._options}
        return self._tqdm(total=100, desc=self._text(desc), bar_format=bar_format, **options)

    def _move(self, key: str, bar: Any, percent: float, detail: str) -> None:
        shown = (round(percent, 1), self._text(detail))
        if self._shown.get(key) == shown:
            return
        self._shown[key] = shown
        bar.n, bar.unit = shown
        bar.refresh()
