"""What `BatchSubmitWaitEngine` asks of its caller: how to submit, wait for and name a job.

`BatchSubmitWaitPolicyABC` is the boundary: three required operations, three settings and
no-op hooks. `CallbackBatchSubmitWaitPolicy` builds one from plain functions, which is what
most callers (a GUI, a notebook) want.

Hooks may be plain functions or coroutine functions: the engine awaits whatever awaitable a
hook returns. Hooks observe; they cannot change a job's outcome, and an exception raised by
a hook is reported in `BatchResult.hook_errors`, never as a job failure. `index` is the job's
1-based position in the batch and `total` the batch size.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs

from zmqruntime.engines.checks import (
    as_validator,
    check_callable,
    check_count,
    check_flag,
    check_optional_callable,
    check_optional_count,
)
from zmqruntime.engines.hooks import HookResult

__all__ = ["BatchSubmitWaitPolicyABC", "CallbackBatchSubmitWaitPolicy"]

TJob = TypeVar("TJob")


class BatchSubmitWaitPolicyABC(abc.ABC, Generic[TJob]):
    """How to submit one job, wait for it, and key it; plus settings and hooks."""

    @abc.abstractmethod
    async def submit(self, job: TJob) -> str:
        """Submit the job; return its submission id (e.g. the execution id). Raise on failure."""

    @abc.abstractmethod
    async def wait(self, submission_id: str, job: TJob) -> None:
        """Wait until the submitted job has finished; raise if it did not succeed."""

    @abc.abstractmethod
    def job_key(self, job: TJob) -> str:
        """A key unique within the batch (outcomes and artifacts are indexed by it)."""

    @property
    def fail_fast_submit(self) -> bool:
        """Stop submitting at the first submit failure and abort what was submitted."""
        return True

    @property
    def fail_fast_wait(self) -> bool:
        """At the first wait failure, cancel every pending wait and abort those jobs."""
        return True

    @property
    def max_concurrent_waits(self) -> int | None:
        """How many waits may run at once; None for no bound."""
        return None

    @property
    def max_concurrent_submits(self) -> int:
        """How many submissions may be in flight at once (default 1: each ends before the
        next starts). Above 1 they are still *started* in job order, and a `submit` that
        sends before its first `await` (as `ExecutionClient.submit` does) reaches the server
        in that order, without one round trip per job; their success/error hooks then run
        in completion order. Fail-fast starts no submission after the first failure."""
        return 1

    def on_submit_start(self, job: TJob, index: int, total: int) -> HookResult:
        """Called before `submit`."""

    def on_submit_success(
        self, job: TJob, submission_id: str, index: int, total: int
    ) -> HookResult:
        """Called after `submit` returned a submission id."""

    def on_submit_error(self, job: TJob, error: Exception, index: int, total: int) -> HookResult:
        """Called after `submit` raised."""

    def on_wait_start(self, job: TJob, submission_id: str, index: int, total: int) -> HookResult:
        """Called when the job's wait starts (after a concurrency slot was free)."""

    def on_wait_success(self, job: TJob, submission_id: str, index: int, total: int) -> HookResult:
        """Called after `wait` returned."""

    def on_wait_error(self, job: TJob, error: Exception, index: int, total: int) -> HookResult:
        """Called after `wait` raised."""

    def on_wait_finally(self, job: TJob, submission_id: str, index: int, total: int) -> HookResult:
        """Called after every started wait, whatever its end (success, error, cancellation)."""

    def on_abort(self, job: TJob, submission_id: str) -> HookResult:
        """Called for each submitted job left pending when the batch stops early (fail-fast or
        cancellation of the engine), so the caller can cancel it on the server. Keep it short:
        during cancellation the engine awaits it before re-raising."""


_callable = as_validator(check_callable)
_optional_callable = as_validator(check_optional_callable)


@attrs.frozen(kw_only=True)
class CallbackBatchSubmitWaitPolicy(BatchSubmitWaitPolicyABC[TJob]):
    """A batch policy built from functions; hooks are optional, each sync or async."""

    submit_fn: Callable[[TJob], Awaitable[str]] = attrs.field(validator=_callable)
    wait_fn: Callable[[str, TJob], Awaitable[None]] = attrs.field(validator=_callable)
    job_key_fn: Callable[[TJob], str] = attrs.field(validator=_callable)
    fail_fast_submit_value: bool = attrs.field(default=True, validator=as_validator(check_flag))
    fail_fast_wait_value: bool = attrs.field(default=True, validator=as_validator(check_flag))
    max_concurrent_waits_value: int | None = attrs.field(
        default=None, validator=as_validator(check_optional_count)
    )
    max_concurrent_submits_value: int = attrs.field(default=1, validator=as_validator(check_count))
    on_submit_start_fn: Callable[[TJob, int, int], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_submit_success_fn: Callable[[TJob, str, int, int], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_submit_error_fn: Callable[[TJob, Exception, int, int], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_wait_start_fn: Callable[[TJob, str, int, int], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_wait_success_fn: Callable[[TJob, str, int, int], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_wait_error_fn: Callable[[TJob, Exception, int, int], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_wait_finally_fn: Callable[[TJob, str, int, int], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_abort_fn: Callable[[TJob, str], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )

    async def submit(self, job: TJob) -> str:
        return await self.submit_fn(job)

    async def wait(self, submission_id: str, job: TJob) -> None:
        await self.wait_fn(submission_id, job)

    def job_key(self, job: TJob) -> str:
        return self.job_key_fn(job)

    @property
    def fail_fast_submit(self) -> bool:
        return self.fail_fast_submit_value

    @property
    def fail_fast_wait(self) -> bool:
        return self.fail_fast_wait_value

    @property
    def max_concurrent_waits(self) -> int | None:
        return self.max_concurrent_waits_value

    @property
    def max_concurrent_submits(self) -> int:
        return self.max_concurrent_submits_value

    def on_submit_start(self, job: TJob, index: int, total: int) -> HookResult:
        return (
            None if self.on_submit_start_fn is None else self.on_submit_start_fn(job, index, total)
        )

    def on_submit_success(
        self, job: TJob, submission_id: str, index: int, total: int
    ) -> HookResult:
        fn = self.on_submit_success_fn
        return None if fn is None else fn(job, submission_id, index, total)

    def on_submit_error(self, job: TJob, error: Exception, index: int, total: int) -> HookResult:
        fn = self.on_submit_error_fn
        return None if fn is None else fn(job, error, index, total)

    def on_wait_start(self, job: TJob, submission_id: str, index: int, total: int) -> HookResult:
        fn = self.on_wait_start_fn
        return None if fn is None else fn(job, submission_id, index, total)

    def on_wait_success(self, job: TJob, submission_id: str, index: int, total: int) -> HookResult:
        fn = self.on_wait_success_fn
        return None if fn is None else fn(job, submission_id, index, total)

    def on_wait_error(self, job: TJob, error: Exception, index: int, total: int) -> HookResult:
        fn = self.on_wait_error_fn
        return None if fn is None else fn(job, error, index, total)

    def on_wait_finally(self, job: TJob, submission_id: str, index: int, total: int) -> HookResult:
        fn = self.on_wait_finally_fn
        return None if fn is None else fn(job, submission_id, index, total)

    def on_abort(self, job: TJob, submission_id: str) -> HookResult:
        return None if self.on_abort_fn is None else self.on_abort_fn(job, submission_id)
