"""The engines against a real server process and real worker processes.

Speed is never asserted as wall time here: concurrency is shown by the server's own start
and finish stamps overlapping, promptness by outcomes that a slower mechanism could not
produce (a `lost` that must beat a deadline, a `complete` with a poll interval of a minute).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from zmqruntime.client import ExecutionClient, Resynced
from zmqruntime.engines import (
    BatchSubmitWaitEngine,
    CallbackBatchSubmitWaitPolicy,
    JobOutcomeKind,
    PollOutcomeKind,
)
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import ExecutionEvent
from zmqruntime.server import ServerProcess, start_server_process
from zmqruntime.testing import SAMPLE_HANDLERS

NEVER = 60.0


@pytest.fixture(scope="module")
def wide_server() -> Iterator[ServerProcess]:
    with start_server_process(SAMPLE_HANDLERS, workers=8, heartbeat_interval=0.2) as process:
        yield process


def test_batch_of_eight_runs_its_waits_concurrently(wide_server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ExecutionClient(wide_server.info) as client:

            async def submit(job: int) -> str:
                reply = await client.submit("sleep", {"seconds": 0.3, "plate_id": f"p{job}"})
                return reply.execution_id

            waiting: set[int] = set()
            most_at_once = 0

            async def wait(execution_id: str, job: int) -> None:
                nonlocal most_at_once
                waiting.add(job)
                most_at_once = max(most_at_once, len(waiting))
                try:
                    outcome = await client.wait(execution_id, poll_interval=NEVER)
                finally:
                    waiting.discard(job)
                if outcome.kind is not PollOutcomeKind.COMPLETE:
                    raise RuntimeError(f"job {job}: {outcome.reason}")

            policy = CallbackBatchSubmitWaitPolicy(
                submit_fn=submit, wait_fn=wait, job_key_fn=lambda job: f"job-{job}"
            )
            result = await BatchSubmitWaitEngine().run(list(range(8)), policy)
            assert [o.kind for o in result.outcomes] == [JobOutcomeKind.OK] * 8
            # All eight waits were under way at once. (Not checked on the server's records:
            # whether the jobs themselves overlap depends on how soon its eight worker
            # processes are up, which no wait of the engine's can change.)
            assert most_at_once == 8

    asyncio.run(scenario())


def test_poller_completes_on_the_pushed_event_and_never_blocks_the_loop(
    wide_server: ServerProcess,
) -> None:
    async def scenario() -> None:
        lags: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - before - 0.005)

        async with ExecutionClient(wide_server.info) as client:
            prober = asyncio.create_task(probe())
            reply = await client.submit("report", {"n": 300})
            # A one-minute interval: only the pushed execution event can end this in time.
            outcome = await client.wait(reply.execution_id, poll_interval=NEVER)
            stop.set()
            await prober
        assert outcome.kind is PollOutcomeKind.COMPLETE
        lags.sort()
        assert lags, "the probe never ran"
        assert lags[int(0.9 * (len(lags) - 1))] < 0.020, f"loop blocked: {lags[-5:]}"

    asyncio.run(scenario())


def test_poller_reports_lost_within_its_liveness_timeout_after_a_kill() -> None:
    liveness = 1.0

    async def scenario(process: ServerProcess) -> None:
        async with ExecutionClient(process.info) as client:
            reply = await client.submit("wait_for_cancel", {"timeout": NEVER})
            # Wait until it runs, so the kill lands mid-execution.
            async for event in client.events(reply.execution_id):
                record = event.snapshot.execution if isinstance(event, Resynced) else None
                if isinstance(event, ExecutionEvent):
                    record = event.record
                if record is not None and record.status is ExecutionStatus.RUNNING:
                    break
            waiting = asyncio.create_task(
                # A deadline just past the liveness window: late detection would be timed_out.
                client.wait(
                    reply.execution_id,
                    liveness_timeout=liveness,
                    timeout=liveness * 2.5,
                    poll_interval=NEVER,
                )
            )
            os.kill(process.pid, signal.SIGKILL)
            outcome = await waiting
            assert outcome.kind is PollOutcomeKind.LOST, outcome.reason
            assert "server lost" in outcome.reason

    with start_server_process(SAMPLE_HANDLERS, workers=1, heartbeat_interval=0.2) as process:
        asyncio.run(scenario(process))
        process.wait(10)


def test_a_window_of_submissions_reaches_the_server_in_job_order() -> None:
    """64 submissions in flight at once, one worker: the server's FIFO runs the jobs in job
    order, so each one's start stamp follows the previous one's."""

    async def scenario(info: object) -> None:
        async with ExecutionClient(info) as client:  # type: ignore[arg-type]
            in_flight = peak = 0

            async def submit(job: int) -> str:
                nonlocal in_flight, peak
                in_flight += 1
                peak = max(peak, in_flight)
                try:
                    return (await client.submit("echo", {"job": job})).execution_id
                finally:
                    in_flight -= 1

            async def wait(execution_id: str, job: int) -> None:
                outcome = await client.wait(execution_id, poll_interval=NEVER)
                if outcome.kind is not PollOutcomeKind.COMPLETE:
                    raise RuntimeError(f"job {job}: {outcome.reason}")

            policy = CallbackBatchSubmitWaitPolicy(
                submit_fn=submit,
                wait_fn=wait,
                job_key_fn=str,
                max_concurrent_submits_value=64,
            )
            result = await BatchSubmitWaitEngine().run(list(range(300)), policy)
            assert [o.kind for o in result.outcomes] == [JobOutcomeKind.OK] * 300
            assert peak == 64  # the window was used, not one round trip per job
            starts = []
            for outcome in result.outcomes:
                assert outcome.submission_id is not None
                record = (await client.status(outcome.submission_id)).execution
                assert record.result == {"job": int(outcome.key)}
                starts.append(record.started_at)
            order = sorted(range(len(starts)), key=lambda k: starts[k])
            assert order == list(range(len(starts))), order[:20]

    with start_server_process(SAMPLE_HANDLERS, workers=1, heartbeat_interval=0.2) as server:
        asyncio.run(scenario(server.info))
