"""Memory under a flood of progress: 1,000,000 updates through the server, slow subscribers.

A real server process (2 worker processes) runs 10 executions of a handler that reports a
tenth of the updates each over 384 wells, paced at 3,000 per second per worker (a pace the
server follows on two shared cores, so the updates go through it instead of being dropped
at their source). A separate client process holds two deliberately slow subscribers: an
`ExecutionClient` whose `events()` consumer sleeps 1 ms every other event (its buffer
overflows; what it misses comes back as `Resynced` snapshots), and a bare SUB socket read
once per millisecond (the server's queue for that subscriber stays full). The bench process
counts the events the server publishes (a fast bare SUB) and samples the resident set size
(psutil) of the server, its workers and the client process every 100 ms. A warm-up flood of
70,000 updates runs first, so the receivers' replay windows (65,536 signatures, bounded by
design) are full when measuring starts; the idle figure before it is shown too.

Figures: the peak RSS reached by the time 100 % of the updates went through, against the
peaks by 10 % and by 50 % (same processes, same run; peaks, because RSS saw-tooths). Goal:
bounded — the peak by 100 % at most 1.1× the peak by 50 % (no growth with the number of
updates once the bounded queues — replay windows, socket high-water marks, the client's
event buffer — have filled). Delivery along the way: reported by handlers → accepted by
the workers' queues → published by the server → delivered to the slow consumer, whose goal
is to end knowing every execution's final state. And the worst `status` round trip during
the flood (from a client without a subscription), against the same request at idle: a stop
button has to answer during a flood.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import psutil
import zmq
import zmq.asyncio

from bench.handlers import start_bench_server
from bench.harness import Measurement
from bench.profiling import SpyProfile
from zmqruntime.client import ExecutionClient, Resynced
from zmqruntime.connection import ConnectionInfo
from zmqruntime.messages import ExecutionEvent, Heartbeat
from zmqruntime.progress import ProgressUpdate

SCENARIO = "memory under flood"
_GROWTH_GOAL = 1.10
_RTT_GOAL_MS = 100.0
_EXECUTIONS = 10
_RECORD_EVENTS = 3  # queued, running, complete: the record events in each execution's seq
_SAMPLE_EVERY = 0.1
_STATUS_EVERY = 0.25
_CATCH_UP = 60.0
#: Updates sent before measuring: more than the 65,536 signatures each receiver's replay
#: window holds, so the window is full (its bounded size reached) when measuring starts.
_WARM_UP = 70_000
#: Each worker reports at this pace: a flood the server follows on two shared cores.
_RATE_PER_WORKER = 3_000.0
_WELLS = [f"{row}{col:02d}" for row in "ABCDEFGHIJKLMNOP" for col in range(1, 25)]
_MB = 1 << 20


def _rss(pids: list[int]) -> float:
    """Summed resident set size of live processes among `pids`, in MiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / _MB


def _subscriber(context: zmq.asyncio.Context, info: ConnectionInfo, rcvhwm: int) -> Any:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(info.events)
    return sub


# -- the client process: two slow subscribers --------------------------------------------------


