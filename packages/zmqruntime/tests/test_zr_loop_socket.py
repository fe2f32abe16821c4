"""`LoopSocket` over real ZeroMQ sockets and real asyncio loops.

Sockets talk over loopback TCP (ports chosen by the OS), except where a test needs messages
queued at a known moment: there `inproc` is used on purpose, because an inproc send puts the
message in the receiver's queue before it returns, so "1,000 messages are waiting" is a fact
and the interleaving of messages and loop turns is exact. Where a test must know that a
message has reached a socket without receiving it, it waits (with a deadline) for the socket's
`ZMQ_FD` to become readable with `select`, which, unlike `EVENTS` or `poll`, does not consume
the edge.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import zmq

from zmqruntime.codec import recv_frames, send_frames
from zmqruntime.loop_socket import LoopSocket
from zmqruntime.testing import asyncio_test

T = TypeVar("T")

#: A deadline for things that happen in milliseconds; reaching it means something stalled.
STALL = 5.0


class Sockets:
    """A private context whose sockets and `LoopSocket`s are all closed at the end."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.loop_sockets: list[LoopSocket] = []

    def socket(self, kind: int, **options: int) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in options.items():
            sock.setsockopt(getattr(zmq, name), value)
        return sock

    def bound(self, kind: int, **options: int) -> tuple[zmq.Socket[bytes], str]:
        """A socket bound to a port of the OS's choosing on 127.0.0.1, and its endpoint."""
        sock = self.socket(kind, **options)
        sock.bind("tcp://127.0.0.1:*")
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
        assert isinstance(endpoint, bytes)
        return sock, endpoint.decode()

    def connected(self, kind: int, endpoint: str, **options: int) -> zmq.Socket[bytes]:
        sock = self.socket(kind, **options)
        sock.connect(endpoint)
        return sock

    def started(self, loop_socket: LoopSocket) -> LoopSocket:
        """Start `loop_socket` on the running loop; it is stopped at the end."""
        self.loop_sockets.append(loop_socket)
        loop_socket.start()
        return loop_socket

    def close(self) -> None:
        for loop_socket in self.loop_sockets:
            loop_socket.stop()
        self.ctx.destroy(linger=0)


@pytest.fixture
def zs() -> Iterator[Sockets]:
    sockets = Sockets()
    try:
        yield sockets
    finally:
        sockets.close()


class Recorder:
    """An `on_message` callback that keeps what it was given and says when `expected` came."""

    def __init__(self, expected: int = 1) -> None:
        self.messages: list[list[Any]] = []
        self.expected = expected
        self.arrived = asyncio.Event()

    def __call__(self, frames: list[Any]) -> None:
        self.messages.append(frames)
        if len(self.messages) >= self.expected:
            self.arrived.set()

    async def wait(self, expected: int, what: str, seconds: float = STALL) -> None:
        self.expected = expected
        if len(self.messages) < expected:
            self.arrived.clear()
            await within(
                self.arrived.wait(),
                lambda: f"{what}: {len(self.messages)} of {expected} arrived",
                seconds,
            )


class LoopErrors:
    """The loop's exception handler while it is installed: records every context it gets."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []
        self.reported = asyncio.Event()
        asyncio.get_running_loop().set_exception_handler(self.handle)

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.contexts.append(context)
        self.reported.set()


async def within(awaitable: Awaitable[T], failure: Callable[[], str], seconds: float = STALL) -> T:
    """`awaitable`'s result, or a test failure saying `failure()` once `seconds` have passed."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"stalled for {seconds:g} s: {failure()}")


def zmq_fd(sock: zmq.Socket[bytes]) -> int:
    fd = sock.getsockopt(zmq.FD)
    assert isinstance(fd, int)
    return fd


def wait_fd_readable(sock: zmq.Socket[bytes], what: str) -> None:
    """Block until the socket's ZMQ_FD signals, without consuming the signal."""
    readable, _, _ = select.select([zmq_fd(sock)], [], [], STALL)
    assert readable, f"ZMQ_FD never became readable: {what}"


