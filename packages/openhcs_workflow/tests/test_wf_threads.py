"""Every host callback runs on the host dispatcher's thread, never on the service's or a
worker's thread (the predecessor touched Qt widgets from poller threads)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from openhcs_workflow import BatchWorkflowService, BlockingBatchWorkflowService, PlateSpec
from openhcs_workflow.testing import RecordingHost, ScriptedBackend
from reactive_services.dispatch import AsyncioDispatcher
from zmqruntime.execution_status import ExecutionStatus

QUEUED = ExecutionStatus.QUEUED
OPTIONS = {
    "liveness_timeout": 2.0,
    "poll_interval": 0.05,
    "queue_poll_interval": 0.05,
    "compile_failure_policy": "run_compiled",
}


def _specs(*plate_ids: str) -> list[PlateSpec]:
    return [PlateSpec(plate_id=p, pipeline=[{"name": "blur"}]) for p in plate_ids]


@pytest.fixture
def gui_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """A stand-in GUI thread running its own event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gui", daemon=True)
    thread.start()
    yield loop, thread
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def _serve(backend: ScriptedBackend, plates: int, failing: str) -> None:
    """The server's side of one run: compile all (one fails), then run the rest."""
    await backend.wait_until(lambda b: len(b.in_state(QUEUED, compile_only=True)) == plates)
    for execution in backend.in_state(QUEUED, compile_only=True):
        backend.start(execution.execution_id)
        if execution.plate_id == failing:
            backend.fail(execution.execution_id, "bad step")
        else:
            backend.complete(execution.execution_id)
    await backend.wait_until(lambda b: len(b.in_state(QUEUED, compile_only=False)) == plates - 1)
    for execution in backend.in_state(QUEUED, compile_only=False):
        backend.start(execution.execution_id)
        backend.progress(execution.execution_id, axis_id="A01", phase="axis_completed")
        backend.complete(execution.execution_id, {"wells": 1})


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Wait until the GUI loop ran every callback dispatched so far (FIFO)."""
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)


def _assert_all_on(host: RecordingHost, thread: threading.Thread) -> None:
    assert host.calls, "the host received no callbacks"
    assert host.off_thread == []
    assert {c.thread for c in host.calls} == {thread.ident}


def test_blocking_service_calls_back_on_the_gui_thread(
    gui_loop: tuple[asyncio.AbstractEventLoop, threading.Thread],
) -> None:
    loop, gui = gui_loop
    host = RecordingHost(AsyncioDispatcher(loop))
    with BlockingBatchWorkflowService(host, ScriptedBackend, **OPTIONS) as workflow:
        backend = workflow.service.backend
        assert isinstance(backend, ScriptedBackend)
        future = workflow.start_run(_specs("p1", "p2", "p3"))
        workflow.run_on_loop(lambda: _serve(backend, 3, failing="p2"))
        report = future.result(10)
        assert (report.completed, report.failed, report.cancelled) == (2, 1, 0)
        # A stopped batch goes through the same dispatcher (p1 reuses its compile artifact,
        # so its execution is what gets submitted).
        before = len(backend.executions)
        stopped = workflow.start_run(_specs("p1"))
        workflow.run_on_loop(lambda: backend.wait_until(lambda b: len(b.executions) > before))
        workflow.stop()
        assert stopped.result(10).cancelled == 1
    host.wait_for_call("on_all_plates_completed", 2)
    _drain(loop)
    _assert_all_on(host, gui)
    assert [c.args for c in host.named("on_all_plates_completed")] == [(2, 1, 0), (0, 0, 1)]


def test_async_service_calls_back_on_the_gui_thread(
    gui_loop: tuple[asyncio.AbstractEventLoop, threading.Thread],
) -> None:
    loop, gui = gui_loop
    host = RecordingHost(AsyncioDispatcher(loop))

    async def main() -> None:
        backend = ScriptedBackend()
        service = BatchWorkflowService(host, backend, **OPTIONS)  # type: ignore[arg-type]
        run = asyncio.create_task(service.run_plates(_specs("a", "b")))
        await _serve(backend, 2, failing="b")
        report = await run
        assert (report.completed, report.failed) == (1, 1)
        await service.shutdown()

    asyncio.run(main())
    host.wait_for_call("on_all_plates_completed")
    _drain(loop)
    _assert_all_on(host, gui)
