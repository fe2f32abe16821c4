"""Drivers that poll an `IntervalSnapshotPoller` on their own schedule instead of a host timer.

`ThreadPollerDriver` owns one thread that fetches inline (blocking fetches); `AsyncioPollerDriver`
owns one task on the running loop (`async` fetches awaited; a plain fetch runs on the loop, so
keep it quick or make it async with `asyncio.to_thread`). Both wake early on `reset()` and
`close()` of the poller, and both leave nothing running once stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Any

from reactive_services.snapshot_poller import IntervalSnapshotPoller

__all__ = ["AsyncioPollerDriver", "ThreadPollerDriver"]


def _next_wait(poller: IntervalSnapshotPoller[Any], fallback: float) -> float | None:
    """Seconds to sleep before trying again; None when the poller is closed (stop)."""
    if poller.closed:
        return None
    delay = poller.seconds_until_due()
    return fallback if delay is None else min(delay, fallback)


class ThreadPollerDriver:
    """Polls on one owned, non-daemon thread; `stop()` ends and joins it.

    The thread runs each due fetch itself, then sleeps until the next one is due, waking at
    once on `reset()` or `close()` of the poller. Use as a context manager or call
    `start()`/`stop()`. Stop the driver before (or instead of) relying on `poller.close()`.
    """

    __slots__ = ("_fallback", "_poller", "_stop", "_thread", "_wake")

    def __init__(
        self, poller: IntervalSnapshotPoller[Any], *, max_sleep_seconds: float = 1.0
    ) -> None:
        self._poller = poller
        self._fallback = max_sleep_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ThreadPollerDriver already started")
        self._thread = threading.Thread(target=self._run, name="reactive-services-poller")
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and join it (waits for a fetch in progress to return)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"poller thread still running after {timeout} s (fetch blocked?)")

    def _run(self) -> None:
        remove_listener = self._poller._add_wake_listener(self._wake.set)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                ticket = self._poller._begin_fetch()
                if ticket is not None:
                    self._poller._run_fetch(ticket)
                delay = _next_wait(self._poller, self._fallback)
                if delay is None:
                    return
                self._wake.wait(delay)
        finally:
            remove_listener()

    def __enter__(self) -> ThreadPollerDriver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class AsyncioPollerDriver:
    """Polls from one task on the running event loop; `aclose()` cancels and awaits it.

    A fetch in progress when `aclose()` is called is cancelled and delivers nothing. Use as an
    async context manager or call `start()` (inside the loop) and `aclose()`.
    """

    __slots__ = ("_fallback", "_poller", "_task")

    def __init__(
        self, poller: IntervalSnapshotPoller[Any], *, max_sleep_seconds: float = 1.0
    ) -> None:
        self._poller = poller
        self._fallback = max_sleep_seconds
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Create the polling task on the running loop (call from inside it)."""
        if self._task is not None:
            raise RuntimeError("AsyncioPollerDriver already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="poller-driver")

    async def aclose(self) -> None:
        """Cancel the polling task and wait until it has ended."""
        task = self._task
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wake_from_any_thread() -> None:
            with contextlib.suppress(RuntimeError):  # loop already closed: nobody to wake
                loop.call_soon_threadsafe(wake.set)

        remove_listener = self._poller._add_wake_listener(wake_from_any_thread)
        try:
            while True:
                wake.clear()
                ticket = self._poller._begin_fetch()
                if ticket is not None:
                    await self._poller._run_fetch_async(ticket)
                delay = _next_wait(self._poller, self._fallback)
                if delay is None:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
        finally:
            remove_listener()

    async def __aenter__(self) -> AsyncioPollerDriver:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