class _SlowClient:
    """The slow `events()` consumer and the slow bare SUB, with what they saw."""

    def __init__(self) -> None:
        self.delivered: collections.Counter[str] = collections.Counter()
        self.resynced: collections.Counter[str] = collections.Counter()
        self.raw_received = 0
        self.final: set[str] = set()
        self.expected: set[str] | None = None
        self.all_final = asyncio.Event()
        self.heard = asyncio.Event()

    def _note(self, execution_id: str, terminal: bool) -> None:
        if terminal:
            self.final.add(execution_id)
            if self.expected is not None and self.expected <= self.final:
                self.all_final.set()

    def expect(self, ids: list[str]) -> None:
        self.expected = set(ids)
        if self.expected <= self.final:
            self.all_final.set()

    async def slow_events(self, client: ExecutionClient) -> None:
        slept = False
        async for event in client.events():
            if isinstance(event, ProgressUpdate):
                self.delivered[event.execution_id] += 1
                slept = not slept
                if slept:
                    await asyncio.sleep(0.001)
            elif isinstance(event, Resynced):
                self.resynced[event.execution_id] += 1
                self._note(event.execution_id, event.snapshot.execution.status.is_terminal)
            elif isinstance(event, ExecutionEvent):
                self._note(event.record.execution_id, event.record.status.is_terminal)
            elif isinstance(event, Heartbeat):
                self.heard.set()

    async def slow_socket(self, info: ConnectionInfo, ready: asyncio.Event) -> None:
        context = zmq.asyncio.Context()
        sub = _subscriber(context, info, 1000)
        try:
            while True:
                await sub.recv_multipart(copy=False)
                ready.set()  # a first message through: the subscription is live
                self.raw_received += 1
                await asyncio.sleep(0.001)
        finally:
            sub.close(linger=0)
            context.term()

    async def main(self, info: ConnectionInfo, conn: Connection) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        orders: asyncio.Queue[Any] = asyncio.Queue()
        loop.add_reader(conn.fileno(), lambda: orders.put_nowait(conn.recv()))
        socket_ready = asyncio.Event()
        async with ExecutionClient(info) as client:
            tasks = [
                asyncio.create_task(self.slow_events(client)),
                asyncio.create_task(self.slow_socket(info, socket_ready)),
            ]
            # Live once a heartbeat came through both subscriptions: no event is missed.
            await self.heard.wait()
            await socket_ready.wait()
            conn.send("ready")
            self.expect(await orders.get())
            stop = asyncio.create_task(orders.get())
            await asyncio.wait(
                [asyncio.create_task(self.all_final.wait()), stop],
                return_when=asyncio.FIRST_COMPLETED,
            )
            loop.remove_reader(conn.fileno())
            for task in [*tasks, stop]:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        measured = self.expected or set()
        return {
            "delivered": sum(self.delivered[e] for e in measured),
            "resynced": sum(self.resynced[e] for e in measured),
            "raw_received": self.raw_received,
            "final_known": len(self.final & measured),
        }


def _client_main(info_path: str, conn: Connection) -> None:
    """Entry point of the client process: run the slow subscribers, send what they saw."""
    try:
        conn.send(asyncio.run(_SlowClient().main(ConnectionInfo.read(info_path), conn)))
    except BaseException as exc:
        conn.send({"error": repr(exc)})
        raise
    finally:
        conn.close()


# -- the bench process: submit, sample, count -----------------------------------------------


def _events_in(envelope: bytes) -> int:
    """How many events one published message carries: a `progress_batch` holds several
    updates (each body says `"type":"progress"`), any other message is one event."""
    if b'"type":"progress_batch"' in envelope:
        return envelope.count(b'"type":"progress"')
    return 1


