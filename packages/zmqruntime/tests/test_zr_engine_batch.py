"""BatchSubmitWaitEngine: outcomes, hook order, fail-fast, concurrency bound, cancellation.

Job behaviours are scripted: each wait awaits a future that a driver coroutine resolves,
in an order Hypothesis draws, once as many waits run as the bound allows. That scripts the
interleaving; the engine, its tasks, semaphore and cancellation are the real ones.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqruntime.engines import (
    BatchAborted,
    BatchPhase,
    BatchResult,
    BatchSubmitWaitEngine,
    BatchSubmitWaitPolicyABC,
    CallbackBatchSubmitWaitPolicy,
    JobOutcomeKind,
)


def asyncio_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop of its own."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


HOOKS = (
    "on_submit_start",
    "on_submit_success",
    "on_submit_error",
    "on_wait_start",
    "on_wait_success",
    "on_wait_error",
    "on_wait_finally",
    "on_abort",
)


class SubmitFailed(Exception):
    pass


class WaitFailed(Exception):
    pass


class HookBoom(Exception):
    pass


@attrs.frozen(kw_only=True)
class Job:
    key: str
    submit_ok: bool = True
    wait_ok: bool = True
    priority: int = 0
    raising_hooks: frozenset[str] = frozenset()
    async_hooks: bool = False


def sid(key: str) -> str:
    return f"sid-{key}"


class Harness:
    """Scripted jobs: records hooks, waits that block on futures, and the concurrency."""

    def __init__(
        self,
        jobs: list[Job],
        *,
        fail_fast_submit: bool = True,
        fail_fast_wait: bool = True,
        max_waits: int | None = None,
    ) -> None:
        self.jobs = jobs
        self.by_key = {j.key: j for j in jobs}
        self.max_waits = max_waits
        self.log: list[tuple[str, str]] = []  # (job key, hook name)
        self.aborts: list[tuple[str, str]] = []
        self.submitted: list[str] = []
        self.futures: dict[str, asyncio.Future[bool]] = {}
        self.active: set[str] = set()
        self.finished: set[str] = set()
        self.wait_cancelled: set[str] = set()
        self.resolved: list[str] = []
        self.max_active = 0
        self.changed = asyncio.Event()
        hooks = {f"{name}_fn": self._hook(name) for name in HOOKS}
        self.policy: CallbackBatchSubmitWaitPolicy[Job] = CallbackBatchSubmitWaitPolicy(
            submit_fn=self.submit,
            wait_fn=self.wait,
            job_key_fn=lambda job: job.key,
            fail_fast_submit_value=fail_fast_submit,
            fail_fast_wait_value=fail_fast_wait,
            max_concurrent_waits_value=max_waits,
            **hooks,
        )

    def _hook(self, name: str) -> Callable[..., Awaitable[None] | None]:
        def hook(job: Job, *args: Any) -> Awaitable[None] | None:
            self.log.append((job.key, name))
            if name == "on_abort":
                self.aborts.append((job.key, args[0]))
            if job.async_hooks:
                return self._async_hook(job, name)
            if name in job.raising_hooks:
                raise HookBoom(f"{name} {job.key}")
            return None

        return hook

    async def _async_hook(self, job: Job, name: str) -> None:
        await asyncio.sleep(0)  # a real suspension point inside the hook
        if name in job.raising_hooks:
            raise HookBoom(f"{name} {job.key}")

    async def submit(self, job: Job) -> str:
        await asyncio.sleep(0)
        if not job.submit_ok:
            raise SubmitFailed(job.key)
        self.submitted.append(job.key)
        self.changed.set()
        return sid(job.key)

    async def wait(self, submission_id: str, job: Job) -> None:
        assert submission_id == sid(job.key)
        future = asyncio.get_running_loop().create_future()
        self.futures[job.key] = future
        self.active.add(job.key)
        self.max_active = max(self.max_active, len(self.active))
        self.changed.set()
        try:
            ok = await future
        except asyncio.CancelledError:
            self.wait_cancelled.add(job.key)
            raise
        finally:
            self.active.discard(job.key)
            self.finished.add(job.key)
            self.changed.set()
        if not ok:
            raise WaitFailed(job.key)

    async def drive(self, engine: asyncio.Task[Any]) -> None:
        """Resolve running waits one at a time, by priority, once the bound is reached."""
        engine.add_done_callback(lambda _: self.changed.set())
        bound = self.max_waits if self.max_waits is not None else len(self.jobs)
        while True:
            self.changed.clear()
            if engine.done():
                return
            runnable = [k for k in self.active if not self.futures[k].done()]
            pending = [k for k in self.submitted if k not in self.finished]
            if runnable and len(runnable) >= min(bound, len(pending)):
                key = min(runnable, key=lambda k: (self.by_key[k].priority, k))
                self.resolved.append(key)
                self.futures[key].set_result(self.by_key[key].wait_ok)
                while key not in self.finished and not engine.done():
                    self.changed.clear()
                    if key in self.finished or engine.done():
                        break
                    await self.changed.wait()
                continue
            await self.changed.wait()

    async def run(self) -> tuple[BatchResult, BatchAborted | None]:
        engine = asyncio.create_task(BatchSubmitWaitEngine().run(self.jobs, self.policy))
        async with asyncio.timeout(10):
            await self.drive(engine)
            try:
                return await engine, None
            except BatchAborted as aborted:
                return aborted.result, aborted


EXPECTED_SEQUENCES = {
    "ok": [
        [
            "on_submit_start",
            "on_submit_success",
            "on_wait_start",
            "on_wait_success",
            "on_wait_finally",
        ]
    ],
    "failed_submit": [["on_submit_start", "on_submit_error"]],
    "failed_wait": [
        [
            "on_submit_start",
            "on_submit_success",
            "on_wait_start",
            "on_wait_error",
            "on_wait_finally",
        ]
    ],
    "cancelled": [
        ["on_submit_start", "on_submit_success", "on_abort"],
        ["on_submit_start", "on_submit_success", "on_wait_start", "on_wait_finally", "on_abort"],
    ],
    "not_submitted": [[]],
}


KIND = {
    "ok": JobOutcomeKind.OK,
    "failed_submit": JobOutcomeKind.FAILED,
    "failed_wait": JobOutcomeKind.FAILED,
    "cancelled": JobOutcomeKind.CANCELLED,
    "not_submitted": JobOutcomeKind.NOT_SUBMITTED,
}


@st.composite
def batches(draw: st.DrawFn) -> Harness:
    n = draw(st.integers(0, 6))
    jobs = [
        Job(
            key=f"j{i}",
            submit_ok=draw(st.sampled_from([True, True, True, False])),
            wait_ok=draw(st.sampled_from([True, True, False])),
            priority=draw(st.integers(0, 9)),
            raising_hooks=draw(st.frozensets(st.sampled_from(HOOKS), max_size=3)),
            async_hooks=draw(st.booleans()),
        )
        for i in range(n)
    ]
    return Harness(
        jobs,
        fail_fast_submit=draw(st.booleans()),
        fail_fast_wait=draw(st.booleans()),
        max_waits=draw(st.none() | st.integers(1, 4)),
    )


def check_batch(h: Harness, result: BatchResult, aborted: BatchAborted | None) -> None:
    jobs, keys = h.jobs, [j.key for j in h.jobs]
    # Outcomes partition the jobs, in job order, with 1-based indexes.
    assert [o.key for o in result.outcomes] == keys
    assert [o.index for o in result.outcomes] == list(range(1, len(jobs) + 1))

    submit_abort = next(
        (i for i, j in enumerate(jobs) if not j.submit_ok), None
    ) if h.policy.fail_fast_submit_value else None  # fmt: skip
    failing_resolved = [k for k in h.resolved if not h.by_key[k].wait_ok]
    wait_abort = submit_abort is None and h.policy.fail_fast_wait_value and bool(failing_resolved)
    if wait_abort:  # the first failure stopped the driver: nothing was resolved after it
        assert h.resolved[-1] == failing_resolved[0]

    for i, (job, outcome) in enumerate(zip(jobs, result.outcomes, strict=True)):
        if submit_abort is not None and i > submit_abort:
            kind = "not_submitted"
        elif not job.submit_ok:
            kind = "failed_submit"
            assert isinstance(outcome.error, SubmitFailed)
            assert outcome.phase is BatchPhase.SUBMIT
            assert outcome.submission_id is None
        elif submit_abort is not None or job.key not in h.resolved:
            kind = "cancelled"
            assert submit_abort is not None or wait_abort, "a wait was left unresolved"
            assert outcome.submission_id == sid(job.key)
            assert outcome.phase is BatchPhase.WAIT
        elif job.wait_ok:
            kind = "ok"
            assert outcome.submission_id == sid(job.key)
            assert outcome.error is None
        else:
            kind = "failed_wait"
            assert isinstance(outcome.error, WaitFailed)
            assert outcome.phase is BatchPhase.WAIT
        assert outcome.kind is KIND[kind]
        # Hook order per job: start → success|error (→ finally), then abort if cancelled.
        sequence = [hook for key, hook in h.log if key == job.key]
        assert sequence in EXPECTED_SEQUENCES[kind], (job.key, kind, sequence)

    # on_abort exactly for the cancelled jobs, with their submission ids, in job order.
    cancelled = result.of_kind(JobOutcomeKind.CANCELLED)
    assert h.aborts == [(o.key, o.submission_id) for o in cancelled]
    # Fail-fast raises, carrying the full result and the failure that stopped the batch.
    assert (aborted is not None) == (submit_abort is not None or wait_abort)
    if aborted is not None:
        assert aborted.cause in result.outcomes
        assert aborted.cause.kind is JobOutcomeKind.FAILED
    # Hook exceptions are reported apart: one per raising call, never as a job failure.
    raised = {(key, hook) for key, hook in h.log if hook in h.by_key[key].raising_hooks}
    assert {(e.key, e.hook) for e in result.hook_errors} == raised
    assert all(isinstance(e.error, HookBoom) for e in result.hook_errors)
    assert dict(result.artifacts) == {o.key: sid(o.key) for o in result.of_kind(JobOutcomeKind.OK)}
    # Concurrency: never above the bound; reaches it when enough waits ran.
    n_waits = len(h.futures)
    bound = h.max_waits if h.max_waits is not None else len(jobs)
    assert h.max_active <= bound
    if submit_abort is None and h.submitted:
        assert h.max_active == min(bound, len(h.submitted))
    # Nothing left running.
    assert not h.active
    assert len(h.finished) == n_waits


@settings(max_examples=80)
@given(harness=batches())
def test_outcomes_partition_jobs_and_hooks_follow_the_contract(harness: Harness) -> None:
    threads_before = threading.active_count()

    async def scenario() -> None:
        result, aborted = await harness.run()
        assert asyncio.all_tasks() == {asyncio.current_task()}, "a task outlived run()"
        check_batch(harness, result, aborted)

    asyncio.run(scenario())
    assert threading.active_count() == threads_before


@settings(max_examples=30)
@given(
    keys=st.lists(st.sampled_from(["a", "b", "c", "d", "é"]), min_size=2, max_size=6).filter(
        lambda ks: len(set(ks)) < len(ks)
    )
)
def test_duplicate_keys_are_refused_before_any_submission(keys: list[str]) -> None:
    first_duplicate = next(k for i, k in enumerate(keys) if k in keys[:i])
    harness = Harness([Job(key=k) for k in keys])
    with pytest.raises(ValueError, match=f"duplicate job key {first_duplicate!r}"):
        asyncio.run(BatchSubmitWaitEngine().run(harness.jobs, harness.policy))
    assert harness.log == []
    assert harness.submitted == []


async def _until(condition: Callable[[], bool], changed: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        while not condition():
            changed.clear()
            if condition():
                return
            await changed.wait()


@asyncio_test
async def test_fail_fast_cancels_an_earlier_long_wait_at_once() -> None:
    harness = Harness([Job(key="slow"), Job(key="fails", wait_ok=False)], max_waits=None)
    engine = asyncio.create_task(BatchSubmitWaitEngine().run(harness.jobs, harness.policy))
    await _until(lambda: len(harness.active) == 2, harness.changed)
    harness.futures["fails"].set_result(False)  # "slow" is never resolved
    async with asyncio.timeout(5):
        with pytest.raises(BatchAborted) as caught:
            await engine
    outcomes = caught.value.result.by_key
    assert outcomes["fails"].kind is JobOutcomeKind.FAILED
    assert outcomes["slow"].kind is JobOutcomeKind.CANCELLED
    assert harness.wait_cancelled == {"slow"}
    assert harness.aborts == [("slow", sid("slow"))]
    assert caught.value.cause.key == "fails"
    assert asyncio.all_tasks() == {asyncio.current_task()}


@asyncio_test
async def test_cancelling_the_engine_task_cancels_every_wait_and_leaves_nothing() -> None:
    threads_before = threading.enumerate()
    harness = Harness([Job(key=f"j{i}") for i in range(4)], max_waits=3)
    engine = asyncio.create_task(BatchSubmitWaitEngine().run(harness.jobs, harness.policy))
    await _until(lambda: len(harness.active) == 3, harness.changed)
    engine.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await engine
    assert harness.wait_cancelled == {"j0", "j1", "j2"}
    assert not harness.active
    started = [k for k, hook in harness.log if hook == "on_wait_start"]
    finished = [k for k, hook in harness.log if hook == "on_wait_finally"]
    assert sorted(started) == sorted(finished) == ["j0", "j1", "j2"]
    # The caller still learns what was submitted and left pending on the server.
    assert sorted(harness.aborts) == [(f"j{i}", sid(f"j{i}")) for i in range(4)]
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert threading.enumerate() == threads_before


@asyncio_test
async def test_cancelling_during_submission_aborts_what_was_submitted() -> None:
    b_submitting, never = asyncio.Event(), asyncio.Event()
    aborts: list[str] = []

    async def submit(job: str) -> str:
        if job == "b":
            b_submitting.set()
            await never.wait()  # the engine is cancelled here
        return sid(job)

    async def wait(submission_id: str, job: str) -> None:
        raise AssertionError("no wait may start")

    policy = CallbackBatchSubmitWaitPolicy(
        submit_fn=submit,
        wait_fn=wait,
        job_key_fn=str,
        on_abort_fn=lambda job, s: aborts.append(s),
    )
    engine = asyncio.create_task(BatchSubmitWaitEngine().run(["a", "b", "c"], policy))
    async with asyncio.timeout(5):
        await b_submitting.wait()
        engine.cancel()
        with pytest.raises(asyncio.CancelledError):
            await engine
    assert aborts == [sid("a")]  # b may or may not exist on the server: no id, no abort
    assert asyncio.all_tasks() == {asyncio.current_task()}


@asyncio_test
async def test_a_wait_that_reports_its_own_cancellation_is_cancelled_not_fatal() -> None:
    async def submit(job: str) -> str:
        return sid(job)

    async def wait(submission_id: str, job: str) -> None:
        if job == "x":
            raise asyncio.CancelledError  # e.g. the execution was cancelled on the server

    policy = CallbackBatchSubmitWaitPolicy(submit_fn=submit, wait_fn=wait, job_key_fn=str)
    result = await BatchSubmitWaitEngine().run(["x", "y"], policy)
    assert [o.kind for o in result.outcomes] == [JobOutcomeKind.CANCELLED, JobOutcomeKind.OK]


@asyncio_test
async def test_submit_must_return_a_string_id() -> None:
    async def submit(job: str) -> str:
        return 42  # type: ignore[return-value]

    async def wait(submission_id: str, job: str) -> None:
        return None

    policy = CallbackBatchSubmitWaitPolicy(
        submit_fn=submit, wait_fn=wait, job_key_fn=str, fail_fast_submit_value=False
    )
    result = await BatchSubmitWaitEngine().run(["a"], policy)
    (outcome,) = result.outcomes
    assert outcome.kind is JobOutcomeKind.FAILED
    assert outcome.phase is BatchPhase.SUBMIT
    assert isinstance(outcome.error, TypeError)
    assert "42" in str(outcome.error)


class MinimalPolicy(BatchSubmitWaitPolicyABC[int]):
    """Only the required operations: defaults for settings and hooks."""

    def __init__(self, max_waits: object = None) -> None:
        self.max_waits = max_waits

    async def submit(self, job: int) -> str:
        return f"s{job}"

    async def wait(self, submission_id: str, job: int) -> None:
        if job < 0:
            raise WaitFailed(job)

    def job_key(self, job: int) -> str:
        return str(job)

    @property
    def max_concurrent_waits(self) -> int | None:
        return self.max_waits  # type: ignore[return-value]


@asyncio_test
async def test_abc_defaults_fail_fast_and_have_no_op_hooks() -> None:
    result = await BatchSubmitWaitEngine().run([1, 2, 3], MinimalPolicy())
    assert result.all_ok
    assert dict(result.artifacts) == {"1": "s1", "2": "s2", "3": "s3"}
    with pytest.raises(BatchAborted, match="job '-1' failed in wait"):
        await BatchSubmitWaitEngine().run([1, -1], MinimalPolicy())


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
@asyncio_test
async def test_a_bad_concurrency_bound_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match=r"policy\.max_concurrent_waits: expected None or an int"):
        await BatchSubmitWaitEngine().run([1], MinimalPolicy(max_waits=bad))


def test_callback_policy_validates_its_fields() -> None:
    async def submit(job: str) -> str:
        return job

    with pytest.raises(ValueError, match=r"max_concurrent_waits_value: .* got 0"):
        CallbackBatchSubmitWaitPolicy(
            submit_fn=submit, wait_fn=submit, job_key_fn=str, max_concurrent_waits_value=0
        )
    with pytest.raises(ValueError, match=r"fail_fast_wait_value: expected True or False, got 1"):
        CallbackBatchSubmitWaitPolicy(
            submit_fn=submit,
            wait_fn=submit,
            job_key_fn=str,
            fail_fast_wait_value=1,  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match=r"on_abort_fn: expected a callable, got 'x'"):
        CallbackBatchSubmitWaitPolicy(
            submit_fn=submit,
            wait_fn=submit,
            job_key_fn=str,
            on_abort_fn="x",  # type: ignore[arg-type]
        )


def test_job_keys_must_be_strings() -> None:
    class IntKeys(MinimalPolicy):
        def job_key(self, job: int) -> str:
            return job  # type: ignore[return-value]

    with pytest.raises(TypeError, match=r"jobs\[0\]: job_key returned 1, expected a str"):
        asyncio.run(BatchSubmitWaitEngine().run([1], IntKeys()))


def test_run_blocking_without_a_loop() -> None:
    result = BatchSubmitWaitEngine().run_blocking(iter([1, 2]), MinimalPolicy())
    assert result.all_ok
    assert [o.key for o in result.outcomes] == ["1", "2"]


@asyncio_test
async def test_a_submission_window_starts_in_job_order_and_stops_at_a_failure() -> None:
    started: list[int] = []
    in_flight = peak = 0
    release, window_full = asyncio.Event(), asyncio.Event()

    async def submit(job: int) -> str:
        nonlocal in_flight, peak
        started.append(job)
        in_flight += 1
        peak = max(peak, in_flight)
        if len(started) == 4:
            window_full.set()
        try:
            if job == 5:
                raise RuntimeError("refused")
            await release.wait()  # every submission in the window is in flight together
            return f"s{job}"
        finally:
            in_flight -= 1

    async def wait(submission_id: str, job: int) -> None:
        return None

    aborted: list[str] = []
    policy = CallbackBatchSubmitWaitPolicy(
        submit_fn=submit,
        wait_fn=wait,
        job_key_fn=str,
        max_concurrent_submits_value=4,
        on_abort_fn=lambda job, sid: aborted.append(sid),
    )
    run = asyncio.create_task(BatchSubmitWaitEngine().run(range(12), policy))
    await window_full.wait()
    for _ in range(10):  # let the engine run on: nothing more may start while all 4 wait
        await asyncio.sleep(0)
    assert started == [0, 1, 2, 3]
    assert peak == 4
    release.set()
    with pytest.raises(BatchAborted) as caught:
        await run
    result = caught.value.result
    # Started in order; the failing submission (job 5) stopped any further start.
    assert started == list(range(len(started)))
    assert started[-1] >= 5
    assert caught.value.cause.key == "5"
    kinds = {o.key: o.kind for o in result.outcomes}
    assert kinds["5"] is JobOutcomeKind.FAILED
    assert all(kinds[str(j)] is JobOutcomeKind.NOT_SUBMITTED for j in range(12) if j not in started)
    assert sorted(aborted) == sorted(f"s{j}" for j in started if j != 5)
