"""Handlers on a Dask `LocalCluster` (worker processes on loopback): executions run end to end
with their progress reaching a client, and a Dask worker killed mid-job fails that execution
alone (`worker_lost`, with `allowed-failures` 0) while the others complete."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from zmqruntime.client import ExecutionClient
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import ExecutionEvent
from zmqruntime.progress import ProgressUpdate
from zmqruntime.server.server import ExecutionServer
from zmqruntime.testing import SAMPLE_HANDLERS, local_dask_client

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from zmqruntime.server.dask_executor import dask_executor_factory  # noqa: E402

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """Two single-threaded worker processes; a task whose worker dies is not retried."""
    with local_dask_client(n_workers=2) as client:
        yield client


def test_executions_run_on_dask_and_a_killed_worker_fails_only_its_job(dask_client: Any) -> None:
    async def scenario() -> None:
        server = ExecutionServer(
            SAMPLE_HANDLERS,
            workers=2,
            heartbeat_interval=0.1,
            executor_factory=dask_executor_factory(dask_client),
        )
        info = await server.start()
        try:
            async with ExecutionClient(info) as client:
                progress: Counter[str] = Counter()
                finished: dict[str, ExecutionStatus] = {}
                live, changed = asyncio.Event(), asyncio.Event()

                async def collect() -> None:
                    async for event in client.events():
                        live.set()
                        if isinstance(event, ProgressUpdate):
                            progress[event.execution_id] += 1
                        elif isinstance(event, ExecutionEvent) and event.record.status.is_terminal:
                            finished[event.record.execution_id] = event.record.status
                        changed.set()

                async def until(condition: Any, timeout: float = 30.0) -> None:
                    async with asyncio.timeout(timeout):
                        while not condition():
                            changed.clear()
                            await changed.wait()

                collector = asyncio.create_task(collect())
                await asyncio.wait_for(live.wait(), 10.0)

                victim = (await client.submit("wait_for_cancel", {"timeout": 60.0})).execution_id
                await until(lambda: progress[victim] >= 1)  # its `started` report
                record = (await client.status(victim)).execution
                assert record.worker_pid is not None
                assert record.worker_pid != os.getpid()
                others = [
                    (await client.submit("report", {"n": 4, "plate_id": f"p{i}"})).execution_id
                    for i in range(3)
                ]
                os.kill(record.worker_pid, signal.SIGKILL)

                await until(lambda: len(finished) == 4)
                lost = await client.wait(victim, timeout=10.0)
                assert lost.status is ExecutionStatus.FAILED
                error = (await client.status(victim)).execution.error
                assert error is not None
                assert error.code == "worker_lost", error
                assert "dask worker lost" in error.message
                for execution_id in others:
                    assert finished[execution_id] is ExecutionStatus.COMPLETE
                    assert progress[execution_id] == 4
                    reply = await client.status(execution_id)
                    assert reply.execution.result == {"reported": 4}
                # The executor was not replaced: a Dask worker death is not a broken pool.
                assert server._pool is not None
                assert server._pool.generation == 1
                again = await client.submit("echo", {"after": True})
                outcome = await client.wait(again.execution_id, timeout=30.0)
                assert outcome.status is ExecutionStatus.COMPLETE
                collector.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await collector
        finally:
            await server.shutdown(force=True)

    asyncio.run(scenario())
