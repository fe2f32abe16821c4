"""A plate batch whose handlers run on a Dask `LocalCluster` (worker processes on loopback).

Runs in `nox -s faults` (which installs the `dask` extra); skipped where distributed is absent.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openhcs_workflow import (
    BatchWorkflowService,
    PipelineHandlers,
    PlateConfigSources,
    PlateSpec,
    PlateState,
    ZmqWorkflowBackend,
)
from openhcs_workflow.pipeline import default_pipeline, generate_plates
from openhcs_workflow.pipeline.handlers import HANDLERS
from openhcs_workflow.testing import RecordingHost, executing_count, until
from reactive_services import AsyncioDispatcher
from zmqruntime.client import ExecutionClient
from zmqruntime.progress import ProgressUpdate
from zmqruntime.server import ExecutionServer
from zmqruntime.testing import local_dask_client
from zmqruntime.testing.handlers import wait_for_cancel

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from zmqruntime.server.dask_executor import dask_executor_factory  # noqa: E402

pytestmark = pytest.mark.timeout(90)

#: The reference pipeline's handlers, plus one that holds its worker until cancelled.
PLATE_AND_WAIT_HANDLERS = {**HANDLERS, "wait_for_cancel": wait_for_cancel}


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """Two single-threaded worker processes; a task whose worker dies is not retried."""
    with local_dask_client(n_workers=2) as client:
        yield client


def test_four_plates_on_dask_and_a_killed_worker_fails_only_its_plate(
    dask_client: Any, tmp_path: Path
) -> None:
    layouts = generate_plates(tmp_path / "plates", 4, seed=3, wells=3, fields=1, shape=(64, 64))
    specs = [PlateSpec(plate_id=str(p.root), pipeline=default_pipeline()) for p in layouts]
    configs = PlateConfigSources(default={"output_root": str(tmp_path / "results")})

    async def scenario() -> None:
        server = ExecutionServer(
            PLATE_AND_WAIT_HANDLERS,
            workers=2,
            heartbeat_interval=0.1,
            executor_factory=dask_executor_factory(dask_client),
        )
        info = await server.start()
        try:
            async with ExecutionClient(info) as observer:
                progress: Counter[str] = Counter()

                async def count_progress() -> None:
                    async for event in observer.events():
                        if isinstance(event, ProgressUpdate):
                            progress[event.execution_id] += 1

                counter = asyncio.create_task(count_progress())
                await observer.ping()
                host = RecordingHost(AsyncioDispatcher(asyncio.get_running_loop()))
                backend = await ZmqWorkflowBackend.connect(info)
                service = BatchWorkflowService(host, backend, configs=configs)
                report = await service.run_plates(specs)
                assert (report.completed, report.failed, report.cancelled) == (4, 0, 0)
                for outcome in report.outcomes:
                    assert outcome.execution_id is not None
                    assert progress[outcome.execution_id] > 0  # per-well progress came through
                await service.shutdown()
                await backend.aclose()

                # A batch whose executions hold their Dask workers; one worker is killed.
                host = RecordingHost(AsyncioDispatcher(asyncio.get_running_loop()))
                backend = await ZmqWorkflowBackend.connect(info)
                waiting = PipelineHandlers(compile="compile", execute="wait_for_cancel")
                service = BatchWorkflowService(host, backend, configs=configs, handlers=waiting)
                running = asyncio.create_task(service.run_plates(specs[:2]))
                await until(observer, lambda: executing_count(host) == 2)
                pids = await asyncio.to_thread(dask_client.run, os.getpid)
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                await until(observer, lambda: bool(host.named("on_plate_completed")))
                await service.stop()  # the other plate still waits on its worker
                report = await running
                assert (report.completed, report.failed, report.cancelled) == (0, 1, 1)
                failed = next(o for o in report.outcomes if o.state is PlateState.FAILED)
                assert failed.error is not None
                assert failed.error["code"] == "worker_lost"
                assert [c.args for c in host.named("on_all_plates_completed")] == [(0, 1, 1)]
                await service.shutdown()
                await backend.aclose()
                counter.cancel()
        finally:
            await server.shutdown(force=True)

    asyncio.run(scenario())
