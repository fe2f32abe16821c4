"""Hostile input against a real server process: Hypothesis generates at least 10,000 frame sets
(random bytes, correctly signed envelopes with random bodies, truncated multipart messages,
huge declared array shapes, oversized and replayed messages) and sends them in batches. Every
frame set gets exactly one reply, each refusal carries the code its kind calls for and is
counted, the server's memory stays bounded and it answers a ping afterwards.

The server runs as a child process (`python -m zmqruntime serve`) so its resident memory can be
measured on its own. `shutdown` is the one request type left out of the random bodies: a valid
one would (correctly) stop the server.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqruntime.codec import WireCodec
from zmqruntime.messages import (
    MESSAGE_TYPES,
    ErrorCode,
    ErrorReply,
    Ping,
    Pong,
    ServerStatus,
    StatusRequest,
    Submit,
)
from zmqruntime.server import ServerProcess, start_server_process
from zmqruntime.signing import MessageSigner
from zmqruntime.testing import SAMPLE_HANDLERS

LIMIT = 256 * 1024  # the server's message size limit in this test
BATCH = 25
EXAMPLES = 400  # BATCH * EXAMPLES = 10,000 frame sets at least
RSS_MARGIN = 64 * 2**20  # allowed growth of the server's resident memory
REJECTIONS = {
    ErrorCode.UNAUTHORIZED: "rejected_unauthorized",
    ErrorCode.REPLAYED: "rejected_replayed",
    ErrorCode.TOO_LARGE: "rejected_too_large",
    ErrorCode.INVALID_REQUEST: "rejected_malformed",
    ErrorCode.UNSUPPORTED_PROTOCOL: "rejected_protocol",
}
ANY = "any"  # a frame set whose reply may be anything (a random body can be valid)

#: A frame set and the reply it must get: an ErrorCode, "pong", or ANY.
Case = tuple[list[bytes], str]


def sign(key: bytes, envelope: bytes, *arrays: bytes) -> list[bytes]:
    return [MessageSigner(key).sign([envelope, *arrays]), envelope, *arrays]


def envelope_bytes(
    kind: str, body: Any, arrays: list[dict[str, Any]] | None = None, protocol: str = "1.0"
) -> bytes:
    data = {
        "protocol": protocol,
        "type": kind,
        "msg_id": secrets.token_hex(16),
        "request_id": None,
        "server_epoch": None,
        "arrays": arrays or [],
        "body": body,
    }
    return json.dumps(data).encode()


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
field_names = st.sampled_from(
    ["execution_id", "handler", "params", "force", "compile_only", "label", "seq", "x"]
)
bodies = st.one_of(
    st.dictionaries(field_names, json_value, max_size=4),
    json_value,
)
types = st.sampled_from([*sorted(set(MESSAGE_TYPES) - {"shutdown"}), "nonsense", ""])


@st.composite
def frame_sets(draw: st.DrawFn, key: bytes) -> list[Case]:
    """One generated frame set (sometimes two: a message and its replay)."""
    kind = draw(st.integers(0, 7))
    if kind == 0:  # random bytes: no valid signature
        frames = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=3))
        return [(frames, ErrorCode.UNAUTHORIZED)]
    if kind == 1:  # correctly signed envelope, random type and body
        protocol = draw(st.sampled_from(["1.0", "1.9", "2.0", "0.1", "one"]))
        return [(sign(key, envelope_bytes(draw(types), draw(bodies), protocol=protocol)), ANY)]
    if kind == 2:  # correctly signed, random JSON (or not JSON) as the envelope
        raw = draw(st.one_of(json_value.map(lambda v: json.dumps(v).encode()), st.binary()))
        return [(sign(key, raw + secrets.token_bytes(4)), ErrorCode.INVALID_REQUEST)]
    codec = WireCodec(key)
    if kind == 3:  # a multipart message truncated: a frame dropped or cut short
        size = draw(st.integers(1, 64))
        message = Submit(handler="nope", params={"image": np.zeros(size, np.uint8)})
        frames = [bytes(f) for f in codec.encode(message, request_id="t")]
        how = draw(st.sampled_from(["drop", "cut", "resign"]))
        if how == "drop":
            return [(frames[:-1], ErrorCode.UNAUTHORIZED)]
        if how == "cut":
            cut = draw(st.integers(0, len(frames[-1]) - 1))
            return [([*frames[:-1], frames[-1][:cut]], ErrorCode.UNAUTHORIZED)]
        return [(sign(key, frames[1]), ErrorCode.INVALID_REQUEST)]  # signed, array missing
    if kind == 4:  # huge declared array shapes over a small frame, correctly signed
        shape = draw(st.lists(st.integers(2**20, 2**62), min_size=1, max_size=4))
        dtype = draw(st.sampled_from(["<f8", "|u1", "<c16", "<i4"]))
        data = draw(st.binary(min_size=1, max_size=16))
        raw = envelope_bytes(
            "submit",
            {"handler": "echo", "params": {"a": {"$array": 0}}},
            [{"dtype": dtype, "shape": shape}],
        )
        return [(sign(key, raw, data), ErrorCode.INVALID_REQUEST)]
    if kind == 5:  # oversized: each frame fits, all of them together do not
        half = LIMIT // 2 + draw(st.integers(1, 1000))
        return [(sign(key, b"{}", bytes(half), bytes(half)), ErrorCode.TOO_LARGE)]
    if kind == 6:  # too many array frames
        count = draw(st.integers(65, 80))
        return [([b"0" * 64, b"{}", *([b"x"] * count)], ErrorCode.TOO_LARGE)]
    ping = [bytes(f) for f in codec.encode(Ping(), request_id="r")]  # accepted, then replayed
    return [(ping, "pong"), (list(ping), ErrorCode.REPLAYED)]


class Fuzzer:
    """A DEALER to the server that sends batches and checks the replies, in order."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.codec = WireCodec(server.info.key)
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(server.info.control)
        self.sent = 0
        self.refusals: dict[str, int] = dict.fromkeys(REJECTIONS.values(), 0)
        self.probes = 0
        self.peak_rss = 0

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.context.term()

    def request(self, message: Any) -> Any:
        self.probes += 1
        request_id = f"probe-{self.probes}"
        self.dealer.send_multipart(self.codec.encode(message, request_id=request_id), copy=False)
        for envelope in self.replies(until=request_id):
            if envelope.request_id == request_id:
                return envelope.message
        raise AssertionError("unreachable")

    def replies(self, until: str) -> Iterator[Any]:
        deadline = time.monotonic() + 30.0
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            assert remaining > 0, "the server stopped answering"
            assert self.dealer.poll(remaining), "the server stopped answering"
            envelope = self.codec.decode(self.dealer.recv_multipart(copy=False))
            yield envelope
            if envelope.request_id == until:
                return

    def run(self, cases: list[Case]) -> None:
        """Send a batch, then a ping; the replies before the pong answer the batch in order."""
        for frames, _ in cases:
            self.dealer.send_multipart(frames)
        self.sent += len(cases)
        self.probes += 1
        probe = f"probe-{self.probes}"
        self.dealer.send_multipart(self.codec.encode(Ping(), request_id=probe), copy=False)
        got = list(self.replies(until=probe))
        assert isinstance(got[-1].message, Pong)
        answers = got[:-1]
        assert len(answers) == len(cases), f"{len(cases)} frame sets, {len(answers)} replies"
        for (frames, expected), envelope in zip(cases, answers, strict=True):
            reply = envelope.message
            if isinstance(reply, ErrorReply) and reply.code in REJECTIONS:
                self.refusals[REJECTIONS[reply.code]] += 1
            if expected == "pong":
                assert isinstance(reply, Pong), reply
            elif expected != ANY:
                assert isinstance(reply, ErrorReply), (frames[:2], reply)
                assert reply.code == expected, (frames[:2], reply)
        rss = psutil.Process(self.server.pid).memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server_process(
        SAMPLE_HANDLERS, workers=1, extra_args=["--max-message-size", str(LIMIT)]
    ) as process:
        yield process


