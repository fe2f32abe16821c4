"""`QtDispatcher`: runs callbacks on the Qt main thread (optional `qt` extra, PySide6).

PySide6 is imported when a `QtDispatcher` is created, never when this package is imported, so
everything else works without Qt installed.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVarTuple, cast

from reactive_services.dispatch import DispatcherClosedError

__all__ = ["QtDispatcher"]

logger = logging.getLogger(__name__)
Ts = TypeVarTuple("Ts")

_INSTALL_HINT = "QtDispatcher needs PySide6: pip install 'reactive_services[qt]'"


def _qtcore() -> Any:
    """PySide6.QtCore, typed loosely so the code checks the same with or without PySide6."""
    try:
        qtcore = importlib.import_module("PySide6.QtCore")
    except ImportError as error:
        raise ImportError(f"{_INSTALL_HINT} ({error})") from error
    _refuse_broken_pyside(importlib.import_module("PySide6").__version_info__[:3])
    return qtcore


def _refuse_broken_pyside(version: tuple[int, ...]) -> None:
    """PySide6 6.12.0 drops one reference to a slot's return value (None) and to the result of
    `Signal.emit` (True) on every call. CPython 3.12+ makes those objects immortal; on 3.11
    the process dies after a few hundred dispatches ("deallocating None/True").
    """
    if tuple(version) == (6, 12, 0) and sys.version_info < (3, 12):
        raise RuntimeError(
            "PySide6 6.12.0 corrupts reference counts on Python < 3.12 and crashes the process; "
            "install another version: pip install 'PySide6-Essentials!=6.12.0'"
        )


def run_thunk(_receiver: object, thunk: object) -> None:
    """Slot body on the Qt main thread; Qt has no error channel, so failures are logged."""
    try:
        cast(Callable[[], object], thunk)()
    except Exception:
        logger.exception("callback dispatched to the Qt main thread raised")


@functools.cache
def _receiver_class() -> Any:
    """A QObject subclass with a queued `call(object)` signal wired to a slot running the thunk."""
    qtcore = _qtcore()
    return type(
        "_QtDispatchReceiver",
        (qtcore.QObject,),
        # PySide6 registers a slot under the function's __name__: the attribute must match it
        # (a mismatch crashes the queued call).
        {"call": qtcore.Signal(object), "run_thunk": qtcore.Slot(object)(run_thunk)},
    )


class QtDispatcher:
    """Hands `fn(*args)` to the thread of the running `QCoreApplication` (the GUI thread).

    A receiver QObject is moved to the application's thread; `dispatch` emits its signal over a
    queued connection, so `fn` always runs later on that thread, from any caller thread
    (including the GUI thread itself), in the order dispatched. Exceptions raised by `fn` are
    logged on the `reactive_services.qt_dispatch` logger. Create it after the application.
    """

    __slots__ = ("_qtcore", "_receiver")

    def __init__(self) -> None:
        qtcore = _qtcore()
        app = qtcore.QCoreApplication.instance()
        if app is None:
            raise RuntimeError(
                "QtDispatcher needs a QCoreApplication (or QApplication); create it first"
            )
        receiver = _receiver_class()()
        receiver.moveToThread(app.thread())
        receiver.call.connect(receiver.run_thunk, qtcore.Qt.ConnectionType.QueuedConnection)
        self._qtcore = qtcore
        self._receiver = receiver

    def dispatch(self, fn: Callable[[*Ts], object], /, *args: *Ts) -> None:
        if self._qtcore.QCoreApplication.instance() is None:
            raise DispatcherClosedError(f"cannot dispatch {fn!r}: the Qt application is gone")
        thunk = functools.partial(fn, *args) if args else fn
        try:
            self._receiver.call.emit(thunk)
        except RuntimeError as error:  # the receiver's C++ object was deleted
            raise DispatcherClosedError(f"cannot dispatch {fn!r}: {error}") from error

    def is_dispatch_thread(self) -> bool:
        return bool(self._qtcore.QThread.currentThread() == self._receiver.thread())

    def __repr__(self) -> str:
        return "QtDispatcher()"
