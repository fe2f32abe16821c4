"""The Qt example (`examples/qt_plate_manager.py`) under `QT_QPA_PLATFORM=offscreen`
(`nox -s qt`): clicking Run completes a batch, clicking Stop cancels one, and the window is
saved as a screenshot after the run. Skipped without PySide6."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6.QtWidgets", reason="the Qt example needs PySide6 (`nox -s qt`)")
pytest.importorskip("scipy", reason="the reference pipeline's steps need scipy")

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from openhcs_workflow import Host, PlateState
from openhcs_workflow.local_server import LocalServer
from openhcs_workflow.pipeline import PlateLayout, generate_plates
from zmqruntime.connection import ConnectionInfo

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "qt_plate_manager.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qt_plate_manager", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app() -> QApplication:
    existing = QApplication.instance()
    if existing is None:
        return QApplication(["test"])
    if not isinstance(existing, QApplication):
        pytest.skip(
            f"this process already has a {type(existing).__name__}, and widgets need a "
            "QApplication: run the Qt example's tests in a process of their own (nox -s qt)"
        )
    return existing


@pytest.fixture(scope="module")
def server() -> Iterator[ConnectionInfo]:
    with LocalServer(workers=2) as local:
        yield local.connection_info


@pytest.fixture
def window_factory(
    example: ModuleType, app: QApplication, server: ConnectionInfo, tmp_path: Path
) -> Iterator[Callable[[list[PlateLayout]], Any]]:
    made: list[Any] = []

    def make(plates: list[PlateLayout]) -> Any:
        window = example.PlateManagerWindow(plates, server, output=tmp_path / "results")
        made.append(window)
        window.show()
        return window

    yield make
    for window in made:
        window.close()  # closeEvent shuts its service down


def _wait_for(
    signal: Any, timeout: float, until: Callable[..., bool] = lambda *a: True
) -> tuple[Any, ...]:
    """Run the Qt event loop until `signal` fires with arguments `until` accepts."""
    loop = QEventLoop()
    got: list[tuple[Any, ...]] = []

    def slot(*args: Any) -> None:
        if not got and until(*args):
            got.append(args)
            loop.quit()

    signal.connect(slot)
    QTimer.singleShot(int(timeout * 1000), loop.quit)
    try:
        loop.exec()
    finally:
        signal.disconnect(slot)
    assert got, f"no matching {signal} within {timeout} s"
    return got[0]


def _record_threads(host: Any) -> list[tuple[str, int]]:
    """Wrap every `Host` callback of `host` to record the thread it runs on."""
    calls: list[tuple[str, int]] = []
    for name in sorted(Host.__abstractmethods__ - {"dispatcher"}):
        method = getattr(host, name)

        def recorded(*args: Any, _name: str = name, _method: Any = method) -> None:
            calls.append((_name, threading.get_ident()))
            _method(*args)

        setattr(host, name, recorded)
    return calls


def _column(window: Any, column: int) -> list[str]:
    return [window.table.item(row, column).text() for row in range(window.table.rowCount())]


def test_run_completes_a_batch_and_the_window_is_saved(
    window_factory: Callable[[list[PlateLayout]], Any], tmp_path: Path
) -> None:
    plates = generate_plates(tmp_path / "plates", 3, wells=3, shape=(96, 96))
    window = window_factory(plates)
    calls = _record_threads(window.host)
    assert window.run_button.isEnabled()
    assert not window.stop_button.isEnabled()
    QTest.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    _wait_for(window.run_ended, timeout=120)
    # every callback ran on the GUI thread (this one), delivered by QtDispatcher
    assert {thread for _, thread in calls} == {threading.get_ident()}
    assert ("on_all_plates_completed", threading.get_ident()) in calls
    report = window.last_report
    assert (report.completed, report.failed, report.cancelled) == (3, 0, 0)
    assert _column(window, 1) == ["✅ Complete"] * 3
    assert _column(window, 2) == ["3/3"] * 3
    assert [bar.value() for bar in window.bars] == [1000] * 3
    assert window.statusBar().currentMessage() == "All done: 3 completed, 0 failed, 0 cancelled"
    assert window.run_button.isEnabled()
    assert not window.stop_button.isEnabled()
    assert window.progress.value() == window.progress.maximum() == 3
    assert window.errors.isHidden()
    screenshot = tmp_path / "qt_plate_manager.png"
    assert window.grab().save(str(screenshot))
    assert screenshot.stat().st_size > 1000


def test_stop_cancels_a_running_batch(
    window_factory: Callable[[list[PlateLayout]], Any], tmp_path: Path
) -> None:
    plates = generate_plates(tmp_path / "plates", 3, wells=48, fields=3)
    window = window_factory(plates)
    QTest.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    _wait_for(window.plate_state_changed, 120, lambda _plate, state: state == "executing")
    assert window.stop_button.isEnabled()
    assert not window.run_button.isEnabled()
    QTest.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    _wait_for(window.run_ended, timeout=120)
    report = window.last_report
    assert report.failed == 0, report
    assert report.cancelled >= 1, report
    assert report.completed + report.cancelled == 3
    states = {outcome.state for outcome in report.outcomes}
    assert states <= {PlateState.COMPLETED, PlateState.CANCELLED}
    assert "✗ Cancelled" in _column(window, 1)
    assert window.statusBar().currentMessage().endswith(f"{report.cancelled} cancelled")
    assert window.run_button.isEnabled()
    assert not window.stop_button.isEnabled()
    window.grab().save(str(tmp_path / "qt_plate_manager_stopped.png"))
