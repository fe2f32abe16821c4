"""A plate manager in Qt (PySide6): a plate list, Run and Stop buttons, a status bar.

    pip install 'openhcs_workflow[images,qt]'
    python examples/qt_plate_manager.py [--plates N] [--wells N] [--workers N] [--screenshot PNG]

It generates synthetic plates, starts an execution server inside this process (`LocalServer`,
on a thread of its own, bound to 127.0.0.1) and drives a `BatchWorkflowService` through its
blocking wrapper (`BlockingBatchWorkflowService`, which runs the service on a loop thread of
its own). `QtPlateManagerHost` implements the `Host` contract: its `QtDispatcher` delivers
every callback on the GUI thread, where it may touch widgets. The window only reads plate
state (`workflow.view`); the service is its single writer.

Run starts the selected plates (all when none is selected); Stop cancels the batch (press it
again to force). `--screenshot PNG` runs every plate, saves the window, and quits.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from openhcs_workflow import (
    BatchBusyError,
    BatchReport,
    BlockingBatchWorkflowService,
    Host,
    PlateConfigSources,
    PlateSpec,
    PlateState,
)
from openhcs_workflow.hosts import PlateRow, plate_name
from openhcs_workflow.local_server import LocalServer
from openhcs_workflow.pipeline import PlateLayout, default_pipeline, generate_plates
from openhcs_workflow.zmq_backend import ZmqWorkflowBackend
from reactive_services import QtDispatcher
from zmqruntime.connection import ConnectionInfo

COLUMNS = ("Plate", "Status", "Wells", "Progress")
#: Text colour of the status cell by state (others: the palette's default).
STATE_COLOURS = {
    PlateState.COMPLETED: "#1b7f3b",
    PlateState.FAILED: "#b00020",
    PlateState.CANCELLED: "#777777",
}


class QtPlateManagerHost(Host):
    """The `Host` contract for `PlateManagerWindow`; every method runs on the GUI thread.

    It holds the window weakly: the service (on its own thread) holds the host, and a strong
    reference back would make a cycle that the garbage collector could free on that thread,
    while Qt widgets must be destroyed on the GUI thread.
    """

    def __init__(self, window: PlateManagerWindow) -> None:
        self._dispatcher = QtDispatcher()
        self._window = weakref.ref(window)

    @property
    def dispatcher(self) -> QtDispatcher:
        return self._dispatcher

    def _on_window(self, action: Callable[[PlateManagerWindow], object]) -> None:
        window = self._window()
        if window is not None:  # callbacks still queued when the window went away are dropped
            action(window)

    def emit_status(self, msg: str) -> None:
        self._on_window(lambda w: w.statusBar().showMessage(msg))

    def emit_error(self, msg: str) -> None:
        self._on_window(lambda w: w.show_error(msg))

    def emit_progress_started(self, total: int) -> None:
        self._on_window(lambda w: w.start_progress(total))

    def emit_progress_updated(self, done: int) -> None:
        self._on_window(lambda w: w.progress.setValue(done))

    def emit_progress_finished(self) -> None:
        self._on_window(lambda w: w.progress.setValue(w.progress.maximum()))

    def update_item_list(self) -> None:
        self._on_window(lambda w: w.refresh_plates())

    def update_button_states(self) -> None:
        self._on_window(lambda w: w.refresh_buttons())

    def emit_orchestrator_state(self, plate_id: str, state: PlateState) -> None:
        self._on_window(lambda w: w.plate_state_changed.emit(plate_id, state.value))

    def emit_execution_complete(self, result: Mapping[str, Any], plate_id: str) -> None:
        """Nothing more to show: the plate's row already says how it ended."""

    def on_plate_completed(
        self, plate_id: str, status: PlateState, result: Mapping[str, Any]
    ) -> None:
        self._on_window(lambda w: w.refresh_plates())

    def on_all_plates_completed(self, completed: int, failed: int, cancelled: int) -> None:
        self._on_window(lambda w: w.batch_finished.emit(completed, failed, cancelled))


