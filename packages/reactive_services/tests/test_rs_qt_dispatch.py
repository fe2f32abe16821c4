"""QtDispatcher against a real Qt event loop (offscreen platform).

Skipped, with the reason shown, when PySide6 is not installed (the `qt` extra). The lazy-import
test runs everywhere: importing the package never imports PySide6.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from reactive_services import (
    CallbackIntervalSnapshotPollerPolicy,
    IntervalSnapshotPoller,
    QtDispatcher,
)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
WAIT_MS = 5000
requires_qt = pytest.mark.skipif(
    importlib.util.find_spec("PySide6") is None,
    reason="PySide6 not installed; install the qt extra: pip install 'reactive_services[qt]'",
)


def test_package_import_does_not_import_pyside6() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["PySide6"] = None  # make any PySide6 import fail
        import reactive_services
        assert not any(m.startswith("PySide6.") for m in sys.modules)
        try:
            reactive_services.QtDispatcher()
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("QtDispatcher() worked without PySide6")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'reactive_services[qt]'" in result.stdout


@pytest.fixture(scope="module")
def qt() -> Any:
    """The running QGuiApplication (offscreen) and the PySide6 modules; made once per run."""
    qtcore = pytest.importorskip("PySide6.QtCore", reason="PySide6 not installed (qt extra)")
    qtgui = pytest.importorskip("PySide6.QtGui", reason="PySide6 not installed (qt extra)")
    app = qtcore.QCoreApplication.instance() or qtgui.QGuiApplication([])
    return qtcore, app


def _run_until(qtcore: Any, done: Callable[[], bool]) -> None:
    """Spin a Qt event loop on this (the main) thread until `done()` or a deadline."""
    loop = qtcore.QEventLoop()
    poll = qtcore.QTimer()
    poll.setInterval(1)
    poll.timeout.connect(lambda: loop.quit() if done() else None)
    deadline = qtcore.QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    poll.start()
    deadline.start(WAIT_MS)
    if not done():
        loop.exec()
    poll.stop()
    deadline.stop()
    assert done(), "timed out waiting on the Qt event loop"


@requires_qt
def test_callback_from_worker_runs_on_the_qt_main_thread(qt: Any) -> None:
    qtcore, _app = qt
    dispatcher = QtDispatcher()
    assert dispatcher.is_dispatch_thread()
    main = threading.get_ident()
    ran: list[tuple[str, int, bool]] = []
    worker_view: list[bool] = []

    def from_worker() -> None:
        worker_view.append(dispatcher.is_dispatch_thread())
        dispatcher.dispatch(
            lambda tag: ran.append((tag, threading.get_ident(), dispatcher.is_dispatch_thread())),
            "hello",
        )

    worker = threading.Thread(target=from_worker)
    worker.start()
    worker.join(WAIT_MS / 1000)
    _run_until(qtcore, lambda: bool(ran))
    assert ran == [("hello", main, True)]
    assert worker_view == [False]


@requires_qt
def test_dispatch_is_queued_even_from_the_main_thread_and_keeps_order(qt: Any) -> None:
    qtcore, _app = qt
    dispatcher = QtDispatcher()
    seen: list[tuple[int, int]] = []
    dispatcher.dispatch(seen.append, (-1, 0))
    assert seen == []  # not run in place

    def produce(worker: int) -> None:
        for i in range(200):
            dispatcher.dispatch(seen.append, (worker, i))

    workers = [threading.Thread(target=produce, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT_MS / 1000)
    _run_until(qtcore, lambda: len(seen) == 601)
    assert seen[0] == (-1, 0)
    for worker in range(3):
        assert [i for w, i in seen if w == worker] == list(range(200))


@requires_qt
def test_a_raising_callback_is_logged_and_the_next_one_runs(
    qt: Any, caplog: pytest.LogCaptureFixture
) -> None:
    qtcore, _app = qt
    dispatcher = QtDispatcher()
    after: list[str] = []

    def boom() -> None:
        raise ValueError("slot failed")

    with caplog.at_level(logging.ERROR, logger="reactive_services"):
        dispatcher.dispatch(boom)
        dispatcher.dispatch(after.append, "next")
        _run_until(qtcore, lambda: bool(after))
    assert any("Qt main thread raised" in r.getMessage() for r in caplog.records)


@requires_qt
def test_many_dispatches_keep_reference_counts_intact(qt: Any) -> None:
    """Guards against PySide6 builds that over-release a slot's return value (6.12.0 did:
    one reference to None lost per call). Cyclic GC is paused so unrelated garbage from
    earlier tests cannot move None's count while we measure."""
    qtcore, _app = qt
    dispatcher = QtDispatcher()
    count = 4000
    seen: list[int] = []
    gc.collect()
    gc.disable()
    try:
        none_before = sys.getrefcount(None)
        for i in range(count):
            dispatcher.dispatch(seen.append, i)
        _run_until(qtcore, lambda: len(seen) == count)
        lost = none_before - sys.getrefcount(None)
    finally:
        gc.enable()
    assert lost < count // 2, f"{lost} references to None lost over {count} dispatches"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None and True are immortal from 3.12")
def test_refuses_the_pyside6_release_that_corrupts_refcounts() -> None:
    from reactive_services.qt_dispatch import _refuse_broken_pyside

    with pytest.raises(RuntimeError, match=r"PySide6 6\.12\.0 corrupts reference counts"):
        _refuse_broken_pyside((6, 12, 0))
    _refuse_broken_pyside((6, 11, 3))


@requires_qt
def test_poller_ticked_by_a_qtimer_delivers_on_the_gui_thread(qt: Any) -> None:
    """The GUI use case end to end: 60 Hz QTimer → tick() → fetch on a worker → hook on GUI."""
    qtcore, _app = qt
    main = threading.get_ident()
    fetch_threads: list[int] = []
    changes: list[tuple[int, int]] = []

    def fetch() -> int:
        fetch_threads.append(threading.get_ident())
        return len(fetch_threads)

    policy = CallbackIntervalSnapshotPollerPolicy(
        fetch_snapshot_fn=fetch,
        poll_interval_seconds_value=0.005,
        clone_snapshot_fn=int,
        on_snapshot_changed_fn=lambda s: changes.append((s, threading.get_ident())),
    )
    with IntervalSnapshotPoller(policy, dispatcher=QtDispatcher()) as poller:
        timer = qtcore.QTimer()
        timer.setInterval(16)
        timer.timeout.connect(poller.tick)
        timer.start()
        try:
            _run_until(qtcore, lambda: len(changes) >= 3)
        finally:
            timer.stop()
    assert [s for s, _ in changes[:3]] == [1, 2, 3]
    assert {ident for _, ident in changes} == {main}
    assert main not in fetch_threads