def fd_readable_now(sock: zmq.Socket[bytes]) -> bool:
    readable, _, _ = select.select([zmq_fd(sock)], [], [], 0)
    return bool(readable)


async def loop_turns(count: int = 3) -> None:
    """Let the loop run `count` full iterations (its selector is polled on each)."""
    for _ in range(count):
        await asyncio.sleep(0)


def recv_blocking(sock: zmq.Socket[bytes]) -> list[bytes]:
    assert sock.poll(int(STALL * 1000), zmq.POLLIN), "no message arrived"
    return sock.recv_multipart()


def unused_port() -> int:
    """A port the OS just handed out and nothing listens on (bound, never listened, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        assert isinstance(port, int)
        return port


def number(i: int) -> bytes:
    return i.to_bytes(4, "big")


def message_runs(order: list[str]) -> list[int]:
    """Lengths of the runs of "message" entries between two "tick" entries."""
    return [len(run) for run in "".join("m" if e == "message" else " " for e in order).split()]


def fill(sender: LoopSocket) -> int:
    """Send numbered messages until the socket refuses one; how many it took."""
    for queued in range(100_000):
        try:
            sender.send([number(queued)])
        except zmq.Again:
            return queued
    raise AssertionError("the queue never filled up")


# -- construction --------------------------------------------------------------------------


def test_batch_must_be_positive() -> None:
    with (
        zmq.Context() as ctx,
        ctx.socket(zmq.PULL) as sock,
        pytest.raises(ValueError, match="batch must be at least 1, got 0"),
    ):
        LoopSocket(sock, None, batch=0)


# -- delivery --------------------------------------------------------------------------------

N_MESSAGES = 5_000


@asyncio_test
async def test_every_message_arrives_once_and_in_order(zs: Sockets) -> None:
    """5,000 multipart messages sent as fast as the high-water marks allow: all arrive, once
    each, in order."""
    pull, endpoint = zs.bound(zmq.PULL)
    recorder = Recorder()
    zs.started(LoopSocket(pull, recorder, copy=True))
    sender = zs.started(LoopSocket(zs.connected(zmq.PUSH, endpoint), None))
    sent = [[b"m", number(i), b"x" * (i % 11)] for i in range(N_MESSAGES)]
    sent.append([b"end"])  # nothing may arrive between the last numbered message and this
    for frames in sent:
        while True:
            try:
                sender.send(frames)
                break
            except zmq.Again:
                assert await sender.wait_writable(STALL), "the sender never became writable"
    await recorder.wait(len(sent), "messages")
    assert recorder.messages == sent


@pytest.mark.parametrize(("copy", "frame_type"), [(True, bytes), (False, zmq.Frame)])
@asyncio_test
async def test_copy_chooses_bytes_or_frames(zs: Sockets, copy: bool, frame_type: type) -> None:
    pull, endpoint = zs.bound(zmq.PULL)
    recorder = Recorder()
    zs.started(LoopSocket(pull, recorder, copy=copy))
    push = zs.connected(zmq.PUSH, endpoint)
    push.send_multipart([b"a", b"bc"])
    await recorder.wait(1, "message")
    [frames] = recorder.messages
    assert [type(frame) for frame in frames] == [frame_type, frame_type]
    assert [bytes(frame) for frame in frames] == [b"a", b"bc"]


# -- fairness ------------------------------------------------------------------------------


@asyncio_test
async def test_a_flood_is_drained_in_batches_between_loop_turns(zs: Sockets) -> None:
    """With `batch=8` and 1,000 messages waiting, a callback that reschedules itself runs
    after every 8 messages: the drain never takes more than a batch per loop turn."""
    waiting, batch = 1_000, 8
    pull = zs.socket(zmq.PULL, RCVHWM=0)
    pull.bind("inproc://flood")
    push = zs.connected(zmq.PUSH, "inproc://flood", SNDHWM=0)
    for i in range(waiting):
        push.send(number(i))  # inproc: in `pull`'s queue when send returns
    loop = asyncio.get_running_loop()
    order: list[str] = []
    recorder = Recorder()

    def tick() -> None:
        order.append("tick")
        if len(recorder.messages) < waiting:
            loop.call_soon(tick)

    def on_message(frames: list[Any]) -> None:
        order.append("message")
        recorder(frames)

    loop.call_soon(tick)
    zs.started(LoopSocket(pull, on_message, batch=batch))
    await recorder.wait(waiting, "messages")
    assert message_runs(order) == [batch] * (waiting // batch)


@asyncio_test
async def test_a_wake_up_after_a_drain_in_the_same_turn_stays_within_the_documented_bound(
    zs: Sockets,
) -> None:
    """The loop runs, in one iteration: the drain `start()` scheduled (3 messages, queue
    empty), a callback that sends 20 more, then the reader callback for the FD's signal seen
    at that iteration's select. That reader callback must not drain in the same turn."""
    batch = 8
    pull = zs.socket(zmq.PULL)
    pull.bind("inproc://same-turn")
    push = zs.connected(zmq.PUSH, "inproc://same-turn")
    for i in range(3):
        push.send(number(i))
    loop = asyncio.get_running_loop()
    order: list[str] = []
    recorder = Recorder()

    def tick() -> None:
        order.append("tick")
        if len(recorder.messages) < 23:
            loop.call_soon(tick)

    def on_message(frames: list[Any]) -> None:
        order.append("message")
        recorder(frames)

    def burst() -> None:
        for i in range(3, 23):
            push.send(number(i))

    loop.call_soon(tick)
    zs.started(LoopSocket(pull, on_message, batch=batch))
    loop.call_soon(burst)
    await recorder.wait(23, "messages")
    assert max(message_runs(order)) <= 2 * batch - 1, message_runs(order)


