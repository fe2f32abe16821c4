"""WireCodec: round trips, and the receiver's refusals in the order of docs/protocol.md §3."""

from __future__ import annotations

import json
import os
import secrets
import tracemalloc
from typing import Any

import attrs
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqruntime.arrays import ZERO_COPY_THRESHOLD
from zmqruntime.codec import (
    PROTOCOL_VERSION,
    MalformedMessage,
    Replayed,
    TooLarge,
    Unauthorized,
    UnsupportedProtocol,
    WireCodec,
    WireError,
    next_msg_id,
)
from zmqruntime.messages import (
    Cancel,
    CancelNotice,
    ErrorCode,
    ErrorReply,
    ExecutionEvent,
    Ping,
    StatusReply,
    StatusRequest,
    Submit,
)
from zmqruntime.schema import SchemaError
from zmqruntime.signing import MessageSigner, new_key
from zmqruntime.strategies import (
    MESSAGE_STRATEGIES,
    MESSAGE_STRATEGIES_WITH_ARRAYS,
    messages,
    progress_updates,
)

KEY = new_key()
request_ids = st.none() | st.text(min_size=1, max_size=128)


class CountingCodec(WireCodec):
    """Counts how often the envelope JSON is read, to prove refusals come before it."""

    def __init__(self, key: bytes, **options: Any) -> None:
        super().__init__(key, **options)
        self.json_reads = 0

    def load_envelope(self, raw: bytes | memoryview) -> object:
        self.json_reads += 1
        return super().load_envelope(raw)


def signed(
    envelope: dict[str, Any] | bytes,
    *,
    arrays: list[bytes] = (),  # type: ignore[assignment]
    topic: bytes | None = None,
    key: bytes = KEY,
) -> list[bytes]:
    """Frames of an arbitrary (possibly invalid) envelope, correctly signed."""
    raw = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    body = [raw, *arrays]
    head = [] if topic is None else [topic]
    signature = MessageSigner(key).sign([*head, *body])
    return [*head, signature, *body]


def envelope(**changes: Any) -> dict[str, Any]:
    base = {
        "protocol": PROTOCOL_VERSION,
        "type": "ping",
        "msg_id": secrets.token_hex(16),
        "request_id": "r-9",
        "server_epoch": None,
        "arrays": [],
        "body": {},
    }
    return {**base, **changes}


def channel_of(message: Any) -> bool:
    """True when the message belongs on the events channel (decode with a topic)."""
    return isinstance(message, CancelNotice)


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(MESSAGE_STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=15)
@given(data=st.data(), request_id=request_ids, epoch=request_ids)
def test_every_message_type_round_trips_through_frames(
    cls: type, data: st.DataObject, request_id: str | None, epoch: str | None
) -> None:
    message = data.draw(MESSAGE_STRATEGIES[cls])
    on_events = channel_of(message) or (
        not isinstance(message, Cancel) and data.draw(st.booleans())
    )
    topic = data.draw(st.binary(max_size=40)) if on_events else None
    frames = WireCodec(KEY).encode(message, request_id=request_id, server_epoch=epoch, topic=topic)
    decoded = WireCodec(KEY).decode(frames, topic=on_events)
    assert decoded.message == message
    assert type(decoded.message) is cls
    assert (decoded.request_id, decoded.server_epoch, decoded.topic) == (request_id, epoch, topic)
    assert decoded.type == cls.TYPE
    assert decoded.protocol == PROTOCOL_VERSION


ARRAY_CLASSES = [Submit, ErrorReply, ExecutionEvent, StatusReply]


