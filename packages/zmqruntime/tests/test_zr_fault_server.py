"""Faults of the server process itself, with real processes: killed with SIGKILL mid-batch and
restarted on the same ports with the same key and journal; stopped (SIGSTOP) for longer than
the client's liveness timeout, then continued (SIGCONT).

Each test checks that every execution ends in a terminal state whose error says what happened,
that results complete before the fault can still be fetched, and that nothing hangs (every
wait has a deadline). These tests work at the client level (`ExecutionClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from zmqruntime.client import ExecutionClient, ServerError
from zmqruntime.engines import PollOutcome
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import ErrorCode
from zmqruntime.server import ServerProcess, start_server_process
from zmqruntime.testing import SAMPLE_HANDLERS, free_port_block

S = ExecutionStatus
HEARTBEAT = 0.2
LIVENESS = 1.0


def serve(port: int, workdir: Path, *, journal: bool = True) -> ServerProcess:
    args = ["--key-file", str(workdir / "server.key")]
    if journal:
        args += ["--journal", str(workdir / "journal.sqlite")]
    return start_server_process(
        SAMPLE_HANDLERS,
        workers=2,
        port=port,
        heartbeat_interval=HEARTBEAT,
        extra_args=args,
        connection_file=workdir / "server.json",
    )


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Server processes a test started; all stopped (and reaped) at the end."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
        process.close()


async def wait_running(client: ExecutionClient, execution_id: str) -> int:
    """Wait for the execution's first progress event (the handler runs); its worker pid."""
    async with asyncio.timeout(20):
        async for event in client.events(execution_id):
            del event
            reply = await client.status(execution_id)
            if reply.execution.worker_pid is not None:
                return reply.execution.worker_pid
    raise AssertionError("unreachable")


def test_server_killed_mid_batch_then_restarted_keeps_finished_results(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    port = free_port_block()
    first = serve(port, tmp_path)
    processes.append(first)

    async def scenario() -> None:
        async with ExecutionClient(first.info, request_timeout=2.0) as client:
            done = [await client.submit("echo", {"i": i}) for i in range(2)]
            for reply in done:
                outcome = await client.wait(reply.execution_id, timeout=20)
                assert outcome.kind == "complete", outcome
            running = [await client.submit("sleep", {"seconds": 60}) for _ in range(2)]
            queued = await client.submit("sleep", {"seconds": 60})
            pids = [await wait_running(client, r.execution_id) for r in running]
            workers = [psutil.Process(pid) for pid in pids]
            old_epoch = client.server_epoch

            waiter = asyncio.create_task(
                client.wait(running[0].execution_id, timeout=30, liveness_timeout=LIVENESS)
            )
            first.kill()
            assert first.wait(10) == -signal.SIGKILL
            lost: PollOutcome = await asyncio.wait_for(waiter, 30)
            assert lost.kind == "lost", lost
            _, alive = psutil.wait_procs(workers, timeout=10)
            assert not alive, f"workers outlived their server: {alive}"

            second = serve(port, tmp_path)  # same ports, same key, same journal
            processes.append(second)
            assert second.info.key == first.info.key
            assert second.info.control == first.info.control
            # The same client, never reopened, talks to the new server and sees a new epoch.
            await client.ping(timeout=10)
            status = await client.status()
            assert status.server_epoch != old_epoch
            for reply in done:
                record = (await client.status(reply.execution_id)).execution
                assert record.status is S.COMPLETE, (record, first.stderr_tail())
                assert record.result == {"i": done.index(reply)}
            for reply in [*running, queued]:
                record = (await client.status(reply.execution_id)).execution
                assert record.status is S.FAILED, record
                assert record.error is not None
                assert record.error.code == ErrorCode.SERVER_RESTARTED
                assert record.error.message.startswith("server restarted")
                outcome = await client.wait(reply.execution_id, timeout=10)
                assert outcome.kind == "failed"
            assert status.running == ()
            assert status.queued == ()
            fresh = await client.submit("echo", {"after": True})
            outcome = await client.wait(fresh.execution_id, timeout=20)
            assert outcome.kind == "complete"

    asyncio.run(scenario())


def test_a_restart_without_a_journal_forgets_but_is_detected(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    port = free_port_block()
    first = serve(port, tmp_path, journal=False)
    processes.append(first)

    async def scenario() -> None:
        async with ExecutionClient(first.info, request_timeout=2.0) as client:
            reply = await client.submit("sleep", {"seconds": 60})
            await wait_running(client, reply.execution_id)
            waiter = asyncio.create_task(
                client.wait(reply.execution_id, timeout=30, liveness_timeout=10.0)
            )
            first.kill()
            first.wait(10)
            processes.append(serve(port, tmp_path, journal=False))
            # Long before the liveness timeout, the new epoch (or its `not_found`) ends it.
            outcome = await asyncio.wait_for(waiter, 8.0)
            assert outcome.kind in {"lost", "failed"}, outcome
            with pytest.raises(ServerError) as refused:
                await client.status(reply.execution_id)
            assert refused.value.code == ErrorCode.NOT_FOUND

    asyncio.run(scenario())


def test_a_stopped_server_is_reported_lost_then_carries_on_when_continued(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    server = serve(0, tmp_path)
    processes.append(server)

    async def scenario() -> None:
        async with ExecutionClient(server.info, request_timeout=2.0) as client:
            reply = await client.submit("sleep", {"seconds": 2.0})
            await wait_running(client, reply.execution_id)
            epoch = client.server_epoch
            loop = asyncio.get_running_loop()
            os.kill(server.pid, signal.SIGSTOP)
            try:
                started = loop.time()
                outcome = await client.wait(
                    reply.execution_id, timeout=30, liveness_timeout=LIVENESS
                )
                waited = loop.time() - started
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert outcome.kind == "lost", outcome
            assert waited >= LIVENESS * 0.9, waited
            # Continued: the same server (same epoch) finishes the work it had.
            outcome = await client.wait(reply.execution_id, timeout=30)
            assert outcome.kind == "complete", outcome
            record = (await client.status(reply.execution_id)).execution
            assert record.result == {"slept": 2.0}
            assert client.server_epoch == epoch
            assert (await client.status()).server_epoch == epoch

    asyncio.run(scenario())