# -- the edge-triggered FD -----------------------------------------------------------------

ROUND_TRIPS = 2_000


@asyncio_test
async def test_ping_pong_replying_from_callbacks_never_stalls(zs: Sockets) -> None:
    """Each side sends from inside its own message callback, on the socket being drained:
    a send that swallowed the edge of the next message would stop the exchange."""
    router_sock, endpoint = zs.bound(zmq.ROUTER)
    router = LoopSocket(router_sock, lambda frames: router.send(frames))  # echo
    zs.started(router)
    replies: list[int] = []
    finished = asyncio.Event()

    def on_reply(frames: list[Any]) -> None:
        replies.append(int.from_bytes(frames[0], "big"))
        if replies[-1] == ROUND_TRIPS:
            finished.set()
        else:
            dealer.send([number(replies[-1] + 1)])

    dealer = zs.started(LoopSocket(zs.connected(zmq.DEALER, endpoint), on_reply, copy=True))
    dealer.send([number(1)])
    await within(finished.wait(), lambda: f"ping-pong stopped after {len(replies)} round trips")
    assert replies == list(range(1, ROUND_TRIPS + 1))


@asyncio_test
async def test_sends_from_a_task_with_replies_in_flight_never_stall(zs: Sockets) -> None:
    """Requests sent from a coroutine (outside any drain) while replies to earlier ones keep
    arriving: each send may swallow the edge announcing a reply, which must not be lost."""
    router_sock, endpoint = zs.bound(zmq.ROUTER)
    router = LoopSocket(router_sock, lambda frames: router.send(frames))  # echo
    zs.started(router)
    window = 4
    replies: list[int] = []
    reply_came = asyncio.Event()

    def on_reply(frames: list[Any]) -> None:
        replies.append(int.from_bytes(frames[0], "big"))
        reply_came.set()

    dealer = zs.started(LoopSocket(zs.connected(zmq.DEALER, endpoint), on_reply, copy=True))

    async def exchange() -> None:
        for i in range(ROUND_TRIPS):
            while i - len(replies) >= window:
                reply_came.clear()
                await reply_came.wait()
            dealer.send([number(i)])
        while len(replies) < ROUND_TRIPS:
            reply_came.clear()
            await reply_came.wait()

    await within(exchange(), lambda: f"stalled with {len(replies)} of {ROUND_TRIPS} replies")
    assert replies == list(range(ROUND_TRIPS))


