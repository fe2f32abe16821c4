"""Shared fixtures for the openhcs_workflow tests: a workflow harness on virtual time.

The harness runs the real `BatchWorkflowService` on a `VirtualTimeEventLoop` against a
`ScriptedBackend` (the execution server is a script; the service is not faked), with a
`RecordingHost` whose dispatcher is the same loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from openhcs_workflow import BatchReport, BatchWorkflowService, PlateSpec
from openhcs_workflow.testing import (
    RecordingHost,
    ScriptedBackend,
    ScriptedExecution,
    VirtualTimeEventLoop,
)
from reactive_services.dispatch import AsyncioDispatcher
from zmqruntime.execution_status import ExecutionStatus

LIVENESS = 5.0
POLL = 1.0


def plate_specs(*plate_ids: str, steps: int = 2) -> list[PlateSpec]:
    """One spec per plate with a small pipeline of registered-function names."""
    pipeline = [{"name": f"step{i}", "params": {"sigma": i + 1}} for i in range(steps)]
    return [PlateSpec(plate_id=p, pipeline=pipeline) for p in plate_ids]


class Harness:
    """The service under test, its scripted server and its recording host, on virtual time."""

    def __init__(self, **options: Any) -> None:
        self.loop = VirtualTimeEventLoop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.backend = ScriptedBackend(
            clock=self.loop.time,
            cancel_running_at_once=options.pop("cancel_running_at_once", True),
        )
        self.host = RecordingHost(AsyncioDispatcher(self.loop))
        options.setdefault("liveness_timeout", LIVENESS)
        options.setdefault("poll_interval", POLL)
        self.service = BatchWorkflowService(self.host, self.backend, **options)

    def run(self, seconds: float = 0.001) -> None:
        """Let the loop work for `seconds` of virtual time (instant in real time)."""
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def call(self, factory: Callable[[], Any]) -> Any:
        """Run one coroutine of the service to its end on the loop."""
        return self.loop.run_until_complete(factory())

    def start_run(self, *plate_ids: str, **kw: Any) -> asyncio.Task[BatchReport]:
        task = self.loop.create_task(self.service.run_plates(plate_specs(*plate_ids, **kw)))
        self.run()
        return task

    def start_compile(self, *plate_ids: str, **kw: Any) -> asyncio.Task[BatchReport]:
        task = self.loop.create_task(self.service.compile_plates(plate_specs(*plate_ids, **kw)))
        self.run()
        return task

    def executions(
        self, *, compile_only: bool | None = None, status: ExecutionStatus | None = None
    ) -> list[ScriptedExecution]:
        return [
            e
            for e in self.backend.executions.values()
            if (compile_only is None or e.compile_only == compile_only)
            and (status is None or e.status is status)
        ]

    def execution_of(self, plate_id: str, *, compile_only: bool) -> ScriptedExecution:
        """The newest execution of a plate of that kind."""
        found = [e for e in self.executions(compile_only=compile_only) if e.plate_id == plate_id]
        assert found, f"no {'compile' if compile_only else 'run'} execution for {plate_id}"
        return found[-1]

    def finish(self, execution: ScriptedExecution, *, ok: bool = True, result: Any = None) -> None:
        """Start (if queued) and complete or fail an execution, then let the service react."""
        if execution.status is ExecutionStatus.QUEUED:
            self.backend.start(execution.execution_id)
        if ok:
            self.backend.complete(execution.execution_id, result)
        else:
            self.backend.fail(execution.execution_id, "compile error: bad step")
        self.run(2 * POLL)

    def compile_all(self, *, failing: tuple[str, ...] = ()) -> None:
        for execution in self.executions(compile_only=True, status=ExecutionStatus.QUEUED):
            self.finish(execution, ok=execution.plate_id not in failing)

    def labels(self, *plate_ids: str) -> list[str]:
        return [self.service.view.label(p) for p in plate_ids]

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.service.shutdown())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    """Build harnesses; each is shut down and its loop closed after the test."""
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        harness = Harness(**options)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
        assert not harness.host.off_thread, harness.host.off_thread
        assert not harness.loop_errors, harness.loop_errors


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def specs() -> Callable[..., list[PlateSpec]]:
    return plate_specs
