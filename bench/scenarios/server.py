"""The execution server against raw pyzmq doing the least the same path could do.

- Status round trip: a signed `status` request for one execution, answered with its record,
  through `ExecutionServer` (decode, verify, schema, snapshot, encode, sign both ways) against
  a bare DEALER/ROUTER echo of JSON text on the same loop. Goal: at most 1.5x. Client and
  servers run in this process on one event loop, so both sides share the same cores.
- Progress throughput, three processes on each side. Ours: a server process
  (`python -m zmqruntime serve`, one worker) whose worker process runs a handler reporting
  progress as fast as it can over a 96-well plate; the worker signs each report, the server
  verifies and validates it, stamps its `seq` and publishes it (the updates it handles
  together as one `progress_batch` message, docs/protocol.md §6); in this process an
  `ExecutionClient`, subscribed with `events()` before it submits (as a GUI is), verifies and
  validates each event, detects `seq` gaps and repairs them with `Resynced` snapshots, and
  feeds a projection of the execution (the newest update per well, snapshots merged by
  `seq`) until its terminal event and a snapshot for every gap. Baseline: a producer process
  pushing the same bytes (with the worker's send bound) to a relay process (PULL→PUB, the
  server's receive and send bounds) and a bare SUB in this process that only counts them.
  Rate: updates received over the seconds from the first to the last received; best of
  alternating rounds, after a warm-up round of each. Goal: at least 0.3x. Updates lost on
  the way are counted in both; ours says where (the worker's full queue, the server dropping
  reports that arrive after the execution ended, `seq` gaps after the server) and whether a
  snapshot stood in for every gap. Goal: 0 lost, or every gap resynced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import psutil
import zmq
import zmq.asyncio

from bench.handlers import start_bench_server
from bench.harness import Measurement
from bench.profiling import SpyProfile
from zmqruntime.client import ClientEvent, ExecutionClient, Resynced
from zmqruntime.codec import WireCodec
from zmqruntime.connection import ConnectionInfo
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    ExecutionEvent,
    ExecutionRecord,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitReply,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.server import ExecutionServer
from zmqruntime.server.server import EVENTS_SNDHWM, PROGRESS_RCVHWM
from zmqruntime.testing import SAMPLE_HANDLERS, RawPeer, example_progress

SCENARIO = "server"
_RTT_GOAL = 1.5
_THROUGHPUT_GOAL = 0.3


# -- status round trip ----------------------------------------------------------------------


async def _our_rtt(info: ConnectionInfo, execution_id: str, count: int) -> float:
    """Sequential signed status requests from a bare DEALER (the same client loop as the echo
    baseline's, plus encoding, verifying and validating with `WireCodec`)."""
    codec = WireCodec(info.key)
    context = zmq.asyncio.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(info.control)
    request = StatusRequest(execution_id=execution_id)
    try:
        await dealer.send_multipart(codec.encode(request, request_id="warm-up"), copy=False)
        await dealer.recv_multipart(copy=False)
        start = time.perf_counter()
        for index in range(count):
            request_id = f"rtt-{index}"
            await dealer.send_multipart(codec.encode(request, request_id=request_id), copy=False)
            reply = codec.decode(await dealer.recv_multipart(copy=False))
            assert reply.request_id == request_id
        elapsed = time.perf_counter() - start
        assert isinstance(reply.message, StatusReply)
        return elapsed / count
    finally:
        dealer.close()
        context.term()


async def _echo_rtt(count: int, payload: dict[str, Any]) -> float:
    context = zmq.asyncio.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")

    async def echo() -> None:
        while True:
            identity, frame = await router.recv_multipart()
            await router.send_multipart([identity, json.dumps(json.loads(frame)).encode()])

    server = asyncio.create_task(echo())
    try:
        text = json.dumps(payload).encode()
        await dealer.send(text)
        await dealer.recv()  # warm-up: the connection is established
        start = time.perf_counter()
        for _ in range(count):
            await dealer.send(text)
            json.loads(await dealer.recv())
        return (time.perf_counter() - start) / count
    finally:
        server.cancel()
        dealer.close()
        router.close()
        context.term()


async def _round_trips(quick: bool) -> Measurement:
    count = 200 if quick else 500
    rounds = 5 if quick else 15
    server = ExecutionServer(SAMPLE_HANDLERS, workers=1, heartbeat_interval=0.2)
    async with server, RawPeer(await server.start()) as peer:
        await peer.ready()
        reply = await peer.request(Submit(handler="echo", params={"wells": 96}))
        assert isinstance(reply, SubmitReply)
        await peer.wait_status(reply.execution_id, ExecutionStatus.COMPLETE)
        snapshot = await peer.request(StatusRequest(execution_id=reply.execution_id))
        assert isinstance(snapshot, StatusReply)
        echo_payload = {"type": "status", "body": snapshot.to_wire()}
        ours, baseline = [], []
        for _ in range(rounds):
            ours.append(await _our_rtt(server.connection_info, reply.execution_id, count))
            baseline.append(await _echo_rtt(count, echo_payload))
    # Rounds alternate; the fastest of each stands (other processes only ever add time).
    mine, theirs = min(ours), min(baseline)
    return Measurement(
        scenario=SCENARIO,
        name="status round trip",
        unit="µs",
        ours=mine * 1e6,
        baselines={"raw DEALER/ROUTER JSON echo": theirs * 1e6},
        lower_is_better=True,
        goal=f"<= {_RTT_GOAL:g}x raw echo",
        goal_met=mine / theirs <= _RTT_GOAL,
        notes=f"fastest of {rounds} alternating rounds of {count} sequential requests; the "
        "echo carries "
        "the same status reply as JSON text, without signing or validation",
    )


# -- progress throughput --------------------------------------------------------------------

#: The wells the flood reports over (one 96-well plate), as a GUI's projection holds them.
_WELLS = [f"{row}{col:02d}" for row in "ABCDEFGH" for col in range(1, 13)]
#: The raw side's topic frame (the server's is the execution id, of the same length).
_RAW_TOPIC = b"4f3c9b1d2e7a48c6a0b5d9e1f2c3b4a5"
_RAW_HEARTBEAT = b"__heartbeat"
_RAW_END = b"__end"
_RAW_STOP = b"__stop"
#: Same receive bound as `ExecutionClient`'s event socket.
_SUB_RCVHWM = 100_000
#: The record events in each execution's `seq`: queued, running, complete.
_RECORD_EVENTS = 3
#: A stream that stays silent this long has ended (or stalled): stop waiting for it.
_IDLE_SECONDS = 10.0


@dataclass(frozen=True)
class _Round:
    """What one flood delivered to the subscriber."""

    received: int
    seconds: float  # first to last update received
    lost: int  # updates sent by the handler (or producer) that never reached the subscriber
    dropped_at_source: int = 0  # of those, refused by the worker's full queue
    dropped_by_server: int = 0  # of those, received by the server but never stamped
    seq_lost: int = 0  # of those, stamped by the server but missing from the stream (seq gaps)
    gaps: int = 0
    resynced: bool = True  # a `Resynced` snapshot at or past every gap arrived
    snapshots: int = 0  # `Resynced` snapshots of this execution (each stands in for a gap)
    terminal_seen: bool = True

    @property
    def rate(self) -> float:
        return self.received / max(self.seconds, 1e-9)


class _Projection:
    """A subscriber's view of one execution, as a GUI keeps it: the newest update per well
    (snapshots merged in by `seq`) and the final record; plus the counts the bench reports."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self.wells: dict[str, ProgressUpdate] = {}
        self.final: ExecutionRecord | None = None
        self.events = 0  # of this execution, snapshots included
        self.received = 0
        self.first = self.last = 0.0
        self.last_seq = 0
        self.seq_lost = 0
        self.gaps = 0
        self.gap_end = 0  # the highest seq lost so far
        self.resynced_to = 0  # the highest snapshot seq applied so far
        self.snapshots = 0

    @property
    def settled(self) -> bool:
        """The final record is known and a snapshot stood in for every gap."""
        return self.final is not None and self.gap_end <= self.resynced_to

    def apply(self, event: ClientEvent) -> None:
        if isinstance(event, ProgressUpdate):
            if event.execution_id == self.execution_id:
                self.last = time.perf_counter()
                if not self.received:
                    self.first = self.last
                self.received += 1
                self._sequence(event.seq)
                self.wells[event.axis_id] = event
        elif isinstance(event, ExecutionEvent):
            if event.record.execution_id == self.execution_id:
                self._sequence(event.seq)
                if event.record.status.is_terminal:
                    self.final = event.record
        elif isinstance(event, Resynced) and event.execution_id == self.execution_id:
            self._merge(event.snapshot)

    def _sequence(self, seq: int) -> None:
        self.events += 1
        if seq > self.last_seq + 1:
            self.gaps += 1
            self.seq_lost += seq - self.last_seq - 1
            self.gap_end = seq - 1
        self.last_seq = max(self.last_seq, seq)

    def _merge(self, snapshot: StatusReply) -> None:
        self.events += 1
        self.snapshots += 1
        self.resynced_to = max(self.resynced_to, snapshot.seq)
        for update in snapshot.axes:
            held = self.wells.get(update.axis_id)
            if held is None or held.seq < update.seq:
                self.wells[update.axis_id] = update
        if snapshot.execution.status.is_terminal:
            self.final = snapshot.execution


async def _flood(client: ExecutionClient, count: int) -> _Projection:
    """Submit one flood and follow it as a GUI would: subscribed to every event before
    submitting (so no event precedes the subscription), until the projection is settled or
    the execution stays silent for `_IDLE_SECONDS`."""
    loop = asyncio.get_running_loop()
    async with contextlib.aclosing(client.events()) as events:
        await anext(events)  # subscribed, and live: at the latest a heartbeat came through
        reply = await client.submit("flood_report", {"n": count, "axes": _WELLS})
        projection = _Projection(reply.execution_id)
        check = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_IDLE_SECONDS) as idle:
                async for event in events:
                    projection.apply(event)
                    if projection.settled:
                        break
                    if projection.events >= check:  # cheaper than once per event
                        check = projection.events + 256
                        idle.reschedule(loop.time() + _IDLE_SECONDS)
    return projection


async def _our_round(client: ExecutionClient, count: int) -> _Round:
    projection = await _flood(client, count)
    snapshot = await client.status(projection.execution_id)
    final = snapshot.execution
    assert final.status is ExecutionStatus.COMPLETE, final
    assert isinstance(final.result, dict)
    sent = int(final.result["sent"])
    stamped = snapshot.seq - _RECORD_EVENTS
    assert len(projection.wells) == min(count, len(_WELLS)), "projection misses wells"
    return _Round(
        received=projection.received,
        seconds=projection.last - projection.first,
        lost=count - projection.received,
        dropped_at_source=count - sent,
        dropped_by_server=sent - stamped,
        seq_lost=projection.seq_lost,
        gaps=projection.gaps,
        resynced=projection.gap_end <= projection.resynced_to,
        snapshots=projection.snapshots,
        terminal_seen=projection.final is not None,
    )


def _raw_relay(conn: Connection) -> None:
    """PULL→PUB relay process: sends its two ports through `conn`, then republishes each
    message under a topic frame until `_RAW_STOP` comes in; publishes a heartbeat on the
    same topic every 100 ms while idle (so a subscriber knows it is live)."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, PROGRESS_RCVHWM)
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, EVENTS_SNDHWM)
    conn.send(
        (pull.bind_to_random_port("tcp://127.0.0.1"), pub.bind_to_random_port("tcp://127.0.0.1"))
    )
    conn.close()
    try:
        while True:
            try:
                frames = pull.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if not pull.poll(100):
                    pub.send_multipart([_RAW_TOPIC, _RAW_HEARTBEAT], flags=zmq.NOBLOCK)
                continue
            if len(frames) == 1 and frames[0].bytes == _RAW_STOP:
                return
            pub.send_multipart([_RAW_TOPIC, *frames], flags=zmq.NOBLOCK, copy=False)
    finally:
        pull.close(linger=0)
        pub.close(linger=0)
        context.term()