@pytest.mark.parametrize("cls", ARRAY_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bodies_with_numpy_arrays_round_trip(cls: type, data: st.DataObject) -> None:
    message = data.draw(MESSAGE_STRATEGIES_WITH_ARRAYS[cls])
    frames = WireCodec(KEY).encode(message)
    decoded = WireCodec(KEY).decode(frames)
    assert decoded.message == message  # arrays compare by dtype, shape and bytes


def test_arrays_keep_dtype_shape_values_and_big_ones_travel_without_copy() -> None:
    big = np.linspace(0, 1, 300_000).reshape(600, 500)  # 2.4 MB
    strided = np.arange(60, dtype=">i4").reshape(6, 10)[:, ::3]  # not contiguous, big-endian
    params = {"big": big, "nested": [{"s": strided}], "scalar": np.array(3.5, dtype="<f4")}
    frames = WireCodec(KEY).encode(Submit(handler="h", params=params))
    big_frame = frames[2]
    assert isinstance(big_frame, memoryview)
    assert np.shares_memory(np.frombuffer(big_frame, np.uint8), big)  # sent without a copy
    assert all(isinstance(f, bytes) for f in frames[3:])  # small arrays are copied

    received = [bytes(f) if isinstance(f, bytes) else bytearray(f) for f in frames]
    out = WireCodec(KEY).decode(received).message.params  # type: ignore[union-attr]
    assert out["big"].dtype == big.dtype
    assert out["big"].shape == (600, 500)
    assert np.array_equal(out["big"], big)
    assert np.shares_memory(out["big"], np.frombuffer(received[2], np.uint8))  # read in place
    assert not out["big"].flags.writeable
    assert out["nested"][0]["s"].dtype == np.dtype(">i4")
    assert out["nested"][0]["s"].tolist() == strided.tolist()
    assert out["scalar"].shape == ()
    assert out["scalar"] == np.float32(3.5)


def test_round_trip_over_real_zeromq_sockets_with_zero_copy_frames() -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    try:
        for sock in (pull, push):
            sock.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVTIMEO, 5000)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        image = np.random.default_rng(1).random((256, 256))  # 512 KiB
        assert image.nbytes > ZERO_COPY_THRESHOLD
        message = Submit(handler="execute", params={"image": image, "n": 1}, label="plate")
        push.send_multipart(WireCodec(KEY).encode(message, request_id="r1"), copy=False)
        frames = pull.recv_multipart(copy=False)
        decoded = WireCodec(KEY).decode(frames)
        assert decoded.message == message
        assert decoded.request_id == "r1"
        received = decoded.message.params["image"]  # type: ignore[union-attr]
        assert np.shares_memory(received, np.frombuffer(frames[2].buffer, np.uint8))
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def test_encode_draws_a_fresh_msg_id_so_the_same_message_is_not_a_replay(
    sender: WireCodec, receiver: WireCodec
) -> None:
    first, second = sender.encode(Ping()), sender.encode(Ping())
    assert first[1] != second[1]
    ids = {receiver.decode(first).msg_id, receiver.decode(second).msg_id}
    assert len(ids) == 2


def test_cancel_is_a_request_on_control_and_a_notice_on_events() -> None:
    frames = WireCodec(KEY).encode(Cancel(execution_id="x", force=True), request_id="r")
    assert WireCodec(KEY).decode(frames).message == Cancel(execution_id="x", force=True)
    frames = WireCodec(KEY).encode(CancelNotice(execution_id="x", force=True), topic=b"__cancel__")
    notice = WireCodec(KEY).decode(frames, topic=True).message
    assert notice == CancelNotice(execution_id="x", force=True)


# -- refusals before JSON ---------------------------------------------------------------------


@st.composite
def tampered(draw: st.DrawFn) -> tuple[list[bytes], bool, str]:
    """A valid frame set (with or without topic and arrays) and one tampering of it."""
    message = draw(messages() | MESSAGE_STRATEGIES_WITH_ARRAYS[Submit])
    on_events = channel_of(message) or (not isinstance(message, Cancel) and draw(st.booleans()))
    topic = draw(st.binary(min_size=1, max_size=20)) if on_events else None
    frames = [bytes(f) for f in WireCodec(KEY).encode(message, topic=topic, request_id="r")]
    how = draw(
        st.sampled_from(
            ["flip", "swap", "drop", "add", "topic"]
            if on_events
            else ["flip", "swap", "drop", "add"]
        )
    )
    changed = list(frames)
    if how == "flip":
        index = draw(st.integers(0, len(frames) - 1).filter(lambda i: len(frames[i]) > 0))
        position = draw(st.integers(0, len(frames[index]) - 1))
        bit = 1 << draw(st.integers(0, 7))
        frame = bytearray(frames[index])
        frame[position] ^= bit
        changed[index] = bytes(frame)
    elif how == "swap":
        pairs = [
            (i, j)
            for i in range(len(frames))
            for j in range(i + 1, len(frames))
            if frames[i] != frames[j]
        ]
        i, j = draw(st.sampled_from(pairs))
        changed[i], changed[j] = changed[j], changed[i]
    elif how == "drop":
        del changed[draw(st.integers(0, len(frames) - 1))]
    elif how == "add":
        changed.insert(draw(st.integers(0, len(frames))), draw(st.binary(max_size=20)))
    else:
        changed[0] = draw(st.binary(max_size=20).filter(lambda t: t != frames[0]))
    return changed, on_events, how


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(case=tampered())
def test_any_tampering_is_unauthorized_before_any_json_is_read(
    case: tuple[list[bytes], bool, str],
) -> None:
    frames, on_events, _ = case
    codec = CountingCodec(KEY)
    with pytest.raises(Unauthorized) as caught:
        codec.decode(frames, topic=on_events)
    assert codec.json_reads == 0
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    assert caught.value.request_id is None


