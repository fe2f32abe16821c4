"""Batch throughput: 2,000 jobs that do nothing, submitted all, then waited all, 2 workers.

- Ours: a real server process (`start_server_process`, 2 worker processes) running the
  sample `echo` handler with empty params, driven by `ExecutionClient` in this process. Two
  ways a program waits: the `BatchSubmitWaitEngine` (submit each, 64 submissions in flight
  in job order, then `ExecutionClient.wait` on every execution concurrently: looked at once,
  then answered by its `execution` events — what the workflow service does), and submit
  all (pipelined, in order), then wait for every terminal event on the stream.
- The limit: `concurrent.futures.ProcessPoolExecutor(2)` used directly (no server, no
  network, pickled calls).
- Peers: Dask distributed `LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`
  with `Client.submit` then `distributed.wait`; ipyparallel `Cluster(n=2)` with a
  load-balanced view's `apply_async` then `wait`. Peers run the builtin `abs` (a job that
  does nothing and that every worker can import).

The pool and our two ways are started together, warmed up (workers running), then timed in
turns, round after round (best round of each): the machine is shared, and its slow spells
then fall on both sides of the ratio alike (the pool measured 7,500 to 12,300 jobs/s in eight
rounds within one minute). Idle, they use no CPU but our server's heartbeat. Dask and
ipyparallel each run alone: started, warmed up, timed (best of the rounds) and shut down
before the next one starts. Goal: ahead of Dask and ipyparallel, and at least 0.3× the raw
pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.harness import Measurement, fastest_in_turns
from bench.profiling import SpyProfile
from zmqruntime.client import ExecutionClient
from zmqruntime.connection import ConnectionInfo
from zmqruntime.engines import BatchSubmitWaitEngine, CallbackBatchSubmitWaitPolicy
from zmqruntime.messages import ExecutionEvent
from zmqruntime.server import ServerProcess, start_server_process
from zmqruntime.testing import SAMPLE_HANDLERS

SCENARIO = "batch throughput"
_POOL_SHARE_GOAL = 0.3
_WORKERS = 2
_WARM_UP = 16

POOL = "ProcessPoolExecutor(2), the limit"
DASK = "Dask LocalCluster, 2 worker processes"
IPP = "ipyparallel, 2 engines"

#: A timed batch: jobs -> seconds.
Batch = Callable[[int], float]


def _handle_batch(handle: Any) -> Batch:
    """The timed batch of a runtime's context (ours also yields its server)."""
    return handle[0] if isinstance(handle, tuple) else handle  # type: ignore[no-any-return]


# -- the limit and the peers ----------------------------------------------------------------


@contextlib.contextmanager
def _pool() -> Iterator[Batch]:
    with concurrent.futures.ProcessPoolExecutor(_WORKERS) as pool:
        list(pool.map(abs, range(-_WARM_UP, 0)))

        def batch(jobs: int) -> float:
            start = time.perf_counter()
            futures = [pool.submit(abs, i) for i in range(jobs)]
            concurrent.futures.wait(futures)
            return time.perf_counter() - start

        yield batch