async def idle_dealer_with_reply(
    zs: Sockets, recorder: Recorder
) -> tuple[LoopSocket, zmq.Socket[bytes]]:
    """A connected DEALER reader with nothing pending, and the ROUTER it talks to, which has
    just sent it a reply: the reply's edge is up on the dealer's FD, not yet seen by the
    loop."""
    router, endpoint = zs.bound(zmq.ROUTER)
    dealer = zs.started(LoopSocket(zs.connected(zmq.DEALER, endpoint), recorder))
    dealer.send([b"hello"])
    identity, _ = recv_blocking(router)
    await loop_turns()
    assert not fd_readable_now(dealer.sock), "the dealer should have nothing pending"
    router.send_multipart([identity, b"reply"])
    wait_fd_readable(dealer.sock, "the reply reached the dealer")
    return dealer, router


@asyncio_test
async def test_a_send_that_takes_the_edge_of_a_reply_does_not_lose_it(zs: Sockets) -> None:
    recorder = Recorder()
    dealer, _ = await idle_dealer_with_reply(zs, recorder)
    # libzmq looks at a socket's commands (taking the FD's edge) on a send only when ~1 ms
    # (3e6 TSC ticks) has passed since it last did: step out of that window, so that this
    # send does take the reply's edge (asserted below) and the test checks the hazard.
    time.sleep(0.01)  # noqa: ASYNC251 - the loop must not run: it would drain the reply
    dealer.send([b"request"])
    assert not fd_readable_now(dealer.sock), "the send should have taken the reply's edge"
    await recorder.wait(1, "the reply whose edge a send took")
    assert [bytes(frame) for frame in recorder.messages[0]] == [b"reply"]


@asyncio_test
async def test_wait_writable_does_not_swallow_an_incoming_message(zs: Sockets) -> None:
    recorder = Recorder()
    dealer, _ = await idle_dealer_with_reply(zs, recorder)
    assert await dealer.wait_writable(STALL)  # connected: returns without yielding
    await recorder.wait(1, "the reply announced before wait_writable", seconds=0.5)


# -- writability ---------------------------------------------------------------------------


@asyncio_test
async def test_wait_writable_times_out_then_sees_a_peer_arrive(zs: Sockets) -> None:
    port = unused_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    dealer = zs.started(LoopSocket(zs.connected(zmq.DEALER, endpoint, IMMEDIATE=1), None))
    loop = asyncio.get_running_loop()
    timeout = 0.2
    began = loop.time()
    assert await dealer.wait_writable(timeout) is False
    assert loop.time() - began >= timeout - 0.02
    with pytest.raises(zmq.Again):
        dealer.send([b"nobody listens"])

    router = zs.socket(zmq.ROUTER)
    router.bind(endpoint)
    assert await dealer.wait_writable(STALL) is True
    dealer.send([b"now someone does"])
    assert recv_blocking(router)[1:] == [b"now someone does"]


@asyncio_test
async def test_wait_writable_wakes_when_a_full_queue_drains(zs: Sockets) -> None:
    """A sender stopped by the high-water mark is woken when the receiver makes room."""
    pull = zs.socket(zmq.PULL, RCVHWM=4)
    pull.bind("inproc://backpressure")
    sender = zs.started(LoopSocket(zs.connected(zmq.PUSH, "inproc://backpressure", SNDHWM=4), None))
    queued = fill(sender)
    assert await sender.wait_writable(0.05) is False
    recorder = Recorder()
    zs.started(LoopSocket(pull, recorder))
    assert await sender.wait_writable(STALL) is True
    await recorder.wait(queued, "queued messages")
    sender.send([b"after"])
    await recorder.wait(queued + 1, "the message sent once writable")


# -- stop and close ------------------------------------------------------------------------


