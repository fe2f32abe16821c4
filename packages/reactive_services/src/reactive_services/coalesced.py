"""Request coalescing: at most one active job and at most one follow-up, however many requests.

A request while a job runs marks one follow-up; the follow-up runs once after the active job
ends and sees every change requested before it started. Typical use: "refresh the plate list"
requested by many events, run at most one refresh at a time and never lose the last request.

`CoalescedRequests` is the asyncio version (the job is `async`); `BlockingCoalescedRequests`
runs a plain job on the thread whose request found it idle, with no thread of its own. A job
that raises is reported to `on_error` (default: logged) and a pending follow-up still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

__all__ = ["BlockingCoalescedRequests", "CoalescedRequests"]

logger = logging.getLogger(__name__)

ErrorHook = Callable[[Exception], None]


def _log_job_error(error: Exception) -> None:
    logger.error("coalesced job raised", exc_info=error)


class _CoalesceState:
    """The pure bookkeeping both versions share (callers serialize access)."""

    __slots__ = ("active", "closed", "follow_up")

    def __init__(self) -> None:
        self.active = False
        self.follow_up = False
        self.closed = False

    def on_request(self) -> bool:
        """Record a request; True if the caller must start a run now."""
        if self.closed:
            return False
        if self.active:
            self.follow_up = True
            return False
        self.active = True
        return True

    def on_run_finished(self) -> bool:
        """Record the end of a run; True if the follow-up must run now."""
        if self.follow_up and not self.closed:
            self.follow_up = False
            return True
        self.active = self.follow_up = False
        return False

    def on_abandoned(self) -> None:
        """The runner stopped early (cancelled, interrupted): nothing is active or pending."""
        self.active = self.follow_up = False


def _report(on_error: ErrorHook, error: Exception) -> None:
    try:
        on_error(error)
    except Exception:
        logger.exception("on_error hook of a coalesced job raised")


class _StateView:
    """The read-only view of a `_CoalesceState` both public classes offer."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = _CoalesceState()

    @property
    def is_active(self) -> bool:
        """A run is under way."""
        return self._state.active

    @property
    def follow_up_pending(self) -> bool:
        """A request arrived during the run: one more run follows it."""
        return self._state.follow_up

    @property
    def closed(self) -> bool:
        """Closed: requests are refused."""
        return self._state.closed


class CoalescedRequests(_StateView):
    """Coalesces requests for an async job on one event loop.

    `request()` returns at once (True if it started a run); call it on the loop's thread (from
    other threads, go through an `AsyncioDispatcher`). `wait_idle()` waits until no job is
    active or pending; `aclose()` refuses further requests, drops a pending follow-up and, by
    default, cancels the active job.
    """

    __slots__ = ("_idle", "_job", "_loop", "_on_error", "_task")

    def __init__(
        self, job: Callable[[], Awaitable[object]], *, on_error: ErrorHook | None = None
    ) -> None:
        self._job = job
        self._on_error = on_error if on_error is not None else _log_job_error
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def request(self) -> bool:
        """Ask for a run: starts one if idle (True), else marks the follow-up (False)."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("CoalescedRequests is bound to another event loop")
        if not self._state.on_request():
            return False
        self._idle.clear()
        self._task = loop.create_task(self._drive(), name="coalesced-requests")
        return True

    async def wait_idle(self) -> None:
        """Return once no job is active and no follow-up is pending."""
        await self._idle.wait()

    async def aclose(self, *, cancel: bool = True) -> None:
        """Refuse new requests and drop the follow-up; cancel (or await) the active job."""
        self._state.closed = True
        self._state.follow_up = False
        task = self._task
        if task is None:
            return
        if cancel:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _drive(self) -> None:
        try:
            while True:
                try:
                    await self._job()
                except Exception as error:
                    _report(self._on_error, error)
                if not self._state.on_run_finished():
                    return
        finally:
            self._state.on_abandoned()
            self._idle.set()


class BlockingCoalescedRequests(_StateView):
    """Coalesces requests for a plain job; thread-safe, owns no thread.

    The request that finds it idle runs the job (and any follow-up) on its own thread before
    returning True; a request arriving meanwhile, from any thread (or from the job itself),
    marks the follow-up and returns False at once. `close()` refuses further requests and
    drops a pending follow-up; the active run finishes.
    """

    __slots__ = ("_cond", "_job", "_on_error")

    def __init__(self, job: Callable[[], object], *, on_error: ErrorHook | None = None) -> None:
        self._job = job
        self._on_error = on_error if on_error is not None else _log_job_error
        super().__init__()
        self._cond = threading.Condition()

    def request(self) -> bool:
        """Run the job now if idle (True, after it and any follow-up ran); else mark a follow-up."""
        with self._cond:
            if not self._state.on_request():
                return False
        finished = False
        try:
            while True:
                try:
                    self._job()
                except Exception as error:
                    _report(self._on_error, error)
                with self._cond:
                    if not self._state.on_run_finished():
                        finished = True
                        self._cond.notify_all()
                        return True
        finally:
            if not finished:
                with self._cond:
                    self._state.on_abandoned()
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no job is active or pending; False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._state.active, timeout)

    def close(self) -> None:
        """Refuse further requests and drop a pending follow-up."""
        with self._cond:
            self._state.closed = True
            self._state.follow_up = False