def _raw_producer(endpoint: str, frames: list[bytes], count: int) -> None:
    """Push the same frames `count` times, then the end marker (a separate process, with the
    worker's send queue bound)."""
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 10_000)
    push.setsockopt(zmq.LINGER, 10_000)
    push.connect(endpoint)
    for _ in range(count):
        push.send_multipart(frames)
    push.send(_RAW_END)
    push.close()
    context.term()


class _RawRelay:
    """The relay process and this process's SUB to it (and a PUSH to stop it)."""

    def __init__(self) -> None:
        self._mp = multiprocessing.get_context("spawn")
        receiving, sending = self._mp.Pipe(duplex=False)
        self.process = self._mp.Process(target=_raw_relay, args=(sending,), daemon=True)
        self.process.start()
        sending.close()
        try:
            if not receiving.poll(30):
                raise RuntimeError("the raw relay process did not start within 30 s")
            pull_port, pub_port = receiving.recv()
        except EOFError:
            self.process.join(10)
            raise RuntimeError(
                f"the raw relay process exited before it was ready ({self.process.exitcode})"
            ) from None
        finally:
            receiving.close()
        self.endpoint = f"tcp://127.0.0.1:{pull_port}"
        self.context = zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, _SUB_RCVHWM)
        self.sub.setsockopt(zmq.SUBSCRIBE, _RAW_TOPIC)
        self.sub.connect(f"tcp://127.0.0.1:{pub_port}")
        if not self.sub.poll(30_000):  # a heartbeat through: the subscription is live
            raise RuntimeError("no heartbeat from the raw relay within 30 s")

    def round(self, frames: list[bytes], count: int) -> _Round:
        producer = self._mp.Process(target=_raw_producer, args=(self.endpoint, frames, count))
        producer.start()
        try:
            received, seconds = self._count(len(frames) + 1)
        finally:
            producer.join(30)
        return _Round(received=received, seconds=seconds, lost=count - received)

    def _count(self, update_frames: int) -> tuple[int, float]:
        """Count updates until the end marker (or silence); (received, seconds first to last)."""
        sub = self.sub
        received = 0
        first = last = 0.0
        while True:
            try:
                frames = sub.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if not sub.poll(int(_IDLE_SECONDS * 1000)):
                    break
                continue
            if len(frames) == update_frames:
                last = time.perf_counter()
                if not received:
                    first = last
                received += 1
            elif frames[1].bytes == _RAW_END:  # heartbeats are skipped
                break
        return received, last - first

    def close(self) -> None:
        push = self.context.socket(zmq.PUSH)
        push.connect(self.endpoint)
        push.send(_RAW_STOP)
        push.close(linger=5000)
        self.sub.close(linger=0)
        self.context.term()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _sample_frames(key: bytes) -> list[bytes]:
    update = ProgressUpdate.from_wire(
        example_progress(execution_id="4f3c9b1d2e7a48c6a0b5d9e1f2c3b4a5", timestamp=time.time())
    )
    return [bytes(f) for f in WireCodec(key).encode(update)]