def test_ten_thousand_hostile_frame_sets_are_refused_counted_and_harmless(
    server: ServerProcess,
) -> None:
    fuzzer = Fuzzer(server)
    key = server.info.key
    try:
        status = fuzzer.request(StatusRequest(execution_id=None))
        assert isinstance(status, ServerStatus)
        before = status.counters
        rss_before = psutil.Process(server.pid).memory_info().rss
        started = time.perf_counter()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        )
        @given(batch=st.lists(frame_sets(key), min_size=BATCH, max_size=BATCH))
        def send(batch: list[list[Case]]) -> None:
            fuzzer.run([case for cases in batch for case in cases])

        send()
        elapsed = time.perf_counter() - started
        assert fuzzer.sent >= BATCH * EXAMPLES, fuzzer.sent

        assert isinstance(fuzzer.request(Ping()), Pong)
        status = fuzzer.request(StatusRequest(execution_id=None))
        assert isinstance(status, ServerStatus)
        after = status.counters
        for name, seen in fuzzer.refusals.items():
            assert getattr(after, name) - getattr(before, name) == seen, name
        for name in fuzzer.refusals:
            assert fuzzer.refusals[name] > 0, name
        rss_after = psutil.Process(server.pid).memory_info().rss
        assert server.poll() is None, "the server died"
        assert max(rss_after, fuzzer.peak_rss) - rss_before < RSS_MARGIN, (
            rss_before,
            fuzzer.peak_rss,
            rss_after,
        )
        print(
            f"\nfuzz: {fuzzer.sent} frame sets in {elapsed:.1f} s "
            f"({fuzzer.sent / elapsed:.0f}/s incl. generation); server RSS "
            f"{rss_before / 2**20:.1f} -> peak {fuzzer.peak_rss / 2**20:.1f} -> "
            f"{rss_after / 2**20:.1f} MiB; refusals {fuzzer.refusals}"
        )
    finally:
        fuzzer.close()
    assert os.path.exists(server.connection_file)
