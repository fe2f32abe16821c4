"""The server's smaller parts on their own: handler registration, compile artifacts, what a
handler sees in its JobContext, how worker exits are described; and a server running its
handlers on another kind of executor (a thread pool)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
from typing import Any

import pytest

from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import Cancel, CancelReply, ErrorCode, ServerStatus, StatusRequest, Submit
from zmqruntime.progress import Phase, ProgressStatus, ProgressUpdate
from zmqruntime.schema import SchemaError
from zmqruntime.server import ExecutionCancelled, HandlerRegistry, HandlerSpecError, JobContext
from zmqruntime.server.artifacts import ArtifactStore
from zmqruntime.server.worker_pool import describe_exit
from zmqruntime.testing import serve_and_connect
from zmqruntime.testing.handlers import HANDLERS, echo

S = ExecutionStatus


def test_handlers_register_by_importable_reference() -> None:
    registry = HandlerRegistry({"echo": echo})
    assert registry["echo"] == "zmqruntime.testing.handlers:echo"
    from_string = HandlerRegistry("zmqruntime.testing.handlers:HANDLERS")
    assert from_string.names == sorted(HANDLERS)


def nested_factory() -> Any:
    def inner(ctx: JobContext) -> None:
        return None

    return inner


@pytest.mark.parametrize(
    ("handlers", "message"),
    [
        ({"l": lambda ctx: None}, "lambda or nested function"),
        ({"n": nested_factory()}, "lambda or nested function"),
        ({"x": 42}, "expected a function"),
        ({}, "at least one handler"),
        ({"": echo}, "non-empty string"),
        ("zmqruntime.testing.handlers", "expected 'package.module:ATTR'"),
        ("no_such_module_here:HANDLERS", "cannot import module 'no_such_module_here'"),
        ("zmqruntime.testing.handlers:NOPE", "'NOPE' not found"),
        ("zmqruntime.testing.handlers:echo", "expected a mapping"),
    ],
)
def test_unusable_handlers_are_refused_with_the_reason(handlers: Any, message: str) -> None:
    with pytest.raises(HandlerSpecError, match=message):
        HandlerRegistry(handlers)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_artifacts_expire_after_their_ttl_and_are_bounded() -> None:
    clock = Clock()
    store = ArtifactStore(ttl=10.0, clock=clock, max_artifacts=2)
    store.put("a", {"plan": 1})
    clock.now = 5.0
    store.put("b", [1, 2])
    assert store.get("a") == (True, {"plan": 1})
    assert "b" in store
    clock.now = 10.0  # "a" is exactly 10 s old: expired
    assert store.get("a") == (False, None)
    assert len(store) == 1
    store.put("c", 3)
    store.put("d", 4)  # beyond two artifacts the oldest goes
    assert "b" not in store
    assert store.sweep() == []
    with pytest.raises(ValueError, match="ttl"):
        ArtifactStore(ttl=0)


class Recorder:
    """A report channel that keeps what it is given (JobContext's logic, not the transport)."""

    def __init__(self) -> None:
        self.sent: list[ProgressUpdate] = []
        self.cancelled: set[str] = set()

    def send_progress(self, update: ProgressUpdate) -> bool:
        self.sent.append(update)
        return True

    def is_cancelled(self, execution_id: str) -> bool:
        return execution_id in self.cancelled


def test_job_context_fills_in_progress_and_checks_it() -> None:
    channel = Recorder()
    ctx = JobContext(
        execution_id="e" * 32,
        handler="h",
        params={"p": 1},
        artifact=None,
        compile_only=False,
        channel=channel,
    )
    update = ctx.progress(
        plate_id="plate",
        axis_id="A01",
        step_name="Blur",
        step_index=1,
        total_steps=3,
        phase="step_started",
        status=ProgressStatus.RUNNING,
        completed=1,
        total=4,
    )
    assert update.percent == 25.0
    assert update.execution_id == "e" * 32
    assert update.phase is Phase.STEP_STARTED
    assert update.timestamp > 0
    assert channel.sent == [update]
    assert ctx.reports_sent == 1
    with pytest.raises(SchemaError, match="completed"):
        ctx.progress(
            plate_id="plate",
            axis_id="A01",
            step_name="Blur",
            step_index=0,
            total_steps=1,
            phase=Phase.INIT,
            status=ProgressStatus.RUNNING,
            completed=5,
            total=4,
        )
    with pytest.raises(ValueError, match="not this execution"):
        ctx.report(update.__class__.from_wire({**update.to_wire(), "execution_id": "x"}))
    assert not ctx.cancelled()
    channel.cancelled.add("e" * 32)
    with pytest.raises(ExecutionCancelled):
        ctx.raise_if_cancelled()


def test_exits_are_described_by_signal_or_code() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by signal SIGKILL (9)"
    assert describe_exit(3) == "exited with code 3"


def threads(workers: int) -> concurrent.futures.Executor:
    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="zr-test")


def test_any_executor_works_here_a_thread_pool() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=2, executor_factory=threads) as (server, peer):
            reply = await peer.request(Submit(handler="report", params={"n": 5}))
            record = await peer.wait_status(reply.execution_id, S.COMPLETE, S.FAILED)
            assert record.result == {"reported": 5}
            assert record.worker_pid == os.getpid()  # threads of the server process
            assert len(peer.events_of(reply.execution_id)) == 8
            blocked = await peer.request(Submit(handler="wait_for_cancel", params={}))
            await peer.wait_progress(blocked.execution_id)
            # Forced cancel cannot end a thread (and never kills the server): it degrades to
            # the cooperative request, which the handler honours.
            cancelled = await peer.request(Cancel(execution_id=blocked.execution_id, force=True))
            assert isinstance(cancelled, CancelReply)
            assert cancelled.changed
            record = await peer.wait_status(blocked.execution_id, S.CANCELLED)
            assert record.error is not None
            assert record.error.code is ErrorCode.CANCELLED
            status = await peer.request(StatusRequest(execution_id=None))
            assert isinstance(status, ServerStatus)
            assert status.workers == ()  # no worker processes of its own to measure
            assert server.counters.internal_errors == 0

    asyncio.run(scenario())