def _losses(rounds: list[_Round]) -> str:
    lost = sum(r.lost for r in rounds)
    if not lost:
        return "0 lost"
    parts = [f"{lost} lost"]
    if source := sum(r.dropped_at_source for r in rounds):
        parts.append(f"{source} at the worker's full queue")
    if server := sum(r.dropped_by_server for r in rounds):
        parts.append(f"{server} dropped by the server (arrived after the execution ended)")
    if seq := sum(r.seq_lost for r in rounds):
        gaps = sum(r.gaps for r in rounds)
        snapshots = sum(r.snapshots for r in rounds)
        every = "every gap" if all(r.resynced for r in rounds) else "NOT every gap"
        parts.append(f"{seq} in {gaps} seq gaps, {every} resynced ({snapshots} snapshots)")
    other = lost - sum(r.dropped_at_source + r.dropped_by_server + r.seq_lost for r in rounds)
    if other > 0:
        parts.append(f"{other} not accounted for")
    return ", ".join(parts)


async def _throughput_rounds(
    info: ConnectionInfo, relay: _RawRelay, count: int, rounds: int
) -> tuple[list[_Round], list[_Round]]:
    """Alternate our flood and the raw one `rounds` times, after a warm-up of each."""
    frames = _sample_frames(info.key)
    ours, raw = [], []
    async with ExecutionClient(info) as client:
        await _our_round(client, 1_000)  # the worker process, imports and caches warm up
        relay.round(frames, 1_000)
        for _ in range(rounds):
            ours.append(await _our_round(client, count))
            raw.append(relay.round(frames, count))
    return ours, raw


