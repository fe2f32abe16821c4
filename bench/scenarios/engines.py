"""The generic engines against what their predecessor did, in-process on one event loop.

- Batch wall time: 8 jobs (1 ms submit, a fixed wait each) through `BatchSubmitWaitEngine`,
  against the predecessor's sequential submit-then-wait loop over the same jobs, and against
  one job alone. Goal: the batch takes at most 1.5x one job.
- Poller reaction: an execution turns complete at a known moment and an event for it is
  published; time from that moment to the poller's `complete` outcome, with `ExecutionSignals`
  (push-woken) against the same poller without signals (interval polling only). Goal: under
  10 ms median.

Jobs and status replies are scripted with asyncio sleeps; the engines, their tasks, waits
and signals are the real ones. (A variant against the real server belongs to the server's
integration scenarios.)
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from bench.harness import Measurement
from zmqruntime.engines import (
    BatchSubmitWaitEngine,
    CallbackBatchSubmitWaitPolicy,
    CallbackExecutionStatusPollPolicy,
    ExecutionSignals,
    ExecutionStatusPoller,
    StatusObservation,
)
from zmqruntime.execution_status import ExecutionStatus

SCENARIO = "engines"
_BATCH_GOAL = 1.5
_REACTION_GOAL_MS = 10.0
_JOBS = 8


def _batch_policy(wait_seconds: float) -> CallbackBatchSubmitWaitPolicy[int]:
    async def submit(job: int) -> str:
        await asyncio.sleep(0.001)
        return f"execution-{job}"

    async def wait(submission_id: str, job: int) -> None:
        await asyncio.sleep(wait_seconds)

    return CallbackBatchSubmitWaitPolicy(submit_fn=submit, wait_fn=wait, job_key_fn=str)


async def _timed(coro_factory: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await coro_factory()
    return time.perf_counter() - start


async def _batch(wait_seconds: float) -> tuple[float, float, float]:
    policy = _batch_policy(wait_seconds)
    jobs = list(range(_JOBS))

    async def sequential() -> None:  # the predecessor: submit all, then wait one by one
        ids = [await policy.submit(job) for job in jobs]
        for submission_id, job in zip(ids, jobs, strict=True):
            await policy.wait(submission_id, job)

    ours = await _timed(lambda: BatchSubmitWaitEngine().run(jobs, policy))
    one = await _timed(lambda: BatchSubmitWaitEngine().run(jobs[:1], policy))
    baseline = await _timed(sequential)
    return ours, one, baseline


async def _reaction(interval: float, flip_after: float, with_signals: bool) -> float:
    """Seconds from the status flip (and its event) to the poller's outcome."""
    signals = ExecutionSignals() if with_signals else None
    flipped_at: list[float] = []

    async def poll(execution_id: str) -> StatusObservation:
        done = bool(flipped_at)
        status = ExecutionStatus.COMPLETE if done else ExecutionStatus.RUNNING
        return StatusObservation(status=status, payload={}, server_epoch="bench")

    def flip() -> None:
        flipped_at.append(time.perf_counter())
        if signals is not None:
            signals.notify_event("e", "bench")

    policy = CallbackExecutionStatusPollPolicy(
        poll_status_fn=poll, poll_interval_seconds_value=interval
    )
    asyncio.get_running_loop().call_later(flip_after, flip)
    outcome = await ExecutionStatusPoller().run("e", policy, signals=signals)
    assert outcome.ok, outcome
    return time.perf_counter() - flipped_at[0]


async def _scenario(quick: bool) -> list[Measurement]:
    wait_seconds = 0.05 if quick else 0.3
    ours, one, baseline = await _batch(wait_seconds)
    rows = [
        Measurement(
            scenario=SCENARIO,
            name=f"batch of {_JOBS} jobs ({wait_seconds:g} s wait each)",
            unit="s",
            ours=ours,
            baselines={"sequential waits (predecessor)": baseline, "one job alone": one},
            lower_is_better=True,
            goal=f"<= {_BATCH_GOAL:g}x one job alone",
            goal_met=ours <= _BATCH_GOAL * one,
        )
    ]
    interval, trials = (0.2, 5) if quick else (1.0, 10)
    offsets = [(k + 0.5) / trials * interval for k in range(trials)]
    pushed = [await _reaction(interval, t, with_signals=True) for t in offsets]
    polled = [await _reaction(interval, t, with_signals=False) for t in offsets]
    ours_ms = statistics.median(pushed) * 1e3
    rows.append(
        Measurement(
            scenario=SCENARIO,
            name=f"poller reaction to a finished execution (interval {interval:g} s)",
            unit="ms (median)",
            ours=ours_ms,
            baselines={"interval polling, no signals": statistics.median(polled) * 1e3},
            lower_is_better=True,
            goal=f"< {_REACTION_GOAL_MS:g} ms",
            goal_met=ours_ms < _REACTION_GOAL_MS,
            notes=f"{trials} trials, flips spread evenly over one interval",
        )
    )
    return rows


def run(quick: bool) -> list[Measurement]:
    return asyncio.run(_scenario(quick))