def test_a_wrongly_signed_frame_that_is_not_even_json_is_unauthorized() -> None:
    codec = CountingCodec(KEY)
    garbage = b"\xff\xfe not utf-8, not json \x00"
    with pytest.raises(Unauthorized):
        codec.decode(signed(garbage, key=new_key()))
    with pytest.raises(Unauthorized):
        codec.decode([b"0" * 64, garbage])
    assert codec.json_reads == 0
    # the same bytes correctly signed do reach the JSON step, and fail there
    with pytest.raises(MalformedMessage, match="UTF-8"):
        codec.decode(signed(garbage))
    assert codec.json_reads == 1


def test_too_few_frames_is_unauthorized() -> None:
    for frames, topic in (([], False), ([b"x" * 64], False), ([b"t", b"x" * 64], True)):
        with pytest.raises(Unauthorized):
            WireCodec(KEY).decode(frames, topic=topic)


def test_a_replayed_frame_set_is_refused(key: bytes, sender: WireCodec) -> None:
    frames = sender.encode(Ping(), request_id="r")
    receiver = CountingCodec(key)
    receiver.decode(frames)
    with pytest.raises(Replayed) as caught:
        receiver.decode(frames)
    assert caught.value.code is ErrorCode.REPLAYED
    assert receiver.json_reads == 1
    WireCodec(key).decode(frames)  # another receiver has its own window


def test_oversized_messages_are_refused_before_the_signature_is_checked() -> None:
    small = CountingCodec(KEY, max_message_size=1000)
    frames = signed(envelope(body={"pad": "x" * 2000}))
    with pytest.raises(TooLarge) as caught:
        small.decode(frames)
    assert caught.value.code is ErrorCode.TOO_LARGE
    frames[0] = b"0" * 64  # a bad signature too: size is checked first
    with pytest.raises(TooLarge):
        small.decode(frames)
    assert small.json_reads == 0
    with pytest.raises(TooLarge):
        WireCodec(KEY, max_message_size=1000).encode(Submit(handler="h", params={"p": "x" * 2000}))


def test_too_many_array_frames_are_refused() -> None:
    codec = CountingCodec(KEY, max_arrays=2)
    with pytest.raises(TooLarge):
        codec.decode([b"0" * 64, b"{}", b"", b"", b""])
    assert codec.json_reads == 0
    params = {f"a{i}": np.zeros(1) for i in range(3)}
    with pytest.raises(TooLarge):
        codec.encode(Submit(handler="h", params=params))


# -- refusals after JSON ----------------------------------------------------------------------


def test_another_major_protocol_version_is_unsupported_and_keeps_the_request_id() -> None:
    with pytest.raises(UnsupportedProtocol) as caught:
        WireCodec(KEY).decode(signed(envelope(protocol="2.0")))
    assert caught.value.code is ErrorCode.UNSUPPORTED_PROTOCOL
    assert caught.value.request_id == "r-9"
    minor = WireCodec(KEY).decode(signed(envelope(protocol="1.7")))
    assert minor.protocol == "1.7"
    assert minor.message == Ping()