class _Sampler:
    """Counts events the server publishes (a fast bare SUB; each update of a batch counts)
    and samples RSS every 100 ms."""

    def __init__(self, info: ConnectionInfo, server_pid: int, client_pid: int) -> None:
        self.info = info
        self.server = psutil.Process(server_pid)
        self.client_pid = client_pid
        self.published = 0
        # (events published so far, RSS server, workers, client) in MiB
        self.samples: list[tuple[int, float, float, float]] = []

    async def count(self, ready: asyncio.Event) -> None:
        context = zmq.asyncio.Context()
        sub = _subscriber(context, self.info, 0)
        drain = zmq.Socket(shadow=sub.underlying)  # non-blocking reads of the same socket
        try:
            while True:
                await sub.poll()
                ready.set()
                for _ in range(1000):  # drain a batch, then let the other tasks run
                    try:
                        frames = [drain.recv(flags=zmq.NOBLOCK)]
                        while drain.getsockopt(zmq.RCVMORE):
                            frames.append(drain.recv(flags=zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    if not frames[0].startswith(b"__"):  # not a heartbeat or a cancel notice
                        self.published += _events_in(frames[2])
                await asyncio.sleep(0)
        finally:
            sub.close(linger=0)
            context.term()

    def snapshot(self) -> tuple[int, float, float, float]:
        workers = [p.pid for p in self.server.children(recursive=True)]
        return (
            self.published,
            _rss([self.server.pid]),
            _rss(workers),
            _rss([self.client_pid]),
        )

    async def sample(self) -> None:
        while True:
            self.samples.append(self.snapshot())
            await asyncio.sleep(_SAMPLE_EVERY)


async def _status_rtts(client: ExecutionClient, execution_id: str, count: int) -> list[float]:
    rtts = []
    for _ in range(count):
        start = time.perf_counter()
        await client.status(execution_id, timeout=300)
        rtts.append(time.perf_counter() - start)
    return rtts


async def _until_ended(
    control: ExecutionClient, ids: list[str], rtts: list[float]
) -> tuple[int, int]:
    """Poll every 0.25 s until every execution ended (timing each status request); returns
    (updates the handlers' transport accepted, updates the server published) over them."""
    through: dict[str, int] = {}
    sent: dict[str, int] = {}
    while len(through) < len(ids):
        for execution_id in ids:
            if execution_id in through:
                continue
            begin = time.perf_counter()
            reply = await control.status(execution_id, timeout=300)
            rtts.append(time.perf_counter() - begin)
            if reply.execution.status.is_terminal:
                through[execution_id] = reply.seq - _RECORD_EVENTS
                result = reply.execution.result
                sent[execution_id] = int(result["sent"]) if isinstance(result, dict) else 0
        if len(through) < len(ids):
            await asyncio.sleep(_STATUS_EVERY)
    return sum(sent.values()), sum(through.values())


async def _drive(
    info: ConnectionInfo, server_pid: int, client_pid: int, conn: Connection, total: int
) -> dict[str, Any]:
    """Once the slow client is subscribed: a warm-up flood (2 executions of a tenth each),
    then the measured flood, sampled until every execution ended; status requests timed at
    idle and during the flood."""
    sampler = _Sampler(info, server_pid, client_pid)
    counting = asyncio.Event()
    tasks = [asyncio.create_task(sampler.count(counting))]
    loop = asyncio.get_running_loop()
    per_execution = total // _EXECUTIONS
    params = {"n": per_execution, "rate": _RATE_PER_WORKER, "axes": _WELLS}
    async with ExecutionClient(info, subscribe_events=False) as control:
        await counting.wait()  # our counter is live once it sees a first heartbeat
        if not await loop.run_in_executor(None, conn.poll, 60.0) or conn.recv() != "ready":
            raise RuntimeError("the flood client did not get ready within 60 s")
        warm = (await control.submit("paced_report", {**params, "n": 1})).execution_id
        idle = await _status_rtts(control, warm, 50)
        idle_sample = sampler.snapshot()
        warm_params = {**params, "n": _WARM_UP // 2}
        warm_ids = [
            (await control.submit("paced_report", warm_params, timeout=300)).execution_id
            for _ in range(2)
        ]
        await _until_ended(control, warm_ids, [])
        sampler.published = 0
        tasks.append(asyncio.create_task(sampler.sample()))
        ids = [
            (await control.submit("paced_report", params, timeout=300)).execution_id
            for _ in range(_EXECUTIONS)
        ]
        conn.send(ids)
        started = time.perf_counter()
        during: list[float] = []
        with SpyProfile({"server": server_pid}, rate=50) as spy:
            sent, through = await _until_ended(control, ids, during)
        elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {
        "reported": per_execution * _EXECUTIONS,
        "through_server": through,
        "sent": sent,
        "executions": len(ids),
        "elapsed": elapsed,
        "samples": sampler.samples,
        "idle_sample": idle_sample,
        "idle_rtt": idle,
        "flood_rtt": during,
        "profile": spy.summary(),
    }


def _peak_by(samples: list[tuple[int, float, float, float]], fraction: float) -> list[float]:
    """Peak RSS of each process group over the samples taken until `fraction` of the events
    published by the end had been published (peaks, not single samples: RSS saw-tooths)."""
    final = samples[-1][0]
    upto = [s for s in samples if s[0] <= fraction * final] or samples[:1]
    return [max(s[i] for s in upto) for i in (1, 2, 3)]


def _run_flood(total: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with start_bench_server(workers=2) as server:
        ours, theirs = context.Pipe(duplex=True)
        client = context.Process(
            target=_client_main,
            args=(str(server.connection_file), theirs),
            name="bench-flood-client",
        )
        client.start()
        theirs.close()
        try:
            assert client.pid is not None
            result = asyncio.run(_drive(server.info, server.pid, client.pid, ours, total))
            # The slow consumer has a backlog to read; give it a minute to learn every outcome.
            if not ours.poll(_CATCH_UP):
                ours.send("stop")
            if not ours.poll(30):
                raise TimeoutError("the flood client sent no results")
            seen: dict[str, Any] = ours.recv()
        finally:
            client.join(30)
            if client.is_alive():
                client.kill()
                client.join()
            ours.close()
    if "error" in seen:
        raise RuntimeError(f"flood client failed: {seen['error']}")
    return {**result, **seen}


def run(quick: bool) -> list[Measurement]:
    total = 100_000 if quick else 1_000_000
    result = _run_flood(total)
    samples = result["samples"]
    at10, at50, at100 = (_peak_by(samples, f) for f in (0.1, 0.5, 1.0))
    idle = result["idle_sample"]
    rows = []
    names = ("server process", "worker processes", "client process (slow subscribers)")
    for index, name in enumerate(names):
        rows.append(
            Measurement(
                scenario=SCENARIO,
                name=f"{name}: peak RSS by 100 % of {total:,} updates",
                unit="MiB",
                ours=at100[index],
                baselines={
                    "idle, before any update": idle[index + 1],
                    "peak by 10 %": at10[index],
                    "peak by 50 %": at50[index],
                },
                lower_is_better=True,
                goal=f"<= {_GROWTH_GOAL:g}x peak by 50 %",
                goal_met=at100[index] <= _GROWTH_GOAL * at50[index],
                notes=f"{len(samples)} samples, one per 100 ms" if index == 0 else "",
            )
        )
    reported, sent = result["reported"], result["sent"]
    through, delivered = result["through_server"], result["delivered"]
    rows.append(
        Measurement(
            scenario=SCENARIO,
            name="updates delivered to the slow events() consumer",
            unit="updates",
            ours=float(delivered),
            baselines={
                "reported by handlers": float(reported),
                "accepted by the workers' queues": float(sent),
                "published by the server": float(through),
            },
            lower_is_better=False,
            goal="slow consumer ends knowing every execution's final state",
            goal_met=result["final_known"] == result["executions"],
            notes=(
                f"flood took {result['elapsed']:.1f} s at {_RATE_PER_WORKER * 2:,.0f} reports/s; "
                f"{reported - sent:,} dropped by a worker's full queue (reports never block a "
                f"handler); {sent - through:,} reached the server after their execution ended "
                f"(past its report grace period) or not at all; {through - delivered:,} lost at "
                f"the slow consumer, covered by {result['resynced']} Resynced snapshots; the "
                f"bare slow SUB received {result['raw_received']:,}; final state known for "
                f"{result['final_known']}/{result['executions']} executions"
            ),
        )
    )
    during = result["flood_rtt"]
    worst_ms = max(during) * 1e3
    rows.append(
        Measurement(
            scenario=SCENARIO,
            name="status request round trip during the flood, worst",
            unit="ms",
            ours=worst_ms,
            baselines={
                "same request, server idle (median)": statistics.median(result["idle_rtt"]) * 1e3
            },
            lower_is_better=True,
            goal=f"< {_RTT_GOAL_MS:g} ms (a stop button must answer during a flood)",
            goal_met=worst_ms < _RTT_GOAL_MS,
            notes=(
                f"{len(during)} requests from a client without a subscription; median "
                f"{statistics.median(during) * 1e3:.1f} ms"
                + ("" if worst_ms < _RTT_GOAL_MS else f". Goal missed; {result['profile']}")
            ),
        )
    )
    return rows