async def _profiled_round(info: ConnectionInfo, count: int) -> None:
    async with ExecutionClient(info) as client:
        await _our_round(client, count)


def _throughput(quick: bool) -> list[Measurement]:
    count = 5_000 if quick else 50_000
    rounds = 2 if quick else 3
    relay = _RawRelay()
    try:
        with start_bench_server(workers=1, heartbeat_interval=0.25) as server:
            ours, raw = asyncio.run(_throughput_rounds(server.info, relay, count, rounds))
            best, theirs = max(ours, key=lambda r: r.rate), max(raw, key=lambda r: r.rate)
            met = best.rate / theirs.rate >= _THROUGHPUT_GOAL
            profile = ""
            if not met:
                targets = {"server": server.pid, "subscriber (bench)": os.getpid()}
                for child in psutil.Process(server.pid).children(recursive=True):
                    if "resource_tracker" not in " ".join(child.cmdline()):
                        targets.setdefault("worker", child.pid)
                with SpyProfile(targets) as spy:
                    asyncio.run(_profiled_round(server.info, count))
                profile = f" Goal missed; {spy.summary()}"
    finally:
        relay.close()
    ours_lost = sum(r.lost for r in ours)
    repaired = all(r.lost == r.seq_lost and r.resynced and r.terminal_seen for r in ours)
    rates = ", ".join(f"{r.rate:,.0f}" for r in ours)
    raw_rates = ", ".join(f"{r.rate:,.0f}" for r in raw)
    return [
        Measurement(
            scenario=SCENARIO,
            name="progress updates per second (worker → subscriber)",
            unit="updates/s",
            ours=best.rate,
            baselines={"raw PUSH→PUB→SUB relay": theirs.rate},
            lower_is_better=False,
            goal=f">= {_THROUGHPUT_GOAL:g}x raw relay",
            goal_met=met,
            notes=f"best of {rounds} alternating rounds of {count:,} updates over {len(_WELLS)} "
            f"wells after a warm-up round of each, first to last update received (ours "
            f"{rates}; raw {raw_rates}). Three processes each side: worker → server process → "
            "ExecutionClient.events() projection; producer → relay process → bare SUB "
            "counting. Lost: ours "
            f"{_losses(ours)}; raw {_losses(raw)}.{profile}",
        ),
        Measurement(
            scenario=SCENARIO,
            name="progress updates lost (ours)",
            unit="updates",
            ours=float(ours_lost),
            baselines={"raw PUSH→PUB→SUB relay": float(sum(r.lost for r in raw))},
            lower_is_better=True,
            goal="0, or every gap resynced",
            goal_met=ours_lost == 0 or repaired,
            notes=f"of {rounds} × {count:,} sent by the handler, never delivered to the "
            f"subscriber's projection: ours {_losses(ours)}; raw {_losses(raw)}. A seq gap is "
            "resynced when a later Resynced snapshot's seq reaches past it."
            + ("" if all(r.terminal_seen for r in ours) else " The terminal event was lost."),
        ),
    ]


def run(quick: bool) -> list[Measurement]:
    """Run both comparisons (each on its own event loop)."""
    return [asyncio.run(_round_trips(quick)), *_throughput(quick)]