MALFORMED = [
    (b"not json", "envelope"),
    (b'{"protocol": NaN}', "envelope"),
    (b"[1, 2]", "envelope"),
    (envelope(protocol=1.0), "envelope.protocol"),
    (envelope(protocol="1"), "envelope.protocol"),
    ({k: v for k, v in envelope().items() if k != "protocol"}, "envelope.protocol"),
    ({k: v for k, v in envelope().items() if k != "body"}, "envelope.body"),
    ({k: v for k, v in envelope().items() if k != "msg_id"}, "envelope.msg_id"),
    (envelope(extra=1), "envelope.extra"),
    (envelope(msg_id="ABCDEF0123456789ABCDEF0123456789"), "envelope.msg_id"),
    (envelope(msg_id="abc"), "envelope.msg_id"),
    (envelope(type="execute"), "envelope.type"),
    (envelope(type=7), "envelope.type"),
    (envelope(request_id=""), "envelope.request_id"),
    (envelope(request_id="x" * 129), "envelope.request_id"),
    (envelope(server_epoch=5), "envelope.server_epoch"),
    (envelope(arrays={}), "envelope.arrays"),
    (envelope(body=[]), "ping"),
    (envelope(body={"x": 1}), "ping.x"),
    (  # 1e999 is valid JSON text that reads as infinity: refused by the schema
        json.dumps(envelope(type="submit", body={"handler": "h", "params": {"x": "INF"}}))
        .replace('"INF"', "1e999")
        .encode(),
        "submit.params.x",
    ),
    (envelope(type="submit", body={"handler": "h", "params": {"$array": 0}}), "submit.params"),
]


@pytest.mark.parametrize(("raw", "field"), MALFORMED)
def test_signed_but_malformed_envelopes_name_the_field(
    raw: dict[str, Any] | bytes, field: str
) -> None:
    with pytest.raises(MalformedMessage) as caught:
        WireCodec(KEY).decode(signed(raw))
    error = caught.value
    assert error.code is ErrorCode.INVALID_REQUEST
    assert error.field is not None
    assert error.field == field or error.field.startswith(field + "."), error.field
    assert error.message.startswith(field)
    if isinstance(raw, dict) and raw.get("request_id") == "r-9":
        assert error.request_id == "r-9"  # the server can still answer this request
    reply = error.to_reply()
    assert reply.code is ErrorCode.INVALID_REQUEST
    assert reply.details == {"field": error.field}


def _array_envelope(headers: list[Any], refs: Any = None) -> dict[str, Any]:
    params = {"a": {"$array": 0}} if refs is None else refs
    return envelope(type="submit", arrays=headers, body={"handler": "h", "params": params})


BAD_ARRAYS = [
    ([{"dtype": "<f8", "shape": [2]}], [b"\0" * 15], "envelope.arrays[0].shape"),
    ([{"dtype": "<f8", "shape": [2]}], [b"\0" * 17], "envelope.arrays[0].shape"),
    ([{"dtype": "<f8", "shape": [10**6, 10**6]}], [b"\0" * 8], "envelope.arrays[0].shape"),
    ([{"dtype": "|u1", "shape": [2**62, 2**62, 2**62]}], [b""], "envelope.arrays[0].shape"),
    ([{"dtype": "|O8", "shape": [1]}], [b"\0" * 8], "envelope.arrays[0].dtype"),
    ([{"dtype": "<U4", "shape": [1]}], [b"\0" * 16], "envelope.arrays[0].dtype"),
    ([{"dtype": "|V8", "shape": [1]}], [b"\0" * 8], "envelope.arrays[0].dtype"),
    ([{"dtype": "[('a','<i4')]", "shape": [1]}], [b"\0" * 4], "envelope.arrays[0].dtype"),
    ([{"dtype": "<f2", "shape": [1]}], [b"\0" * 2], "envelope.arrays[0].dtype"),
    ([{"dtype": "<f16", "shape": [1]}], [b"\0" * 16], "envelope.arrays[0].dtype"),
    ([{"dtype": "f8", "shape": [1]}], [b"\0" * 8], "envelope.arrays[0].dtype"),
    ([{"dtype": "<u1", "shape": [1]}], [b"\0"], "envelope.arrays[0].dtype"),
    ([{"dtype": "<f8", "shape": [-1]}], [b""], "envelope.arrays[0].shape[0]"),
    ([{"dtype": "<f8", "shape": [1.0]}], [b"\0" * 8], "envelope.arrays[0].shape[0]"),
    ([{"dtype": "<f8", "shape": [True]}], [b"\0" * 8], "envelope.arrays[0].shape[0]"),
    ([{"dtype": "<f8", "shape": [1] * 33}], [b"\0" * 8], "envelope.arrays[0].shape"),
    ([{"dtype": "<f8"}], [b"\0" * 8], "envelope.arrays[0].shape"),
    ([{"dtype": "<f8", "shape": [1], "order": "F"}], [b"\0" * 8], "envelope.arrays[0].order"),
    ([{"dtype": "<f8", "shape": [1]}], [], "envelope.arrays"),
    ([], [b"\0" * 8], "envelope.arrays"),
]