@contextlib.contextmanager
def _dask() -> Iterator[Batch]:
    import distributed

    with (
        distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        client.wait_for_workers(_WORKERS)
        client.gather(client.map(abs, range(-_WARM_UP, 0), pure=False))

        def batch(jobs: int) -> float:
            start = time.perf_counter()
            futures = [client.submit(abs, i, pure=False) for i in range(jobs)]
            distributed.wait(futures)  # type: ignore[no-untyped-call]
            elapsed = time.perf_counter() - start
            client.cancel(futures)
            return elapsed

        yield batch


@contextlib.contextmanager
def _ipyparallel() -> Iterator[Batch]:
    import ipyparallel as ipp

    with tempfile.TemporaryDirectory(prefix="bench-ipp-") as profile_dir:
        cluster = ipp.Cluster(n=_WORKERS, profile_dir=profile_dir, log_level=logging.ERROR)
        rc = cluster.start_and_connect_sync()
        try:
            rc.wait_for_engines(_WORKERS, timeout=60)
            view = rc.load_balanced_view()
            view.map_sync(abs, range(-_WARM_UP, 0))

            def batch(jobs: int) -> float:
                start = time.perf_counter()
                results = [view.apply_async(abs, i) for i in range(jobs)]
                rc.wait(results)
                return time.perf_counter() - start

            yield batch
        finally:
            rc.close()
            cluster.stop_cluster_sync()


# -- ours -----------------------------------------------------------------------------------


async def _engine_batch(info: ConnectionInfo, jobs: int) -> float:
    """Submit each (64 in flight, in job order), then `ExecutionClient.wait` on all
    concurrently (the engine)."""
    async with ExecutionClient(info) as client:
        await client.ping()

        async def submit(_: int) -> str:
            return (await client.submit("echo", {})).execution_id

        async def wait(execution_id: str, _: int) -> None:
            outcome = await client.wait(execution_id)
            if not outcome.ok:
                raise RuntimeError(f"{execution_id}: {outcome.reason}")

        policy: CallbackBatchSubmitWaitPolicy[int] = CallbackBatchSubmitWaitPolicy(
            submit_fn=submit, wait_fn=wait, job_key_fn=str, max_concurrent_submits_value=64
        )
        start = time.perf_counter()
        result = await BatchSubmitWaitEngine().run(range(jobs), policy)
        elapsed = time.perf_counter() - start
    failed = [o for o in result.outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {jobs} jobs did not complete: {failed[0]}")
    return elapsed


async def _events_batch(info: ConnectionInfo, jobs: int) -> float:
    """Submit all (pipelined: every request sent before the first reply is awaited, in
    order), then wait for every execution's terminal event on the stream."""
    async with ExecutionClient(info) as client:
        ended: set[str] = set()
        waiting: set[str] | None = None  # submitted and not yet ended, once all are submitted
        all_ended = asyncio.Event()
        subscribed = asyncio.Event()

        async def follow() -> None:
            async for event in client.events():
                subscribed.set()
                if isinstance(event, ExecutionEvent) and event.record.status.is_terminal:
                    ended.add(event.record.execution_id)
                    if waiting is not None:
                        waiting.discard(event.record.execution_id)
                        if not waiting:
                            all_ended.set()

        following = asyncio.create_task(follow())
        await subscribed.wait()  # a heartbeat came through: no terminal event is missed
        start = time.perf_counter()
        replies = await asyncio.gather(*(client.submit("echo", {}) for _ in range(jobs)))
        waiting = {reply.execution_id for reply in replies} - ended
        if not waiting:
            all_ended.set()
        await all_ended.wait()
        elapsed = time.perf_counter() - start
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    return elapsed


@contextlib.contextmanager
def _ours(kind: Callable[[ConnectionInfo, int], Any]) -> Iterator[tuple[Batch, ServerProcess]]:
    with start_server_process(SAMPLE_HANDLERS, workers=_WORKERS) as server:
        asyncio.run(kind(server.info, _WARM_UP))

        def batch(jobs: int) -> float:
            return float(asyncio.run(kind(server.info, jobs)))

        yield batch, server


# -- the scenario ---------------------------------------------------------------------------


def _problem(name: str, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{name}: no figure ({type(exc).__name__}: {reason})"


def _measure_in_turns(
    runtimes: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]],
    jobs: int,
    rounds: int,
) -> tuple[dict[str, float | None], dict[str, float | None], list[str]]:
    """(jobs/s, start-up seconds, problems) of runtimes started together and timed in turns
    (`fastest_in_turns`); a runtime that cannot start, run or stop here gets no figure and a
    problem that says why."""
    rates: dict[str, float | None] = dict.fromkeys(runtimes)
    startups: dict[str, float | None] = dict.fromkeys(runtimes)
    failed: dict[str, str] = {}

    def timer(name: str, batch: Batch) -> Callable[[], float]:
        def timed() -> float:
            if name in failed:
                return math.inf
            try:
                return batch(jobs)
            except Exception as exc:
                failed[name] = _problem(name, exc)
                return math.inf

        return timed

    try:
        with contextlib.ExitStack() as stack:
            timers: dict[str, Callable[[], float]] = {}
            for name, runtime in runtimes.items():
                try:
                    start = time.perf_counter()
                    batch = _handle_batch(stack.enter_context(runtime()))
                except Exception as exc:
                    failed[name] = _problem(name, exc)
                    continue
                startups[name] = time.perf_counter() - start
                timers[name] = timer(name, batch)
            for name, seconds in fastest_in_turns(timers, rounds).items():
                if name not in failed:
                    rates[name] = jobs / seconds
    except Exception as exc:  # a runtime that did not shut down cleanly: its figure stands
        failed["shut-down"] = _problem("shut-down", exc)
    return rates, startups, list(failed.values())


def _measure(
    name: str, runtime: Callable[[], contextlib.AbstractContextManager[Any]], jobs: int, rounds: int
) -> tuple[float | None, float | None, str]:
    """(jobs/s, start-up seconds, problem) of one runtime on its own."""
    rates, startups, problems = _measure_in_turns({name: runtime}, jobs, rounds)
    return rates[name], startups[name], "".join(problems)


def _profile_engine(jobs: int, seconds: float) -> str:
    """Run engine batches under py-spy (server and this process) for about `seconds`."""
    with (
        _ours(_engine_batch) as (batch, server),
        SpyProfile({"server": server.pid, "client": os.getpid()}) as spy,
    ):
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            batch(jobs)
    return spy.summary()


def run(quick: bool) -> list[Measurement]:
    jobs, rounds = (300, 1) if quick else (2_000, 5)
    ours = {
        "ours: BatchSubmitWaitEngine + ExecutionClient.wait": _engine_batch,
        "ours: submit all (pipelined), then terminal events": _events_batch,
    }
    rates, startups, problems = _measure_in_turns(
        {POOL: _pool} | {label: functools.partial(_ours, kind) for label, kind in ours.items()},
        jobs,
        rounds,
    )
    baselines: dict[str, float | None] = {POOL: rates[POOL]}
    for name, runtime in ((DASK, _dask), (IPP, _ipyparallel)):
        rate, startups[name], problem = _measure(name, runtime, jobs, rounds)
        baselines[name] = rate
        if problem:
            problems.append(problem)
    rows = []
    our_startup = startups[next(iter(ours))]
    for label in ours:
        rate = rates[label]
        if rate is None:
            raise RuntimeError(next(p for p in problems if p.startswith(label)))
        pool = baselines[POOL] or float("inf")
        peers = [v for k, v in baselines.items() if k != POOL and v is not None]
        missed = []
        if rate < _POOL_SHARE_GOAL * pool:
            missed.append(f"{rate / pool:.2f}x the pool, goal {_POOL_SHARE_GOAL:g}x")
        missed += [f"behind {k}" for k, v in baselines.items() if k != POOL and v and rate < v]
        notes = [f"{jobs} jobs, best of {rounds} round(s)", *problems]
        if missed:
            notes.append("goal missed: " + "; ".join(missed))
            if label.endswith(".wait"):
                notes.append(_profile_engine(jobs, 3.0 if quick else 6.0))
        rows.append(
            Measurement(
                scenario=SCENARIO,
                name=f"{label} ({jobs} no-op jobs)",
                unit="jobs/s",
                ours=rate,
                baselines=dict(baselines),
                lower_is_better=False,
                goal=f">= Dask and ipyparallel, >= {_POOL_SHARE_GOAL:g}x the pool",
                goal_met=not missed and len(peers) == 2,
                notes=". ".join(notes),
            )
        )
    rows.append(
        Measurement(
            scenario=SCENARIO,
            name="start-up until the first job can run",
            unit="s",
            ours=our_startup or float("nan"),
            baselines={k: v for k, v in startups.items() if k in baselines},
            lower_is_better=True,
            notes="server process + 2 workers + warm-up batch; each peer likewise",
        )
    )
    return rows