@asyncio_test
async def test_no_callback_runs_after_stop(zs: Sockets) -> None:
    pull, endpoint = zs.bound(zmq.PULL)
    recorder = Recorder()
    reader = zs.started(LoopSocket(pull, recorder, copy=True))
    push = zs.connected(zmq.PUSH, endpoint)
    push.send(b"before")
    await recorder.wait(1, "the message sent before stop")
    reader.stop()
    assert reader.stopped
    for i in range(3):
        push.send(number(i))
    wait_fd_readable(pull, "messages sent after stop reached the socket")
    await loop_turns()
    assert recorder.messages == [[b"before"]]
    # The messages were there all along, untouched, for whoever reads the socket next.
    assert [recv_blocking(pull) for _ in range(3)] == [[number(i)] for i in range(3)]
    assert asyncio.get_running_loop().remove_reader(zmq_fd(pull)) is False  # not watched


@asyncio_test
async def test_a_callback_that_closes_the_socket_ends_the_drain(zs: Sockets) -> None:
    """Closing from inside the callback, with more messages waiting, is quiet: no further
    callback, no receive on the closed socket (which would report an error)."""
    errors = LoopErrors()
    pull = zs.socket(zmq.PULL)
    pull.bind("inproc://closing")
    push = zs.connected(zmq.PUSH, "inproc://closing")
    for i in range(10):
        push.send(number(i))  # inproc: all ten wait before the reader starts
    seen: list[list[Any]] = []
    failures: list[BaseException] = []

    def on_message(frames: list[Any]) -> None:
        seen.append(frames)
        reader.close()

    reader = LoopSocket(pull, on_message, on_error=failures.append, copy=True)
    zs.started(reader)
    await loop_turns()
    assert seen == [[number(0)]]
    assert failures == []
    assert errors.contexts == []
    assert pull.closed


@asyncio_test
async def test_wait_writable_after_stop_returns_false_at_once(zs: Sockets) -> None:
    dealer = zs.started(
        LoopSocket(zs.connected(zmq.DEALER, f"tcp://127.0.0.1:{unused_port()}", IMMEDIATE=1), None)
    )
    dealer.stop()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await dealer.wait_writable(STALL) is False
    assert loop.time() - began < STALL


@asyncio_test
async def test_stop_ends_a_pending_wait_writable_with_false(zs: Sockets) -> None:
    dealer = zs.started(
        LoopSocket(zs.connected(zmq.DEALER, f"tcp://127.0.0.1:{unused_port()}", IMMEDIATE=1), None)
    )
    waiting = asyncio.create_task(dealer.wait_writable(STALL))
    await loop_turns()
    assert not waiting.done()
    dealer.stop()
    assert await within(waiting, lambda: "wait_writable did not end on stop()") is False


@asyncio_test
async def test_wait_writable_after_close_returns_false(zs: Sockets) -> None:
    dealer = zs.started(
        LoopSocket(zs.connected(zmq.DEALER, f"tcp://127.0.0.1:{unused_port()}", IMMEDIATE=1), None)
    )
    dealer.close()
    assert await dealer.wait_writable(STALL) is False


# -- failures ------------------------------------------------------------------------------


@asyncio_test
async def test_a_raising_callback_is_reported_and_receiving_goes_on(zs: Sockets) -> None:
    errors = LoopErrors()
    pull, endpoint = zs.bound(zmq.PULL)
    recorder = Recorder()

    def on_message(frames: list[Any]) -> None:
        recorder(frames)
        if frames == [b"bad"]:
            raise RuntimeError("callback broke on purpose")

    reader = zs.started(LoopSocket(pull, on_message, copy=True))
    push = zs.connected(zmq.PUSH, endpoint)
    for payload in (b"one", b"bad", b"three"):
        push.send(payload)
    await recorder.wait(3, "messages around the failing one")
    push.send(b"later")
    await recorder.wait(4, "a message sent after the failure")
    assert recorder.messages == [[b"one"], [b"bad"], [b"three"], [b"later"]]
    [context] = errors.contexts
    assert context["message"] == "a LoopSocket message callback failed"
    assert isinstance(context["exception"], RuntimeError)
    assert str(context["exception"]) == "callback broke on purpose"
    assert not reader.stopped