class PlateManagerWindow(QMainWindow):
    """The plate table, Run/Stop, an overall progress bar, errors, and the status bar."""

    #: (plate id, state value) whenever a plate changes state.
    plate_state_changed = Signal(str, str)
    #: (completed, failed, cancelled) once per run batch.
    batch_finished = Signal(int, int, int)
    #: A run started with Run has returned (after every callback of its batch ran).
    run_ended = Signal()

    def __init__(
        self,
        plates: Sequence[PlateLayout],
        server: ConnectionInfo,
        *,
        output: Path,
        **service_options: Any,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Plate manager")
        self.plate_ids = [str(layout.root) for layout in plates]
        self.table = QTableWidget(len(self.plate_ids), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(3, 220)
        self.bars = [QProgressBar() for _ in self.plate_ids]
        for index, bar in enumerate(self.bars):
            bar.setRange(0, 1000)
            bar.setFormat("")
            self.table.setCellWidget(index, 3, bar)
        self.run_button = QPushButton("Run")
        self.stop_button = QPushButton("Stop")
        self.progress = QProgressBar()
        self.progress.setFormat("%v/%m plates")
        self.errors = QLabel()
        self.errors.setStyleSheet("color: #b00020")
        self.errors.setWordWrap(True)
        self.errors.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.progress, stretch=1)
        layout = QVBoxLayout()
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.errors)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self.statusBar().showMessage("Ready")
        self.resize(900, 130 + 30 * len(self.plate_ids))

        self.host = QtPlateManagerHost(self)
        self.workflow = BlockingBatchWorkflowService(
            self.host,
            lambda: ZmqWorkflowBackend.connect(server),
            configs=PlateConfigSources(default={"output_root": str(output)}),
            **service_options,
        )
        self.last_report: BatchReport | None = None
        self.run_button.clicked.connect(self.run_selected)
        self.stop_button.clicked.connect(self.stop)
        self.refresh_plates()
        self.refresh_buttons()

    # -- what the host calls (GUI thread) -----------------------------------------------------

    def refresh_plates(self) -> None:
        """Re-read every plate's row from the service's view."""
        view = self.workflow.view
        for index, plate_id in enumerate(self.plate_ids):
            record = view.plate(plate_id)
            row = PlateRow.of(record) if record is not None else None
            if row is None:
                cells = (plate_name(plate_id), "", "")
            else:
                wells = f"{row.wells_done}/{row.wells_total}" if row.wells_total else ""
                cells = (row.name, row.label, wells)
            for column, text in enumerate(cells):
                item = self.table.item(index, column)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(index, column, item)
                if item.text() != text:
                    item.setText(text)
            colour = STATE_COLOURS.get(row.state) if row is not None else None
            self.table.item(index, 1).setForeground(QColor(colour) if colour else QBrush())
            self.bars[index].setValue(round(10 * row.percent) if row is not None else 0)

    def refresh_buttons(self) -> None:
        view = self.workflow.view
        self.run_button.setEnabled(not view.busy)
        self.stop_button.setEnabled(view.busy)
        self.stop_button.setText("Force stop" if view.stopping else "Stop")

    def start_progress(self, plates: int) -> None:
        self.progress.setRange(0, plates)
        self.progress.setValue(0)

    def show_error(self, message: str) -> None:
        self.errors.setText(message)
        self.errors.show()

    # -- user actions -----------------------------------------------------------------------

    def selected_plates(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.plate_ids[row] for row in rows] or list(self.plate_ids)

    def run_selected(self) -> None:
        """Start a run batch of the selected plates; returns at once."""
        self.errors.hide()
        specs = [PlateSpec(plate_id=p, pipeline=default_pipeline()) for p in self.selected_plates()]
        future = self.workflow.start_run(specs)
        # The future ends on the service's thread: hand its end to the GUI thread, holding
        # the window weakly (like the host does).
        dispatcher, window = self.host.dispatcher, weakref.ref(self)
        future.add_done_callback(lambda done: dispatcher.dispatch(_run_ended, window, done))

    def stop(self) -> None:
        """Stop the running batch (a second press forces it)."""
        self.workflow.stop()

    def run_ended_with(self, future: concurrent.futures.Future[BatchReport]) -> None:
        """On the GUI thread, after every callback the batch dispatched before it ended."""
        error = None if future.cancelled() else future.exception()
        if error is None and not future.cancelled():
            self.last_report = future.result()
        elif error is not None and not isinstance(error, BatchBusyError):  # refusals: shown
            self.show_error(f"Run failed: {error!r}")
        self.run_ended.emit()

    def close_workflow(self) -> None:
        """Shut the service down (cancelling a running batch) and close its connection."""
        self.workflow.close()

    def closeEvent(self, event: Any) -> None:
        self.close_workflow()
        super().closeEvent(event)


def _run_ended(
    window: weakref.ref[PlateManagerWindow], future: concurrent.futures.Future[BatchReport]
) -> None:
    live = window()
    if live is not None:
        live.run_ended_with(future)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plates", type=int, default=4, help="number of plates (default: 4)")
    parser.add_argument("--wells", type=int, default=24, help="wells per plate (default: 24)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--screenshot", metavar="PNG", help="run all plates, save, and quit")
    args = parser.parse_args(argv)
    for name in ("plates", "wells", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name}: must be at least 1, got {getattr(args, name)}")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    root = Path(tempfile.mkdtemp(prefix="openhcs-qt-"))
    layouts = generate_plates(root / "plates", args.plates, wells=args.wells, fields=2)
    print(f"Plates and results in {root}")
    with LocalServer(workers=args.workers) as server:
        window = PlateManagerWindow(layouts, server.connection_info, output=root / "results")
        try:
            window.show()
            if args.screenshot:
                window.run_ended.connect(lambda: _save_and_quit(window, args.screenshot))
                QTimer.singleShot(0, window.run_selected)
            return app.exec()
        finally:
            window.close_workflow()


def _save_and_quit(window: PlateManagerWindow, path: str) -> None:
    window.grab().save(path)
    QApplication.quit()


if __name__ == "__main__":
    sys.exit(main())
