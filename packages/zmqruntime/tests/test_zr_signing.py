"""Signatures match docs/protocol.md §3 byte for byte; the replay window stays bounded."""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqruntime.codec import WireCodec
from zmqruntime.messages import Heartbeat, Ping
from zmqruntime.signing import MessageSigner, ReplayGuard, new_key

# The worked examples of docs/protocol.md §3 (checked there with `openssl dgst` too).
DOC_KEY = bytes(range(32))
DOC_PING = (
    b'{"protocol":"1.0","type":"ping","msg_id":"000102030405060708090a0b0c0d0e0f",'
    b'"request_id":"c1-1","server_epoch":null,"arrays":[],"body":{}}'
)
DOC_PING_SIGNATURE = b"2b46c8af902ad96cf9271ff8a4f710c42c5067e0b40e51559e4c6b3fb1848851"
DOC_HEARTBEAT_TOPIC = b"__heartbeat__"
DOC_HEARTBEAT = (
    b'{"protocol":"1.0","type":"heartbeat","msg_id":"ffeeddccbbaa99887766554433221100",'
    b'"request_id":null,"server_epoch":"5e7a1c","arrays":[],'
    b'"body":{"seq":12,"uptime":12.5,"interval":1.0}}'
)
DOC_HEARTBEAT_SIGNATURE = b"80dd45c3834febec1354e331afff317bb778fc989cf4eb12071df0470db5ec30"
DOC_SUBMIT = (
    b'{"protocol":"1.0","type":"submit","msg_id":"0123456789abcdef0123456789abcdef",'
    b'"request_id":"c1-2","server_epoch":null,"arrays":[{"dtype":"<u2","shape":[2,3]}],'
    b'"body":{"handler":"execute","params":{"image":{"$array":0}},"compile_only":false,'
    b'"compile_artifact_id":null,"label":null}}'
)
DOC_SUBMIT_ARRAY = bytes.fromhex("010002000300040005000600")
DOC_SUBMIT_SIGNATURE = b"2c009aa9db0c16ace0a46ba3bc7c29f3e623e4123b9937c288b19872aa02362c"


def reference_signature(key: bytes, frames: list[bytes]) -> bytes:
    """§3 written out the plain way: HMAC over (8-byte big-endian length + bytes) per frame."""
    message = b"".join(struct.pack(">Q", len(f)) + f for f in frames)
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode()


def test_the_documented_worked_examples() -> None:
    signer = MessageSigner(DOC_KEY)
    assert signer.sign([DOC_PING]) == DOC_PING_SIGNATURE
    assert signer.sign([DOC_HEARTBEAT_TOPIC, DOC_HEARTBEAT]) == DOC_HEARTBEAT_SIGNATURE
    assert signer.sign([DOC_SUBMIT, DOC_SUBMIT_ARRAY]) == DOC_SUBMIT_SIGNATURE
    assert reference_signature(DOC_KEY, [DOC_PING]) == DOC_PING_SIGNATURE


def test_the_documented_frames_decode() -> None:
    ping = WireCodec(DOC_KEY).decode([DOC_PING_SIGNATURE, DOC_PING])
    assert ping.message == Ping()
    assert ping.request_id == "c1-1"
    beat = WireCodec(DOC_KEY).decode(
        [DOC_HEARTBEAT_TOPIC, DOC_HEARTBEAT_SIGNATURE, DOC_HEARTBEAT], topic=True
    )
    assert beat.message == Heartbeat(seq=12, uptime=12.5, interval=1.0)
    assert beat.topic == DOC_HEARTBEAT_TOPIC
    assert beat.server_epoch == "5e7a1c"
    submit = WireCodec(DOC_KEY).decode([DOC_SUBMIT_SIGNATURE, DOC_SUBMIT, DOC_SUBMIT_ARRAY])
    image = submit.message.params["image"]  # type: ignore[union-attr]
    assert image.dtype == np.dtype("<u2")
    assert image.tolist() == [[1, 2, 3], [4, 5, 6]]


@settings(max_examples=50)
@given(
    key=st.binary(min_size=1, max_size=100),  # longer than a block is hashed first
    frames=st.lists(st.binary(max_size=300), max_size=5),
)
def test_sign_matches_the_reference_for_any_frames(key: bytes, frames: list[bytes]) -> None:
    signer = MessageSigner(key)
    signature = signer.sign(frames)
    assert signature == reference_signature(key, frames)
    assert signer.sign([memoryview(f) for f in frames]) == signature
    assert signer.verify(signature, frames)


def test_large_frames_are_signed_in_place_with_the_same_result() -> None:
    big = np.arange(200_000, dtype="<u4")
    frames = [b"topic", b"{}", big.tobytes()]
    signer = MessageSigner(DOC_KEY)
    view_frames = [b"topic", b"{}", big.data.cast("B")]
    assert signer.sign(view_frames) == reference_signature(DOC_KEY, frames)


@settings(max_examples=30)
@given(
    frames=st.lists(st.binary(max_size=8), min_size=2, max_size=4),
    split=st.integers(min_value=0, max_value=8),
)
def test_moving_a_frame_boundary_changes_the_signature(frames: list[bytes], split: int) -> None:
    joined = frames[0] + frames[1]
    cut = min(split, len(joined))
    moved = [joined[:cut], joined[cut:], *frames[2:]]
    signer = MessageSigner(DOC_KEY)
    assert signer.verify(signer.sign(frames), moved) == (moved == frames)


def test_verify_refuses_a_wrong_key_and_a_truncated_signature() -> None:
    frames = [b"a", b"b"]
    signature = MessageSigner(new_key()).sign(frames)
    assert not MessageSigner(new_key()).verify(signature, frames)
    signer = MessageSigner(DOC_KEY)
    assert not signer.verify(signer.sign(frames)[:-1], frames)
    assert not signer.verify(b"", frames)


def test_new_key_is_32_random_bytes() -> None:
    keys = {new_key() for _ in range(10)}
    assert len(keys) == 10
    assert all(len(k) == 32 for k in keys)


def test_signer_repr_hides_the_key() -> None:
    assert DOC_KEY.hex() not in repr(MessageSigner(DOC_KEY))


# -- replay window ----------------------------------------------------------------------------


def test_replay_guard_refuses_a_repeat_and_forgets_the_oldest_first() -> None:
    guard = ReplayGuard(capacity=3)
    assert all(guard.check_and_remember(s) for s in (b"a", b"b", b"c"))
    assert not guard.check_and_remember(b"a")
    assert guard.check_and_remember(b"d")  # evicts a
    assert len(guard) == 3
    assert b"a" not in guard
    assert b"b" in guard
    assert guard.check_and_remember(b"a")  # forgotten, so accepted again (evicts b)
    assert not guard.check_and_remember(b"c")


@settings(max_examples=50)
@given(
    capacity=st.integers(min_value=1, max_value=8),
    signatures=st.lists(st.sampled_from([bytes([i]) for i in range(12)]), max_size=60),
)
def test_replay_guard_behaves_like_a_bounded_window(capacity: int, signatures: list[bytes]) -> None:
    guard = ReplayGuard(capacity)
    window: list[bytes] = []  # model: the last `capacity` accepted signatures
    for signature in signatures:
        expected = signature not in window
        assert guard.check_and_remember(signature) == expected
        if expected:
            window = [*window, signature][-capacity:]
        assert len(guard) == len(window) <= capacity
        assert all(s in guard for s in window)


def test_replay_guard_rejects_a_zero_capacity() -> None:
    import pytest

    with pytest.raises(ValueError, match="capacity"):
        ReplayGuard(0)