class Terminator:
    """`ctx.term()` in a thread of its own (it blocks until every socket of `ctx` is closed,
    having made their operations fail with ETERM); `finished` is set on the loop when it
    returns."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()

        def term() -> None:
            ctx.term()
            loop.call_soon_threadsafe(self.finished.set)

        # A daemon: should a test fail with the socket open, it cannot hang the interpreter.
        self.thread = threading.Thread(target=term, name="test-context-term", daemon=True)
        self.thread.start()

    async def wait(self, sock: zmq.Socket[bytes]) -> None:
        """Wait for `term()` to return; on failure, close `sock` so that it can."""
        try:
            await within(self.finished.wait(), lambda: "term() still waits for the socket")
        finally:
            if not sock.closed:
                sock.close(linger=0)
            self.thread.join(STALL)


def watched_socket() -> tuple[zmq.Socket[bytes], int]:
    """A bound PULL socket of a context of its own, and its ZMQ_FD."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind("tcp://127.0.0.1:*")
    return pull, zmq_fd(pull)


@asyncio_test
async def test_a_terminated_context_is_reported_once_to_on_error() -> None:
    """The usual shutdown: the reader is told ETERM, once, and closes its socket, which lets
    `term()` return; nothing reaches the loop's exception handler."""
    errors = LoopErrors()
    pull, _ = watched_socket()
    failures: list[BaseException] = []

    def on_error(exc: BaseException) -> None:
        failures.append(exc)
        reader.close()

    reader = LoopSocket(pull, lambda frames: None, on_error=on_error)
    reader.start()
    await loop_turns()
    await Terminator(pull.context).wait(pull)
    await loop_turns()
    assert len(failures) == 1
    assert isinstance(failures[0], zmq.ZMQError)
    assert failures[0].errno == zmq.ETERM
    assert reader.stopped
    assert errors.contexts == []


@asyncio_test
async def test_a_terminated_context_without_on_error_goes_to_the_loop_handler() -> None:
    errors = LoopErrors()
    pull, fd = watched_socket()
    reader = LoopSocket(pull, lambda frames: None)
    reader.start()
    await loop_turns()
    terminator = Terminator(pull.context)
    try:
        await within(errors.reported.wait(), lambda: "nothing reached the loop's handler")
    finally:
        pull.close(linger=0)  # what the handler's owner would do; term() can return
        await terminator.wait(pull)
    await loop_turns()
    [context] = errors.contexts
    assert context["message"] == "a LoopSocket's socket failed"
    assert isinstance(context["exception"], zmq.ZMQError)
    assert context["exception"].errno == zmq.ETERM
    assert reader.stopped
    assert asyncio.get_running_loop().remove_reader(fd) is False  # it stopped watching


def test_send_frames_and_recv_frames_carry_a_message_as_the_multipart_calls_do() -> None:
    """Over real TCP: the leading frames arrive as bytes, the rest as zero-copy frames; an
    empty socket raises `zmq.Again` without blocking, and so does one that cannot send."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    push = context.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        big = memoryview(bytes(range(256)) * 4096)  # 1 MiB, sent zero-copy
        send_frames(push, [b"signature", b'{"body":{}}', big], block=True)
        assert pull.poll(5000)
        frames = recv_frames(pull, 2)
        assert frames[:2] == [b"signature", b'{"body":{}}']
        assert isinstance(frames[2], zmq.Frame)
        assert frames[2].bytes == big.tobytes()
        with pytest.raises(zmq.Again):
            recv_frames(pull, 2)
        alone = context.socket(zmq.PUSH)  # no peer: a non-blocking send cannot go out
        try:
            with pytest.raises(zmq.Again):
                send_frames(alone, [b"a", b"b"])
        finally:
            alone.close(linger=0)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        context.term()
