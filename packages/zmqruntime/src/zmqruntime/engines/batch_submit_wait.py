"""`BatchSubmitWaitEngine`: submit every job in order, then wait for all of them concurrently.

Waits run as tasks of one `asyncio.TaskGroup`, bounded by a semaphore of
`policy.max_concurrent_waits`, so they complete in any order and a batch of N equal jobs
takes about one job's time. With `fail_fast_wait`, the first failing wait cancels every
pending wait at once (not after earlier waits end). Cancelling the task that runs the
engine cancels every wait; no thread is used and no task outlives `run`.

Hook order per job: `on_submit_start` → `on_submit_success` | `on_submit_error`; then, for a
wait that starts, `on_wait_start` → [`on_wait_success` | `on_wait_error`] → `on_wait_finally`
(no success/error hook for a wait cancelled by the engine); then `on_abort` if the job was
submitted and still pending when the batch stopped early.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

import attrs

from zmqruntime.blocking import run_blocking
from zmqruntime.engines.batch_policy import BatchSubmitWaitPolicyABC
from zmqruntime.engines.batch_result import (
    BatchAborted,
    BatchPhase,
    BatchResult,
    JobOutcome,
    JobOutcomeKind,
)
from zmqruntime.engines.checks import check_count, check_flag, check_optional_count
from zmqruntime.engines.hooks import HookRunner

__all__ = ["BatchSubmitWaitEngine"]

TJob = TypeVar("TJob")


@attrs.frozen
class BatchSubmitWaitEngine:
    """Runs batches of jobs through a `BatchSubmitWaitPolicyABC`. Stateless; reusable."""

    async def run(
        self, jobs: Iterable[TJob], policy: BatchSubmitWaitPolicyABC[TJob]
    ) -> BatchResult:
        """Submit `jobs` in order, wait for them concurrently, return one outcome per job.

        Raises ValueError (naming the key) on duplicate job keys before submitting anything,
        and `BatchAborted` (carrying the full result) when fail-fast stopped the batch.
        """
        return await _BatchRun(tuple(jobs), policy).run()

    def run_blocking(
        self, jobs: Iterable[TJob], policy: BatchSubmitWaitPolicyABC[TJob]
    ) -> BatchResult:
        """`run` for code without an event loop (or inside a running one, e.g. a notebook)."""
        job_tuple = tuple(jobs)
        return run_blocking(lambda: self.run(job_tuple, policy))


def _keys_of(jobs: Sequence[TJob], policy: BatchSubmitWaitPolicyABC[TJob]) -> tuple[str, ...]:
    keys: list[str] = []
    seen: set[str] = set()
    for index, job in enumerate(jobs, start=1):
        key = policy.job_key(job)
        if not isinstance(key, str):
            raise TypeError(f"jobs[{index - 1}]: job_key returned {key!r}, expected a str")
        if key in seen:
            raise ValueError(f"jobs[{index - 1}]: duplicate job key {key!r}")
        seen.add(key)
        keys.append(key)
    return tuple(keys)


def _being_cancelled() -> bool:
    """True when the current task was asked to cancel (as opposed to a stray CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _BatchRun(Generic[TJob]):
    """The mutable state of one `run` call."""

    def __init__(self, jobs: tuple[TJob, ...], policy: BatchSubmitWaitPolicyABC[TJob]) -> None:
        self.jobs = jobs
        self.policy = policy
        self.keys = _keys_of(jobs, policy)
        self.fail_fast_submit = check_flag("policy.fail_fast_submit", policy.fail_fast_submit)
        self.fail_fast_wait = check_flag("policy.fail_fast_wait", policy.fail_fast_wait)
        self.max_waits = check_optional_count(
            "policy.max_concurrent_waits", policy.max_concurrent_waits
        )
        self.max_submits = check_count(
            "policy.max_concurrent_submits", policy.max_concurrent_submits
        )
        self.total = len(jobs)
        self.outcomes: list[JobOutcome | None] = [None] * self.total
        self.submission_ids: list[str | None] = [None] * self.total
        self.hooks = HookRunner()
        self.abort_cause: JobOutcome | None = None
        self.wait_tasks: dict[int, asyncio.Task[None]] = {}

    async def run(self) -> BatchResult:
        try:
            await self._submit_all()
            if self.abort_cause is None:
                await self._wait_all()
        except asyncio.CancelledError:
            await self._settle_pending()
            raise
        await self._settle_pending()
        if self.abort_cause is not None:
            raise BatchAborted(self._result(), self.abort_cause)
        return self._result()

    # -- helpers --------------------------------------------------------------------------

    def _outcome(self, i: int, kind: JobOutcomeKind, **fields: Any) -> JobOutcome:
        outcome = JobOutcome(key=self.keys[i], index=i + 1, kind=kind, **fields)
        self.outcomes[i] = outcome
        return outcome

    async def _hook(self, name: str, i: int, *args: Any) -> None:
        await self.hooks.call(name, self.keys[i], getattr(self.policy, name), *args)

    def _result(self) -> BatchResult:
        outcomes = tuple(o for o in self.outcomes if o is not None)
        assert len(outcomes) == self.total, "every job has exactly one outcome"
        return BatchResult(outcomes=outcomes, hook_errors=tuple(self.hooks.errors))

    # -- phase 1: submit in job order -----------------------------------------------------

    async def _submit_all(self) -> None:
        if self.max_submits == 1:
            for i in range(self.total):
                await self._submit_one(i)
                if self.abort_cause is not None:
                    return
            return
        # A window of submissions in flight, started in job order (see the policy).
        window = asyncio.Semaphore(self.max_submits)

        async def submit_then_release(i: int) -> None:
            try:
                await self._submit_one(i)
            finally:
                window.release()

        async with asyncio.TaskGroup() as group:
            for i in range(self.total):
                await window.acquire()
                if self.abort_cause is not None:
                    window.release()
                    break
                group.create_task(submit_then_release(i), name=f"zmqruntime-submit-{i + 1}")

    async def _submit_one(self, i: int) -> None:
        """Submit job `i` with its hooks; records a failure (and, fail-fast, the abort)."""
        job, index = self.jobs[i], i + 1
        await self._hook("on_submit_start", i, job, index, self.total)
        try:
            submission_id = await self.policy.submit(job)
            if not isinstance(submission_id, str):
                raise TypeError(f"submit returned {submission_id!r}, expected a str id")
        except asyncio.CancelledError:
            self._outcome(i, JobOutcomeKind.CANCELLED, phase=BatchPhase.SUBMIT)
            if _being_cancelled():
                raise
            return  # the job's own submit reported cancellation
        except Exception as exc:
            failed = self._outcome(i, JobOutcomeKind.FAILED, error=exc, phase=BatchPhase.SUBMIT)
            await self._hook("on_submit_error", i, job, exc, index, self.total)
            if self.fail_fast_submit and self.abort_cause is None:
                self.abort_cause = failed
            return
        self.submission_ids[i] = submission_id
        await self._hook("on_submit_success", i, job, submission_id, index, self.total)

    # -- phase 2: wait concurrently ------------------------------------------------------

    async def _wait_all(self) -> None:
        slots = asyncio.Semaphore(self.max_waits) if self.max_waits is not None else None
        async with asyncio.TaskGroup() as group:
            for i, submission_id in enumerate(self.submission_ids):
                if submission_id is not None and self.outcomes[i] is None:
                    self.wait_tasks[i] = group.create_task(
                        self._wait_one(i, submission_id, slots),
                        name=f"zmqruntime-batch-wait-{self.keys[i]}",
                    )

    async def _wait_one(self, i: int, submission_id: str, slots: asyncio.Semaphore | None) -> None:
        async with slots if slots is not None else contextlib.nullcontext():
            job, index = self.jobs[i], i + 1
            try:
                await self._hook("on_wait_start", i, job, submission_id, index, self.total)
                try:
                    await self.policy.wait(submission_id, job)
                except asyncio.CancelledError:
                    if _being_cancelled():
                        raise  # the engine stops: settled as cancelled + on_abort afterwards
                    self._outcome(
                        i,
                        JobOutcomeKind.CANCELLED,
                        submission_id=submission_id,
                        phase=BatchPhase.WAIT,
                    )
                except Exception as exc:
                    failed = self._outcome(
                        i,
                        JobOutcomeKind.FAILED,
                        submission_id=submission_id,
                        error=exc,
                        phase=BatchPhase.WAIT,
                    )
                    if self.fail_fast_wait and self.abort_cause is None:
                        self.abort_cause = failed
                        self._cancel_pending_waits()
                    await self._hook("on_wait_error", i, job, exc, index, self.total)
                else:
                    self._outcome(i, JobOutcomeKind.OK, submission_id=submission_id)
                    await self._hook("on_wait_success", i, job, submission_id, index, self.total)
            finally:
                await self._hook("on_wait_finally", i, job, submission_id, index, self.total)

    def _cancel_pending_waits(self) -> None:
        for j, task in self.wait_tasks.items():
            if self.outcomes[j] is None and not task.done():
                task.cancel()

    # -- after an early stop --------------------------------------------------------------

    async def _settle_pending(self) -> None:
        """Give every job without an outcome one: submitted → cancelled (+ on_abort), else
        not_submitted. A no-op after a complete run."""
        aborted: list[int] = []
        for i in range(self.total):
            if self.outcomes[i] is not None:
                continue
            submission_id = self.submission_ids[i]
            if submission_id is None:
                self._outcome(i, JobOutcomeKind.NOT_SUBMITTED)
            else:
                self._outcome(
                    i, JobOutcomeKind.CANCELLED, submission_id=submission_id, phase=BatchPhase.WAIT
                )
                aborted.append(i)
        for i in aborted:
            await self._hook("on_abort", i, self.jobs[i], self.submission_ids[i])
