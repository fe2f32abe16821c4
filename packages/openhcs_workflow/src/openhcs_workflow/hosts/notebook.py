"""`NotebookHost`: a batch in a Jupyter notebook, drawn from the kernel's own thread.

ipykernel 7 does not show widget updates made from other threads, so every callback runs on
the kernel's thread, through `NotebookDispatcher`:

- awaiting the service in a cell (`await service.run_plates(...)`): callbacks run on the
  kernel's asyncio loop while the cell awaits, so bars move live;
- the blocking API (`BlockingBatchWorkflowService`, whose service runs on a loop thread of
  its own): `host.wait(workflow.start_run(...))` blocks the cell and runs the callbacks on
  the kernel's thread while it waits, so bars move live too. A plain blocking call
  (`workflow.run_plates(...)`) also works; its callbacks run when the cell calls
  `host.drain()`, or once the cell returns.

Progress bars come from `tqdm.auto` (widgets when ipywidgets is installed, text otherwise);
the status line and errors are one display updated in place (HTML with a text fallback, so
a saved notebook shows them without any widget state).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import html
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

from openhcs_workflow.hosts.bars import TqdmBars
from openhcs_workflow.hosts.display import BatchDisplayHost
from openhcs_workflow.hosts.optional import import_optional
from openhcs_workflow.hosts.rows import BatchProgress
from reactive_services.dispatch import DispatcherClosedError

__all__ = ["NotebookDispatcher", "NotebookHost"]


def _notebook_module(name: str) -> Any:
    return import_optional(name, extra="notebook", needed_for="NotebookHost")


log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def _running_loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    if loop is not None:
        return loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "NotebookDispatcher needs the kernel's event loop: create it in a notebook cell "
            "(or pass loop=)"
        ) from None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class NotebookDispatcher:
    """Runs callbacks on the thread of the kernel's event loop, in dispatch order.

    Callbacks are queued and drained by the loop (`call_soon_threadsafe`) or, while a cell
    blocks in `wait`, by that cell, on the same thread. An exception raised by a callback is
    logged and does not stop the ones after it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = _running_loop(loop)
        self._thread: int | None = None
        self._queue: collections.deque[Callable[[], object]] = collections.deque()
        self._ready = threading.Condition()
        if _on_loop(self._loop):
            self._thread = threading.get_ident()
        else:
            self._loop.call_soon_threadsafe(self._bind_thread)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _bind_thread(self) -> None:
        self._thread = threading.get_ident()

    def dispatch(self, fn: Callable[[*Ts], object], /, *args: *Ts) -> None:
        if self._loop.is_closed():
            raise DispatcherClosedError(f"cannot dispatch {fn!r}: the kernel's loop is closed")
        with self._ready:
            self._queue.append(functools.partial(fn, *args))
            self._ready.notify_all()
        try:
            self._loop.call_soon_threadsafe(self.drain)
        except RuntimeError as error:  # the loop closed meanwhile
            raise DispatcherClosedError(f"cannot dispatch {fn!r}: {error}") from error

    def is_dispatch_thread(self) -> bool:
        return threading.get_ident() == self._thread

    def drain(self) -> int:
        """Run every queued callback now (on the kernel's thread); returns how many ran."""
        ran = 0
        while True:
            with self._ready:
                if not self._queue:
                    return ran
                call = self._queue.popleft()
            try:
                call()
            except Exception:
                log.exception("notebook callback %r raised", call)
            ran += 1

    def wait(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """Block until `future` is done, running dispatched callbacks meanwhile; its result.

        Call it on the kernel's thread (a cell). On `timeout` (seconds) raises TimeoutError
        and leaves the future running; on KeyboardInterrupt (the kernel's interrupt button)
        cancels the future, then re-raises.
        """
        if not self.is_dispatch_thread():
            raise RuntimeError("NotebookDispatcher.wait must be called on the kernel's thread")
        deadline = None if timeout is None else time.monotonic() + timeout

        def wake(_: object) -> None:
            with self._ready:
                self._ready.notify_all()

        future.add_done_callback(wake)
        try:
            while not future.done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"the operation did not finish within {timeout} s")
                with self._ready:
                    self._ready.wait_for(lambda: bool(self._queue) or future.done(), remaining)
                self.drain()
        except KeyboardInterrupt:
            future.cancel()
            raise
        self.drain()
        return future.result()

    def __repr__(self) -> str:
        return f"NotebookDispatcher(loop={self._loop!r})"


class _StatusView:
    """The status line and errors, as HTML with a plain-text fallback."""

    def __init__(self, status: str, errors: list[str]) -> None:
        self.status = status
        self.errors = list(errors)

    def _repr_html_(self) -> str:
        lines = [f"<div><b>{html.escape(self.status)}</b></div>"] if self.status else []
        lines += [f'<div style="color:#b00">{html.escape(e)}</div>' for e in self.errors]
        return "".join(lines) or "<div></div>"

    def __repr__(self) -> str:
        return "\n".join([self.status, *(f"error: {e}" for e in self.errors)])


class NotebookHost(BatchDisplayHost):
    """Progress bars (`tqdm.auto`) and a status display for the batches of one service.

    Create it in a cell (it binds to the kernel's loop), then
    `host.attach(service.view)`. `tqdm_class` replaces `tqdm.auto.tqdm`; `tqdm_options` go
    to every bar.
    """

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        tqdm_class: Any = None,
        **tqdm_options: Any,
    ) -> None:
        self._notebook_dispatcher = NotebookDispatcher(loop)
        super().__init__(self._notebook_dispatcher)
        if tqdm_class is None:
            tqdm_class = _notebook_module("tqdm.auto").tqdm
        self._bars = TqdmBars(tqdm_class, **tqdm_options)
        self._display: Any = _notebook_module("IPython.display")
        self._handle: Any = None
        self._first_error = 0  # errors shown start here (the current batch's)

    def wait(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """Block the cell until `future` (e.g. `workflow.start_run(...)`) is done, drawing
        progress meanwhile; returns its result (see `NotebookDispatcher.wait`)."""
        return self._notebook_dispatcher.wait(future, timeout)

    def drain(self) -> int:
        """Run the callbacks that arrived while the cell was busy, now, in this cell (e.g.
        after a plain blocking `workflow.run_plates(...)`); returns how many ran."""
        return self._notebook_dispatcher.drain()

    def _show(self, *, create: bool) -> None:
        """Update the status display; make a new one (below the bars) when `create`."""
        view = _StatusView(self.status, self.errors[self._first_error :])
        if self._handle is not None:
            self._handle.update(view)
        elif create:
            self._handle = self._display.display(view, display_id=True)

    def show_batch_started(self, progress: BatchProgress) -> None:
        self._bars.open(progress)
        self._handle = None
        self._first_error = len(self.errors)
        self._show(create=True)

    def show_progress(self, progress: BatchProgress) -> None:
        self._bars.update(progress)

    def show_status(self, text: str) -> None:
        self._show(create=False)  # between batches, only the batch's own display changes

    def show_error(self, text: str) -> None:
        self._show(create=True)  # an error outside a batch (a refused run) is shown too

    def show_batch_finished(self, progress: BatchProgress) -> None:
        self._bars.update(progress)
        self._bars.close()
        self._show(create=False)
        self._handle = None
