"""Test helpers for code built on the workflow service.

- `ScriptedBackend`: a `WorkflowBackend` whose server is a script: the test decides when an
  execution starts, reports progress (in any order, duplicated), completes, fails, honours a
  cancel, and when the server goes away or restarts. The service under test stays real.
- `RecordingHost`: a `Host` that records every callback, with the thread it ran on.
- `VirtualTimeEventLoop`: an asyncio loop whose clock jumps to the next timer when nothing
  else is ready, so liveness timeouts and poll intervals pass instantly and deterministically.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import selectors
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import attrs

from openhcs_workflow.backend import (
    BackendEvent,
    BackendUnavailable,
    ExecutionNotFound,
    ExecutionUpdate,
    Submission,
    SubmissionRejected,
    WorkflowBackend,
)
from openhcs_workflow.host import Host
from openhcs_workflow.plate_state import PlateState
from reactive_services.dispatch import Dispatcher
from zmqruntime.client import ExecutionClient
from zmqruntime.engines.poll_policy import StatusObservation
from zmqruntime.engines.signals import ExecutionSignals
from zmqruntime.execution_status import LEGAL_TRANSITIONS, ExecutionStatus
from zmqruntime.progress import Phase, ProgressStatus, ProgressUpdate

__all__ = [
    "HostCall",
    "RecordingHost",
    "ScriptedBackend",
    "ScriptedExecution",
    "VirtualTimeEventLoop",
    "executing_count",
    "until",
]


# -- the scripted server ----------------------------------------------------------------------


@attrs.define(kw_only=True)
class ScriptedExecution:
    """One execution on the scripted server."""

    execution_id: str
    handler: str
    params: dict[str, Any]
    compile_only: bool
    compile_artifact_id: str | None
    label: str | None
    epoch: str
    status: ExecutionStatus = ExecutionStatus.QUEUED
    result: Any = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    seq: int = 0
    artifact_expired: bool = False

    @property
    def plate_id(self) -> str:
        return str(self.params.get("plate_id", self.label or ""))

    def record(self) -> dict[str, Any]:
        """The execution record as the protocol describes it."""
        return {
            "execution_id": self.execution_id,
            "handler": self.handler,
            "label": self.label,
            "status": self.status.value,
            "compile_only": self.compile_only,
            "compile_artifact_id": self.compile_artifact_id,
            "result": self.result,
            "error": self.error,
        }


class ScriptedBackend(WorkflowBackend):
    """A scripted execution server behind the `WorkflowBackend` boundary.

    Server-side rules it keeps like the real one: legal status transitions only, sticky
    terminal states, per-execution `seq` shared by progress and record events, compile
    artifacts usable while complete and not expired, cancel touching one execution only,
    forgotten executions after a restart. Use it on one event loop; `clock` must be that
    loop's clock when the loop's time is virtual (`VirtualTimeEventLoop.time`).

    `cancel_running_at_once=False` makes a graceful cancel of a running execution wait for
    the script (`honour_cancel`), like a handler that checks for cancellation between steps.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        epoch: str = "epoch-1",
        cancel_running_at_once: bool = True,
    ) -> None:
        self._signals = ExecutionSignals(clock=clock)
        self.epoch = epoch
        self.online = True
        self.cancel_running_at_once = cancel_running_at_once
        self.executions: dict[str, ScriptedExecution] = {}
        self.rejections: deque[SubmissionRejected] = deque()
        self.cancel_calls: list[tuple[str, bool]] = []
        self._queue: asyncio.Queue[BackendEvent] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._closed = False
        self._change = asyncio.Event()

    # -- WorkflowBackend ------------------------------------------------------------------

    @property
    def signals(self) -> ExecutionSignals:
        return self._signals

    async def submit(
        self,
        handler: str,
        params: Mapping[str, Any],
        *,
        compile_only: bool = False,
        compile_artifact_id: str | None = None,
        label: str | None = None,
    ) -> Submission:
        self._require_online()
        if self.rejections:
            raise self.rejections.popleft()
        if compile_artifact_id is not None and not self._artifact_ok(compile_artifact_id):
            raise SubmissionRejected(
                "artifact_missing", f"compile artifact {compile_artifact_id} is unknown or expired"
            )
        execution_id = f"{next(self._ids):032x}"
        self.executions[execution_id] = ScriptedExecution(
            execution_id=execution_id,
            handler=handler,
            params=dict(params),
            compile_only=compile_only,
            compile_artifact_id=compile_artifact_id,
            label=label,
            epoch=self.epoch,
        )
        self._notify()
        return Submission(execution_id=execution_id, queue_position=self._positions()[execution_id])

    async def status(self, execution_id: str) -> StatusObservation:
        execution = self._known(execution_id)
        return StatusObservation(
            status=execution.status, payload=execution.record(), server_epoch=self.epoch
        )

    async def cancel(self, execution_id: str, *, force: bool = False) -> None:
        self.cancel_calls.append((execution_id, force))
        self._notify()
        execution = self._known(execution_id)
        if execution.status.is_terminal:
            return
        if execution.status is ExecutionStatus.QUEUED or force or self.cancel_running_at_once:
            self._transition(execution, ExecutionStatus.CANCELLED, error=_error("cancelled"))
        else:
            execution.cancel_requested = True

    async def artifact_available(self, artifact_id: str) -> bool:
        self._require_online()
        return self._artifact_ok(artifact_id)

    async def queue_positions(self) -> Mapping[str, int]:
        self._require_online()
        return self._positions()

    async def events(self) -> AsyncIterator[BackendEvent]:
        while not self._closed:
            yield await self._queue.get()

    async def aclose(self) -> None:
        self._closed = True

    # -- the script -----------------------------------------------------------------------

    async def wait_until(
        self, predicate: Callable[[ScriptedBackend], bool], timeout: float = 10.0
    ) -> None:
        """Wait until `predicate(self)` holds, re-checking after every submission, cancel and
        transition; `TimeoutError` after `timeout` seconds of the loop's clock."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._change.wait()

    def in_state(
        self, status: ExecutionStatus, *, compile_only: bool | None = None
    ) -> list[ScriptedExecution]:
        """The executions in `status` (of one kind, if `compile_only` is given)."""
        return [
            e
            for e in self.executions.values()
            if e.status is status and (compile_only is None or e.compile_only == compile_only)
        ]

    def reject_next(self, code: str = "busy", message: str = "the queue is full") -> None:
        """Refuse the next submission with this error."""
        self.rejections.append(SubmissionRejected(code, message))

    def start(self, execution_id: str) -> None:
        """queued → running."""
        self._transition(self.executions[execution_id], ExecutionStatus.RUNNING)

    def complete(self, execution_id: str, result: Any = None) -> None:
        """running → complete (a compile-only one becomes a usable artifact)."""
        self._transition(self.executions[execution_id], ExecutionStatus.COMPLETE, result=result)

    def fail(
        self, execution_id: str, message: str = "handler raised", code: str = "handler_error"
    ) -> None:
        """running → failed with an error record."""
        self._transition(
            self.executions[execution_id], ExecutionStatus.FAILED, error=_error(code, message)
        )

    def honour_cancel(self, execution_id: str) -> None:
        """A running execution whose cancel was requested stops: running → cancelled."""
        execution = self.executions[execution_id]
        if not execution.cancel_requested:
            raise ValueError(f"no cancel was requested for {execution_id}")
        self._transition(execution, ExecutionStatus.CANCELLED, error=_error("cancelled"))

    def expire_artifact(self, artifact_id: str) -> None:
        self.executions[artifact_id].artifact_expired = True

    def progress(
        self,
        execution_id: str,
        *,
        axis_id: str,
        step_index: int = 0,
        total_steps: int = 1,
        phase: Phase | str = Phase.STEP_STARTED,
        status: ProgressStatus | str = ProgressStatus.RUNNING,
        completed: int = 0,
        total: int = 0,
        step_name: str | None = None,
        deliver: bool = True,
    ) -> ProgressUpdate:
        """Make the execution's next progress event (next `seq`); deliver it now or later."""
        execution = self.executions[execution_id]
        execution.seq += 1
        event = ProgressUpdate(
            execution_id=execution_id,
            plate_id=execution.plate_id,
            axis_id=axis_id,
            step_name=step_name if step_name is not None else f"step{step_index}",
            step_index=step_index,
            total_steps=total_steps,
            phase=Phase(phase),
            status=ProgressStatus(status),
            completed=completed,
            total=total,
            percent=100.0 * completed / total if total else 0.0,
            timestamp=1_700_000_000.0 + execution.seq,
            seq=execution.seq,
        )
        if deliver:
            self.deliver(event)
        return event

    def deliver(self, event: BackendEvent) -> None:
        """Publish an event (again, late, out of order: whatever the script wants)."""
        if not self.online:
            return
        self._queue.put_nowait(event)
        self._signals.notify_event(event.execution_id, self.epoch)

    def heartbeat(self) -> None:
        """A heartbeat of the current server (nothing while offline)."""
        if self.online:
            self._signals.notify_heartbeat(self.epoch)

    def go_offline(self) -> None:
        """The server dies: requests fail, no more events or heartbeats."""
        self.online = False

    def restart(self, epoch: str) -> None:
        """A new server process: it knows none of the old executions; its heartbeat says so."""
        self.online = True
        self.epoch = epoch
        self._signals.notify_heartbeat(epoch)

    # -- internals ------------------------------------------------------------------------

    def _notify(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def _require_online(self) -> None:
        if not self.online:
            raise BackendUnavailable("scripted server is offline")

    def _known(self, execution_id: str) -> ScriptedExecution:
        self._require_online()
        execution = self.executions.get(execution_id)
        if execution is None or execution.epoch != self.epoch:
            raise ExecutionNotFound(f"not_found: no execution {execution_id}")
        return execution

    def _artifact_ok(self, artifact_id: str) -> bool:
        execution = self.executions.get(artifact_id)
        return (
            execution is not None
            and execution.epoch == self.epoch
            and execution.compile_only
            and execution.status is ExecutionStatus.COMPLETE
            and not execution.artifact_expired
        )

    def _positions(self) -> dict[str, int]:
        queued = [
            e.execution_id
            for e in self.executions.values()
            if e.status is ExecutionStatus.QUEUED and e.epoch == self.epoch
        ]
        return {eid: i for i, eid in enumerate(queued, start=1)}

    def _transition(
        self,
        execution: ScriptedExecution,
        status: ExecutionStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        if status not in LEGAL_TRANSITIONS[execution.status]:
            raise ValueError(
                f"illegal transition {execution.status} → {status} of {execution.execution_id}"
            )
        execution.status = status
        execution.result = result
        execution.error = error
        execution.seq += 1
        self._notify()
        self.deliver(
            ExecutionUpdate(
                execution_id=execution.execution_id,
                status=status,
                seq=execution.seq,
                server_epoch=self.epoch,
            )
        )


def _error(code: str, message: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message or code, "traceback": None}


# -- a recording host -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HostCall:
    """One host callback: its name, arguments, thread, and whether that was the dispatch thread."""

    name: str
    args: tuple[Any, ...]
    thread: int
    on_dispatch_thread: bool


class RecordingHost(Host):
    """Records every callback in `calls` (thread-safe); `off_thread` lists the ones that ran
    off the dispatcher's thread (it should stay empty)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._lock = threading.Condition()
        self.calls: list[HostCall] = []

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher

    def _record(self, name: str, *args: Any) -> None:
        call = HostCall(
            name=name,
            args=args,
            thread=threading.get_ident(),
            on_dispatch_thread=self._dispatcher.is_dispatch_thread(),
        )
        with self._lock:
            self.calls.append(call)
            self._lock.notify_all()

    def wait_for_call(self, name: str, count: int = 1, timeout: float = 10.0) -> list[HostCall]:
        """Block until `name` was called `count` times (from any thread); `TimeoutError`."""
        with self._lock:
            if not self._lock.wait_for(
                lambda: sum(c.name == name for c in self.calls) >= count, timeout
            ):
                raise TimeoutError(f"{name} was not called {count} time(s) within {timeout} s")
            return [c for c in self.calls if c.name == name]

    @property
    def off_thread(self) -> list[HostCall]:
        with self._lock:
            return [c for c in self.calls if not c.on_dispatch_thread]

    def named(self, name: str) -> list[HostCall]:
        with self._lock:
            return [c for c in self.calls if c.name == name]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def emit_status(self, msg: str) -> None:
        self._record("emit_status", msg)

    def emit_error(self, msg: str) -> None:
        self._record("emit_error", msg)

    def emit_progress_started(self, total: int) -> None:
        self._record("emit_progress_started", total)

    def emit_progress_updated(self, done: int) -> None:
        self._record("emit_progress_updated", done)

    def emit_progress_finished(self) -> None:
        self._record("emit_progress_finished")

    def update_item_list(self) -> None:
        self._record("update_item_list")

    def update_button_states(self) -> None:
        self._record("update_button_states")

    def emit_orchestrator_state(self, plate_id: str, state: PlateState) -> None:
        self._record("emit_orchestrator_state", plate_id, state)

    def emit_execution_complete(self, result: Mapping[str, Any], plate_id: str) -> None:
        self._record("emit_execution_complete", result, plate_id)

    def on_plate_completed(
        self, plate_id: str, status: PlateState, result: Mapping[str, Any]
    ) -> None:
        self._record("on_plate_completed", plate_id, status, result)

    def on_all_plates_completed(self, completed: int, failed: int, cancelled: int) -> None:
        self._record("on_all_plates_completed", completed, failed, cancelled)


# -- virtual time -----------------------------------------------------------------------------


class _JumpingSelector(selectors.BaseSelector):
    """Delegates to a real selector, but instead of sleeping until the next timer it moves the
    loop's virtual clock there (file descriptors are still checked, without waiting)."""

    def __init__(self) -> None:
        self._inner = selectors.DefaultSelector()
        self.loop: VirtualTimeEventLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer at all: only a file descriptor can wake us
            return self._inner.select(None)
        assert self.loop is not None
        self.loop.advance(timeout)
        return []

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: when no callback is ready, the clock jumps to the next
    timer instead of waiting for it. `loop.time()` is the virtual clock (starting at 0).

    The clock moves in ticks of 1/1024 s: with timeouts and intervals that are binary
    fractions too (1.0, 0.25, 5.0), every sum and difference of clock readings is exact, so
    code comparing `now - start >= limit` in one place and waiting `start + limit - now` in
    another never disagrees by a rounding error (which, on a clock that only moves when the
    loop idles, would be a busy loop).
    """

    TICK = 1 / 1024

    def __init__(self) -> None:
        self._virtual_now = 0.0
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (timers due by then run at the next loop iteration)."""
        if seconds > 0:
            self._virtual_now = math.ceil((self._virtual_now + seconds) / self.TICK) * self.TICK


async def until(client: ExecutionClient, check: Callable[[], Awaitable[bool] | bool]) -> None:
    """Re-check `check()` on every event of `client`'s server (heartbeats included) until it
    holds: a condition-wait for tests against a real server, with no sleeps."""
    async for _ in client.events():
        verdict = check()
        if verdict if isinstance(verdict, bool) else await verdict:
            return


def executing_count(host: RecordingHost) -> int:
    """How many plates `host` was told are executing."""
    states = [c.args[1] for c in host.named("emit_orchestrator_state")]
    return states.count(PlateState.EXECUTING)
