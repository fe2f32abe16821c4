"""`ConsoleHost`: a batch in a terminal, as tqdm progress bars and a status line.

On a terminal it draws one bar per plate and one for the batch, with the service's status line
under them (needs `tqdm`: `pip install 'openhcs_workflow[console]'`). When the output is not a
terminal (a log file, a CI job, a pipe) it writes plain lines instead: plate state changes,
each plate's progress every `progress_step` percent, status messages (the running
`Server: …` summary at most once per `status_interval` seconds) and errors.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from openhcs_workflow.hosts.bars import TqdmBars, plate_detail
from openhcs_workflow.hosts.display import BatchDisplayHost
from openhcs_workflow.hosts.optional import import_optional
from openhcs_workflow.hosts.rows import BatchProgress, plate_name
from openhcs_workflow.plate_labels import STATE_LABELS
from openhcs_workflow.plate_state import PlateState
from reactive_services.dispatch import Dispatcher

__all__ = ["ConsoleHost"]

#: The service's running summary line starts with this (see `ExecutionServerStatusPresenter`).
_SUMMARY_PREFIX = "Server:"


def terminal_text(text: str) -> str:
    """`text` without emoji variation selectors (U+FE0F): terminals disagree on the width of
    `⚙️`, which breaks redrawing a line in place; the bare `⚙` is one column everywhere."""
    return text.replace("\ufe0f", "")


class ConsoleHost(BatchDisplayHost):
    """Progress bars and a status line on a terminal, plain lines anywhere else.

    `file` defaults to stderr (stdout stays free for results). `bars`: True for bars, False
    for lines, None (default) for bars when `file` is a terminal and tqdm is installed.
    `dispatcher` defaults to the running loop's (see `default_dispatcher`). `clock` (seconds)
    paces the summary lines.
    """

    #: Lines mode: a plate's progress is written each time it passes a multiple of this.
    progress_step = 25.0

    def __init__(
        self,
        *,
        file: IO[str] | None = None,
        bars: bool | None = None,
        dispatcher: Dispatcher | None = None,
        status_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(dispatcher)
        self.file: IO[str] = file if file is not None else sys.stderr
        if bars is None:  # bars on a terminal, if tqdm is there to draw them
            isatty = getattr(self.file, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
            bars = tty and importlib.util.find_spec("tqdm") is not None
        self._tqdm = (
            import_optional("tqdm.std", extra="console", needed_for="ConsoleHost (bars)").tqdm
            if bars
            else None
        )
        self._bars = (
            None if self._tqdm is None else TqdmBars(self._tqdm, text=terminal_text, file=self.file)
        )
        self._status_bar: Any = None
        self._status_interval = status_interval
        self._clock = clock
        self._last_summary = float("-inf")
        self._in_batch = False
        self._milestones: dict[str, int] = {}

    @property
    def bars(self) -> bool:
        """True when this host draws progress bars (else it writes lines)."""
        return self._bars is not None

    def _line(self, text: str) -> None:
        if self._bars is not None:
            self._bars.write(text)
        else:
            print(text, file=self.file, flush=True)

    # -- hooks ------------------------------------------------------------------------------

    def show_batch_started(self, progress: BatchProgress) -> None:
        self._in_batch = True
        self._milestones.clear()
        if self._bars is None:
            names = ", ".join(row.name for row in progress.rows)
            self._line(f"Batch of {len(progress.rows)} plate(s): {names}")
            return
        self._close_status_bar()
        self._bars.open(progress)
        self._status_bar = self._tqdm_bar(
            total=0, bar_format="{desc}", desc=terminal_text(self.status)
        )

    def show_progress(self, progress: BatchProgress) -> None:
        if self._bars is not None:
            self._bars.update(progress)
            return
        for row in progress.rows:
            if row.state is not PlateState.EXECUTING or row.percent >= 100.0:
                continue
            milestone = int(row.percent // self.progress_step)
            if milestone > self._milestones.get(row.plate_id, 0):
                self._milestones[row.plate_id] = milestone
                self._line(f"{row.name}: {row.percent:.0f}% · {plate_detail(row)}")

    def show_status(self, text: str) -> None:
        if self._status_bar is not None:
            self._status_bar.set_description_str(terminal_text(text))
            return
        if text.startswith(_SUMMARY_PREFIX):
            if not self._in_batch:
                return  # between batches the last message (`All done: ...`) keeps the line
            now = self._clock()
            if now - self._last_summary < self._status_interval:
                return
            self._last_summary = now
        self._line(text)

    def show_error(self, text: str) -> None:
        self._line(f"error: {text}")

    def show_plate_state(self, plate_id: str, state: PlateState) -> None:
        if self._bars is None and state is PlateState.EXECUTING:
            self._line(f"{plate_name(plate_id)}: {STATE_LABELS[state]}")

    def show_plate_finished(
        self, plate_id: str, state: PlateState, result: Mapping[str, Any]
    ) -> None:
        if self._bars is not None:
            return
        row = next((r for r in self.progress().rows if r.plate_id == plate_id), None)
        detail = plate_detail(row) if row is not None else STATE_LABELS[state]
        self._line(f"{plate_name(plate_id)}: {detail}")

    def show_batch_finished(self, progress: BatchProgress) -> None:
        self._in_batch = False
        if self._bars is not None:
            self._bars.update(progress)
            self._bars.close()
            self._close_status_bar()

    # -- internals --------------------------------------------------------------------------

    def _tqdm_bar(self, **options: Any) -> Any:
        assert self._tqdm is not None
        return self._tqdm(file=self.file, leave=True, dynamic_ncols=True, **options)

    def _close_status_bar(self) -> None:
        if self._status_bar is not None:
            self._status_bar.close()
            self._status_bar = None