@pytest.mark.parametrize(("headers", "frames", "field"), BAD_ARRAYS)
def test_bad_array_headers_are_refused_without_allocating(
    headers: list[Any], frames: list[bytes], field: str
) -> None:
    raw = signed(_array_envelope(headers), arrays=frames)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedMessage) as caught:
            WireCodec(KEY).decode(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # a declared terabyte costs nothing
    assert caught.value.field == field, str(caught.value)


@pytest.mark.parametrize(
    ("params", "frames", "field"),
    [
        ({"a": {"$array": 0}, "b": {"$array": 0}}, [b"\0" * 8], "submit.params.b.$array"),
        ({"a": 1}, [b"\0" * 8], "submit"),
        ({"a": {"$array": 1}}, [b"\0" * 8], "submit.params.a.$array"),
        ({"a": {"$array": "0"}}, [b"\0" * 8], "submit.params.a.$array"),
        ({"a": {"$array": 0, "x": 1}}, [b"\0" * 8], "submit.params.a"),
    ],
)
def test_array_references_must_match_the_frames_exactly(
    params: dict[str, Any], frames: list[bytes], field: str
) -> None:
    headers = [{"dtype": "<f8", "shape": [1]}] * len(frames)
    with pytest.raises(MalformedMessage) as caught:
        WireCodec(KEY).decode(signed(_array_envelope(headers, params), arrays=frames))
    assert caught.value.field == field, str(caught.value)


def test_arrays_in_a_body_that_cannot_hold_them_are_refused() -> None:
    raw = envelope(arrays=[{"dtype": "<f8", "shape": [1]}], body={})
    with pytest.raises(MalformedMessage, match="not referenced"):
        WireCodec(KEY).decode(signed(raw, arrays=[b"\0" * 8]))


# -- encoding side ----------------------------------------------------------------------------


def test_encode_refuses_bad_ids_and_non_messages() -> None:
    codec = WireCodec(KEY)
    with pytest.raises(SchemaError) as caught:
        codec.encode(Ping(), request_id="")
    assert caught.value.path == "envelope.request_id"
    with pytest.raises(SchemaError):
        codec.encode(Ping(), server_epoch="e" * 129)
    with pytest.raises(TypeError):
        codec.encode({"type": "ping"})  # type: ignore[arg-type]


@settings(max_examples=10)
@given(update=progress_updates())
def test_the_envelope_is_compact_utf8_json_with_every_field(update: Any) -> None:
    frames = WireCodec(KEY).encode(update, server_epoch="ep", topic=update.execution_id.encode())
    envelope_json = json.loads(bytes(frames[2]).decode("utf-8"))
    assert set(envelope_json) == {
        "protocol",
        "type",
        "msg_id",
        "request_id",
        "server_epoch",
        "arrays",
        "body",
    }
    assert envelope_json["body"] == update.to_wire()
    assert (len(frames[1]) == 64 and bytes(frames[1]).decode("ascii").islower()) or bytes(
        frames[1]
    ).isdigit()


def test_wire_errors_are_typed_and_carry_their_code() -> None:
    error = WireError("boom")
    assert error.code is ErrorCode.INTERNAL
    assert "boom" in str(error)
    assert attrs.has(ErrorReply)
    assert error.to_reply().details == {}


def test_a_message_encoded_again_reuses_its_body_never_its_msg_id() -> None:
    """The codec keeps the last body's JSON text for a message sent again (an unchanged
    status snapshot): the text must belong to that very message, and every envelope still
    gets its own `msg_id` (32 hex digits) so none is refused as a replay."""
    sender, receiver = WireCodec(KEY), WireCodec(KEY)
    first = StatusRequest(execution_id="a" * 32)
    equal_twin = StatusRequest(execution_id="a" * 32)
    other = StatusRequest(execution_id="b" * 32)
    sent = [first, first, other, first, equal_twin, Ping()]
    received = [receiver.decode(sender.encode(message)) for message in sent]
    assert [envelope.message for envelope in received] == sent
    ids = [envelope.msg_id for envelope in received]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_repeats_its_parents_msg_ids() -> None:
    """A child forked from a process holding codecs draws a `msg_id` prefix of its own, so
    its messages and its parent's never collide in a receiver's replay guard."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, then leave without any clean-up
        os.write(write_end, next_msg_id().encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    parent = next_msg_id()
    assert status == 0
    assert len(child) == len(parent) == 32
    assert child[:16] != parent[:16]
