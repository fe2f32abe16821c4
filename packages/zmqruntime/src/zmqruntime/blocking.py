"""Running asyncio code from blocking code: `run_blocking` and `LoopThread`.

The library is async first; these are the thin blocking wrappers (the httpx Client /
AsyncClient split). `run_blocking(factory)` runs one async operation to its end:

- with no event loop running in the calling thread, on a private loop (`asyncio.Runner`),
  which turns Ctrl-C into a cancellation of the operation, then raises KeyboardInterrupt;
- inside a running loop (a Jupyter cell), on a `LoopThread` started for the call and
  joined before returning; the caller's thread blocks until the operation ends. The
  operation must therefore not need the caller's loop.

`LoopThread` is an event loop in a thread of its own, with an explicit lifetime (`start`,
`stop`, or a `with` block): a blocking client keeps its sockets on one loop this way. `stop`
cancels what still runs on it, closes the loop and joins the thread. The thread is a daemon
only so that a LoopThread someone forgot to stop cannot hang interpreter exit; every user
in this package stops its threads.

The operation is passed as a factory (`lambda: client.status(x)`) so its coroutine is
created on the loop that runs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["LoopThread", "run_blocking"]

T = TypeVar("T")


async def _call(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


def run_blocking(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run `await coro_factory()` to its end from blocking code and return its result.

    Exceptions propagate unchanged. Ctrl-C (KeyboardInterrupt) cancels the operation,
    waits for it to unwind, then propagates.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner() as runner:
            return runner.run(_call(coro_factory))
    with LoopThread(name="zmqruntime-run-blocking") as thread:
        return thread.run(coro_factory)


class LoopThread:
    """An asyncio event loop running in a dedicated thread, for blocking callers.

    Single use: `start()` once, `stop()` once (further calls do nothing). Not re-entrant:
    `run` and `stop` raise RuntimeError when called from the loop's own thread.
    """

    def __init__(self, *, name: str = "zmqruntime-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._pending: set[tuple[concurrent.futures.Future[Any], threading.Event]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The thread's loop (RuntimeError before `start`)."""
        if self._loop is None:
            raise RuntimeError("LoopThread is not started")
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped

    def start(self) -> Self:
        """Start the thread and return once its loop runs."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("LoopThread can be started only once")
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._loop = loop
            self._thread = threading.Thread(
                target=self._main, args=(loop, ready), name=self.name, daemon=True
            )
            self._thread.start()
        ready.wait()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Cancel what still runs on the loop, close it and join the thread.

        Raises TimeoutError if the thread did not end within `timeout` seconds.
        """
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                self._stopped = True
                return
            self._check_not_on_loop_thread("stop")
            if not self._stopped:
                self._stopped = True
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"{self.name}: loop thread still running after {timeout} s")

    def submit(self, coro_factory: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Start `await coro_factory()` on the loop; cancelling the future cancels it."""
        return self._submit(coro_factory)[0]

    def run(self, coro_factory: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run `await coro_factory()` on the loop and block until it ends.

        On KeyboardInterrupt or `timeout` (TimeoutError) the operation is cancelled and
        waited for before the exception propagates.
        """
        self._check_not_on_loop_thread("run")
        future, finished = self._submit(coro_factory)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            finished.wait()
            raise

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _check_not_on_loop_thread(self, what: str) -> None:
        if self._thread is threading.current_thread():
            raise RuntimeError(f"LoopThread.{what} called from the loop's own thread")

    def _submit(
        self, coro_factory: Callable[[], Awaitable[T]]
    ) -> tuple[concurrent.futures.Future[T], threading.Event]:
        loop = self.loop
        # The future stays pending while the task runs, so `future.cancel()` works from any
        # thread and is forwarded to the task; `finished` is set once the task has unwound.
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        finished = threading.Event()
        entry = (future, finished)

        def settle(done: asyncio.Task[T]) -> None:
            try:
                if done.cancelled():
                    future.cancel()
                elif not future.set_running_or_notify_cancel():
                    pass  # cancelled by the caller while the task was finishing
                elif (error := done.exception()) is not None:
                    future.set_exception(error)
                else:
                    future.set_result(done.result())
            finally:
                self._forget(entry)

        def start() -> None:
            if future.cancelled():
                self._forget(entry)
                return
            task = loop.create_task(_call(coro_factory))
            task.add_done_callback(settle)

            def forward_cancel(f: concurrent.futures.Future[T]) -> None:
                if f.cancelled() and not task.done():
                    with contextlib.suppress(RuntimeError):  # the loop already closed
                        loop.call_soon_threadsafe(task.cancel)

            future.add_done_callback(forward_cancel)

        with self._lock:
            if not self.running:
                raise RuntimeError("LoopThread is not running")
            self._pending.add(entry)
            loop.call_soon_threadsafe(start)
        return entry

    def _forget(self, entry: tuple[concurrent.futures.Future[Any], threading.Event]) -> None:
        with self._lock:
            self._pending.discard(entry)
        entry[1].set()

    def _main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                _cancel_remaining(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                with self._lock:
                    never_started = list(self._pending)
                for future, _ in never_started:
                    future.cancel()
                for entry in never_started:
                    self._forget(entry)


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    gathered: Any = asyncio.gather(*tasks, return_exceptions=True)
    loop.run_until_complete(gathered)
