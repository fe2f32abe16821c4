"""Bad input on a real server: garbage, unsigned, tampered, replayed, oversized, wrong version,
invalid bodies. Every refused message is answered (control) and counted exactly; nothing it
touched changes; the server answers afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from typing import Any

import zmq
import zmq.asyncio

from zmqruntime.codec import WireCodec
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    ErrorCode,
    ErrorReply,
    Ping,
    Pong,
    ServerStatus,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitReply,
)
from zmqruntime.progress import ProgressUpdate
from zmqruntime.signing import MessageSigner
from zmqruntime.testing import RawPeer, example_progress, serve_and_connect

LIMIT = 64 * 1024  # small size limit, so "oversized" stays cheap


def signed(key: bytes, envelope: dict[str, Any] | bytes, *arrays: bytes) -> list[bytes]:
    """Frames of a correctly signed message whose envelope may break every other rule."""
    raw = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    return [MessageSigner(key).sign([raw, *arrays]), raw, *arrays]


def envelope(kind: str, body: Any, **fields: Any) -> dict[str, Any]:
    data = {
        "protocol": "1.0",
        "type": kind,
        "msg_id": secrets.token_hex(16),
        "request_id": None,
        "server_epoch": None,
        "arrays": [],
        "body": body,
    }
    data.update(fields)
    return data


async def collect_errors(peer: RawPeer, count: int, timeout: float = 30.0) -> list[ErrorReply]:
    replies: list[ErrorReply] = []
    async with asyncio.timeout(timeout):
        while len(replies) < count:
            reply = (await peer.other_replies.get()).message
            assert isinstance(reply, ErrorReply), reply
            replies.append(reply)
    return replies


async def server_status(peer: RawPeer) -> ServerStatus:
    status = await peer.request(StatusRequest(execution_id=None))
    assert isinstance(status, ServerStatus)
    return status


def test_a_flood_of_bad_frames_is_counted_exactly_and_harms_nothing() -> None:
    async def scenario() -> None:
        async with serve_and_connect(max_message_size=LIMIT, workers=1) as (server, peer):
            key = peer.info.key
            done = await peer.request(Submit(handler="echo", params={"x": 1}))
            assert isinstance(done, SubmitReply)
            await peer.wait_status(done.execution_id, ExecutionStatus.COMPLETE)
            before = await peer.request(StatusRequest(execution_id=done.execution_id))
            rng = secrets.SystemRandom()
            codec = WireCodec(key)
            expected = {
                "rejected_unauthorized": 0,
                "rejected_replayed": 0,
                "rejected_too_large": 0,
                "rejected_malformed": 0,
                "rejected_protocol": 0,
            }
            bad: list[list[bytes]] = []

            def add(counter: str, frames: list[bytes]) -> None:
                expected[counter] += 1
                bad.append(frames)

            for _ in range(200):  # one frame: too few to carry a signature
                add("rejected_unauthorized", [os.urandom(rng.randrange(0, 200))])
            for _ in range(200):  # random frames where signature and envelope belong
                frames = [os.urandom(rng.randrange(0, 100)) for _ in range(rng.randrange(2, 5))]
                add("rejected_unauthorized", frames)
            for _ in range(100):  # unsigned: a plausible envelope, a signature of zeros
                raw = json.dumps(envelope("ping", {})).encode()
                add("rejected_unauthorized", [b"0" * 64, raw])
            for _ in range(100):  # tampered: one byte of a signed envelope changed
                frames = [bytes(f) for f in codec.encode(Ping(), request_id="t")]
                body = bytearray(frames[1])
                body[rng.randrange(len(body))] ^= 0x01
                add("rejected_unauthorized", [frames[0], bytes(body)])
            originals = [[bytes(f) for f in codec.encode(Ping())] for _ in range(100)]
            for frames in originals:  # replayed: accepted once (a pong), refused after
                add("rejected_replayed", frames)
            for _ in range(50):  # oversized: frames under the per-frame limit, too big together
                half = LIMIT // 2 + 1
                add("rejected_too_large", signed(key, b"{}", os.urandom(half), os.urandom(half)))
            for _ in range(50):  # more array frames than allowed
                add("rejected_too_large", [b"0" * 64, b"{}", *([b"x"] * 65)])
            for _ in range(50):  # another major protocol version, correctly signed
                add("rejected_protocol", signed(key, envelope("ping", {}, protocol="2.0")))
            for _ in range(50):  # correctly signed, not JSON (each distinct: no replays)
                add("rejected_malformed", signed(key, b"\xff{not json " + os.urandom(8)))
            assert len(bad) == 900

            for frames in originals:
                await peer.send_frames(frames)
            pongs = [(await peer.other_replies.get()).message for _ in originals]
            assert all(isinstance(p, Pong) for p in pongs)
            rng.shuffle(bad)
            for frames in bad:
                await peer.send_frames(frames)
            replies = await collect_errors(peer, len(bad))
            codes = [r.code for r in replies]
            assert codes.count(ErrorCode.UNAUTHORIZED) == expected["rejected_unauthorized"]
            assert codes.count(ErrorCode.REPLAYED) == expected["rejected_replayed"]
            assert codes.count(ErrorCode.TOO_LARGE) == expected["rejected_too_large"]

            assert isinstance(await peer.request(Ping()), Pong)
            status = await server_status(peer)
            counters = status.counters
            assert {name: getattr(counters, name) for name in expected} == expected
            assert counters.submitted == 1
            assert counters.completed == 1
            assert server.counters.internal_errors == 0
            after = await peer.request(StatusRequest(execution_id=done.execution_id))
            assert after == before

    asyncio.run(scenario())


def test_a_signed_request_with_an_invalid_body_names_the_field() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_server, peer):
            key = peer.info.key
            cases: list[tuple[dict[str, Any], str]] = [
                ({"handler": "echo", "params": [1, 2]}, "submit.params"),
                ({"handler": "echo", "params": {}, "colour": "red"}, "submit.colour"),
                ({"params": {}}, "submit.handler"),
                ({"handler": "echo", "params": {"x": 1}, "label": 7}, "submit.label"),
                ({"handler": "echo", "params": {}, "compile_only": 1}, "submit.compile_only"),
                (
                    {
                        "handler": "echo",
                        "params": {},
                        "compile_only": True,
                        "compile_artifact_id": "a" * 32,
                    },
                    "submit.compile_artifact_id",
                ),
            ]
            for index, (body, field) in enumerate(cases):
                request_id = f"bad-{index}"
                await peer.send_frames(signed(key, envelope("submit", body, request_id=request_id)))
                reply = await asyncio.wait_for(peer.other_replies.get(), 10)
                assert reply.request_id == request_id
                assert isinstance(reply.message, ErrorReply)
                assert reply.message.code is ErrorCode.INVALID_REQUEST
                assert reply.message.details == {"field": field}
                assert field in reply.message.message
            # NaN is not JSON at all: the envelope cannot be read, so no request_id comes back.
            raw = json.dumps(envelope("submit", {"handler": "echo", "params": {"x": 1}}))
            await peer.send_frames(signed(key, raw.replace('"x": 1', '"x": NaN').encode()))
            reply = await asyncio.wait_for(peer.other_replies.get(), 10)
            assert reply.request_id is None
            assert isinstance(reply.message, ErrorReply)
            assert reply.message.code is ErrorCode.INVALID_REQUEST
            assert reply.message.details == {"field": "envelope"}
            status = await server_status(peer)
            assert status.counters.submitted == 0
            assert status.counters.rejected_malformed == len(cases) + 1

    asyncio.run(scenario())


def test_requests_the_server_refuses_get_typed_errors() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (_server, peer):
            unknown = await peer.request(Submit(handler="nope", params={}))
            assert isinstance(unknown, ErrorReply)
            assert unknown.code is ErrorCode.UNKNOWN_HANDLER
            assert unknown.details == {"field": "submit.handler"}
            missing = await peer.request(StatusRequest(execution_id="0" * 32))
            assert isinstance(missing, ErrorReply)
            assert missing.code is ErrorCode.NOT_FOUND
            artifact = await peer.request(
                Submit(handler="execute", params={}, compile_artifact_id="0" * 32)
            )
            assert isinstance(artifact, ErrorReply)
            assert artifact.code is ErrorCode.ARTIFACT_MISSING
            # A message that is not a request (a pong) sent to the server:
            pong = Pong(server_name="x", pid=1, uptime=0.0, protocol="1.0")
            refused = await peer.request(pong)
            assert isinstance(refused, ErrorReply)
            assert refused.code is ErrorCode.INVALID_REQUEST
            assert refused.details == {"field": "envelope.type"}
            assert isinstance(await peer.request(Ping()), Pong)

    asyncio.run(scenario())


def test_bad_worker_reports_are_counted_and_dropped() -> None:
    async def scenario() -> None:
        async with serve_and_connect(workers=1) as (server, peer):
            context = zmq.asyncio.Context()
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(peer.info.progress)
            codec = WireCodec(peer.info.key)
            stray = ProgressUpdate.from_wire(example_progress(execution_id="f" * 32))
            try:
                for _ in range(20):
                    await push.send_multipart([os.urandom(64), os.urandom(30)])
                for _ in range(5):
                    await push.send_multipart(codec.encode(Ping()), copy=False)
                await push.send_multipart(codec.encode(stray), copy=False)
                # A ping on the control channel afterwards: the reports were read before it
                # is answered only if they arrived; wait for the counters instead.
                async with asyncio.timeout(10):
                    while (
                        server.counters.rejected_unauthorized < 20
                        or server.counters.rejected_malformed < 5
                        or server.counters.progress_dropped < 1
                    ):
                        await peer.request(Ping())
            finally:
                push.close(linger=0)
                context.term()
            assert server.counters.rejected_unauthorized == 20
            assert server.counters.rejected_malformed == 5
            assert server.counters.progress_dropped == 1
            assert server.counters.internal_errors == 0
            reply = await peer.request(StatusRequest(execution_id="f" * 32))
            assert isinstance(reply, ErrorReply)
            assert reply.code is ErrorCode.NOT_FOUND
            assert not isinstance(reply, StatusReply)

    asyncio.run(scenario())
