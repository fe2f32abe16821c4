"""Where callbacks run: the `Dispatcher` protocol and its immediate and asyncio implementations.

A producer (a poller's worker thread, a ZeroMQ receive loop) never calls a host callback
directly; it hands the call to the host's dispatcher, which runs it on the host's own thread
(the GUI thread, the notebook's event loop). `QtDispatcher` lives in `qt_dispatch`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVarTuple, runtime_checkable

__all__ = ["AsyncioDispatcher", "Dispatcher", "DispatcherClosedError", "ImmediateDispatcher"]

Ts = TypeVarTuple("Ts")


class DispatcherClosedError(RuntimeError):
    """The dispatcher's thread can no longer run callbacks (its loop or application is gone)."""


@runtime_checkable
class Dispatcher(Protocol):
    """Runs callables on one designated thread.

    `dispatch` is safe to call from any thread and never waits for `fn` to run (except for
    `ImmediateDispatcher`, which runs it in place). Calls from one thread run in the order they
    were dispatched. It raises `DispatcherClosedError` when the target thread is gone.
    """

    def dispatch(self, fn: Callable[[*Ts], object], /, *args: *Ts) -> None:
        """Arrange for `fn(*args)` to run on the dispatch thread."""
        ...

    def is_dispatch_thread(self) -> bool:
        """True when called on the thread where dispatched callables run (for assertions)."""
        ...


class ImmediateDispatcher:
    """Runs `fn(*args)` at once on the calling thread; exceptions propagate to the caller.

    For consoles, scripts and tests where there is no GUI thread to protect. Every thread
    counts as the dispatch thread.
    """

    __slots__ = ()

    def dispatch(self, fn: Callable[[*Ts], object], /, *args: *Ts) -> None:
        fn(*args)

    def is_dispatch_thread(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "ImmediateDispatcher()"


class AsyncioDispatcher:
    """Hands `fn(*args)` to an asyncio event loop with `call_soon_threadsafe`.

    The call always runs later, even when dispatched from the loop's own thread, so ordering
    does not depend on the caller. An exception raised by `fn` goes to the loop's exception
    handler. Dispatching to a closed loop raises `DispatcherClosedError`.
    """

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def dispatch(self, fn: Callable[[*Ts], object], /, *args: *Ts) -> None:
        if self._loop.is_closed():
            raise DispatcherClosedError(f"cannot dispatch {fn!r}: the event loop is closed")
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError as error:  # the loop closed between the check and the call
            raise DispatcherClosedError(f"cannot dispatch {fn!r}: {error}") from error

    def is_dispatch_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def __repr__(self) -> str:
        return f"AsyncioDispatcher(loop={self._loop!r})"
