"""Frames <-> typed messages: the signed envelope of docs/protocol.md §2–§4.

`WireCodec.encode` turns a message into `[topic?, signature, envelope, *array_frames]`;
`WireCodec.decode` does the receiver's steps in the order of §3 — frame count and size,
constant-time signature check, replay check, and only then JSON — followed by the protocol
version, the envelope schema, the array frames and the body schema. Every refusal is a
`WireError` carrying an `ErrorCode`, and the `request_id` whenever the envelope got far enough
to read one, so the server can still answer the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from json import encoder as json_encoder
from typing import Any, ClassVar, Final

import attrs
import numpy.typing as npt
import zmq

from zmqruntime.arrays import ZERO_COPY_THRESHOLD, extract_arrays, read_array, restore_arrays
from zmqruntime.json_types import strict_json_loads
from zmqruntime.messages import (
    CONTROL_MESSAGE_TYPES,
    EVENT_MESSAGE_TYPES,
    ErrorCode,
    ErrorReply,
    Message,
)
from zmqruntime.schema import (
    MISSING,
    SchemaError,
    WireModel,
    holds_arrays,
    join_path,
    json_type_name,
    key_segment,
)
from zmqruntime.signing import MessageSigner, ReplayGuard, frame_length
from zmqruntime.unique_ids import UniqueIds

__all__ = [
    "PROTOCOL_VERSION",
    "Envelope",
    "MalformedMessage",
    "Replayed",
    "TooLarge",
    "Unauthorized",
    "UnsupportedProtocol",
    "WireCodec",
    "WireError",
    "protocol_problem",
    "recv_frames",
    "send_frames",
]

#: The protocol this library speaks: "MAJOR.MINOR". Peers must share the major version.
PROTOCOL_VERSION: Final = "1.0"
_MAJOR: Final = PROTOCOL_VERSION.split(".")[0]

_PROTOCOL = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")


def protocol_problem(version: object) -> str | None:
    """Why a peer's protocol version cannot be spoken with, or None when its major is ours."""
    if type(version) is not str or _PROTOCOL.fullmatch(version) is None:
        return 'must be a version "MAJOR.MINOR"'
    if version.split(".")[0] != _MAJOR:
        return f"protocol {version} is not supported; this peer speaks {PROTOCOL_VERSION}"
    return None


_MSG_ID = re.compile(r"[0-9a-f]{32}")
_ID_MAX = 128
_ENVELOPE_FIELDS: Final = frozenset(
    {"protocol", "type", "msg_id", "request_id", "server_epoch", "arrays", "body"}
)
_REQUIRED_ENVELOPE_FIELDS: Final = ("type", "msg_id", "request_id", "server_epoch", "body")
_NO_ARRAYS: Final[list[Any]] = []

Frame = bytes | memoryview
InFrame = bytes | bytearray | memoryview | zmq.Frame


class WireError(Exception):
    """A frame set was refused. `code` is the error code to answer with (§8)."""

    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        request_id: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = self.default_code if code is None else code
        self.message = message
        self.request_id = request_id
        self.field = field

    def to_reply(self) -> ErrorReply:
        """The `error` reply body for this refusal (`details.field` names the bad field)."""
        details: dict[str, Any] = {} if self.field is None else {"field": self.field}
        return ErrorReply(code=self.code, message=self.message, details=details)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Unauthorized(WireError):
    """Missing or wrong signature (or too few frames to carry one)."""

    default_code = ErrorCode.UNAUTHORIZED


class Replayed(WireError):
    """A correctly signed frame set that was already accepted within the replay window."""

    default_code = ErrorCode.REPLAYED


class TooLarge(WireError):
    """More bytes than the size limit, or more array frames than the array limit."""

    default_code = ErrorCode.TOO_LARGE


class UnsupportedProtocol(WireError):
    """The envelope's major protocol version is not ours."""

    default_code = ErrorCode.UNSUPPORTED_PROTOCOL


class MalformedMessage(WireError):
    """Signed and fresh, but the envelope, an array frame or the body breaks its schema.

    `field` is the path of the bad field (`envelope.msg_id`, `submit.params.x`) and
    `schema_error` the underlying `SchemaError`, when there is one.
    """

    default_code = ErrorCode.INVALID_REQUEST

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        field: str | None = None,
        schema_error: SchemaError | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, field=field)
        self.schema_error = schema_error

    @classmethod
    def from_schema_error(cls, error: SchemaError, request_id: str | None) -> MalformedMessage:
        return cls(str(error), request_id=request_id, field=error.path, schema_error=error)


@attrs.frozen(kw_only=True)
class Envelope:
    """A decoded, verified message: the envelope fields and the typed body (`message`).

    `topic` is the first frame on the events channel (decoded with `topic=True`), else None.
    """

    protocol: str
    type: str
    msg_id: str
    request_id: str | None
    server_epoch: str | None
    message: Message
    topic: bytes | None = None


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


_NOBLOCK: Final = int(zmq.NOBLOCK)
_SNDMORE: Final = int(zmq.SNDMORE)
_RCVMORE: Final = int(zmq.RCVMORE)


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Frame], *, block: bool = False) -> None:
    """Send `frames` as one message, as `send_multipart` would, at a third of its cost.

    Small `bytes` frames are copied into ZeroMQ, array views go zero-copy. Without `block`,
    raises `zmq.Again` when the socket cannot take the message (then nothing was sent).
    """
    flags = 0 if block else _NOBLOCK
    more = flags | _SNDMORE  # plain ints: pyzmq's flag enums cost a Python call per `|`
    send = sock.send
    last = len(frames) - 1
    for index in range(last):
        frame = frames[index]
        send(frame, more, copy=type(frame) is bytes)
    frame = frames[last]
    send(frame, flags, copy=type(frame) is bytes)


def recv_frames(sock: zmq.Socket[Any], copy_head: int, *, block: bool = False) -> list[Any]:
    """Receive one message's frames, as `recv_multipart` would, at about half its cost for a
    small message: the first `copy_head` frames as bytes (routing id, topic, signature,
    envelope: small, cheaper copied than wrapped), the rest as `zmq.Frame`s (array frames,
    which can be large, stay zero-copy). Without `block`, raises `zmq.Again` if none waits.
    """
    flags = 0 if block else _NOBLOCK
    recv = sock.recv
    more = sock.getsockopt
    frames = [recv(flags, copy=copy_head > 0)]
    while more(_RCVMORE):
        frames.append(recv(flags, copy=len(frames) < copy_head))
    return frames


def _compact_dumps() -> Callable[[Any], str]:
    """`_ENCODER.encode`, minus its per-call set-up: the C encoder it would build on every
    call, built once (no circular-reference bookkeeping: bodies are validated, at most
    MAX_JSON_DEPTH deep). The plain encoder where the C one is missing."""
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return _ENCODER.encode
    encode = make(
        None,  # markers: no circular check
        _ENCODER.default,
        json_encoder.encode_basestring_ascii,
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_dumps: Final = _compact_dumps()
_quote: Final = json_encoder.encode_basestring_ascii
#: The envelope text up to its msg_id, per message type (fields in the order of §4).
_HEADS: dict[str, str] = {}


def _envelope_head(kind: str) -> str:
    head = _HEADS.get(kind)
    if head is None:
        head = _HEADS[kind] = f'{{"protocol":{_quote(PROTOCOL_VERSION)},"type":{_quote(kind)},'
    return head


def _id_json(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _as_buffer(frame: InFrame) -> Frame:
    """The frame's bytes: itself, a copy when small, or a flat byte view (whose `len` is its
    size in bytes). Small frames are cheaper to handle as bytes than as views."""
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, zmq.Frame):
        if len(frame) <= ZERO_COPY_THRESHOLD:
            return frame.bytes
        view = frame.buffer
    else:
        view = memoryview(frame)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


#: A fresh `msg_id`: unique in this process and its forked children (see `UniqueIds`).
next_msg_id: Final = UniqueIds(renew_at_fork=True)


def _check_id(name: str, value: object) -> str | None:
    """Validate an optional envelope id (request_id, server_epoch): None or 1–128 characters."""
    if value is None:
        return None
    if type(value) is not str:
        raise SchemaError(name, value, f"expected a string or null, not {json_type_name(value)}")
    if not 1 <= len(value) <= _ID_MAX:
        raise SchemaError(name, value, f"must have 1 to {_ID_MAX} characters")
    return value


class WireCodec:
    """Signs, encodes, verifies and decodes messages with one per-server key.

    One codec per receiving socket or event loop (its replay window is not thread-safe).
    `max_message_size` bounds the bytes of all frames together, `max_arrays` the array
    frames per message, `replay_window` how many accepted signatures are remembered.
    """

    def __init__(
        self,
        key: bytes,
        *,
        max_message_size: int = 64 * 2**20,
        replay_window: int = 65536,
        max_arrays: int = 64,
    ) -> None:
        if max_message_size < 1 or max_arrays < 0:
            raise ValueError("max_message_size must be >= 1 and max_arrays >= 0")
        self.max_message_size = max_message_size
        self.max_arrays = max_arrays
        self._signer = MessageSigner(key)
        self._replay = ReplayGuard(replay_window)
        #: The last body encoded without arrays and its JSON text: messages are immutable, so
        #: a message sent again (a poller's unchanged status snapshot) is not encoded again.
        self._last_body: tuple[object, str] = (None, "")

    # -- sending --------------------------------------------------------------------------

    def encode(
        self,
        message: Message,
        *,
        request_id: str | None = None,
        server_epoch: str | None = None,
        topic: bytes | None = None,
    ) -> list[Frame]:
        """The frames of one message: `[topic?, signature, envelope, *arrays]`.

        Every call gives a fresh `msg_id`, so encoding the same message twice gives two
        distinct, individually acceptable frame sets. Numpy arrays in free-form fields become
        array frames (memoryviews above 64 KiB: send with `copy=False` and leave the arrays
        alone until sent). Raises `SchemaError` for a bad request_id/server_epoch and
        `TooLarge` above the limits.
        """
        kind = getattr(message, "TYPE", None)
        if kind is None or not isinstance(message, WireModel):
            raise TypeError(f"not a message type: {type(message).__qualname__}")
        _check_id("envelope.request_id", request_id)
        _check_id("envelope.server_epoch", server_epoch)
        if topic is not None and not isinstance(topic, bytes):
            raise TypeError("topic must be bytes")
        headers = "[]"
        arrays: list[Frame] = []
        if holds_arrays(message):
            body, array_headers, arrays = extract_arrays(message.to_wire())
            if len(arrays) > self.max_arrays:
                raise TooLarge(
                    f"{len(arrays)} arrays in one message; the limit is {self.max_arrays}"
                )
            headers = _dumps(array_headers)
            body_text = _dumps(body)
        else:
            last, body_text = self._last_body  # one read: safe if threads share the codec
            if last is not message:
                body_text = _dumps(message.to_wire())
                self._last_body = (message, body_text)
        text = "".join(
            (
                _envelope_head(kind),
                '"msg_id":"',
                next_msg_id(),
                '","request_id":',
                _id_json(request_id),
                ',"server_epoch":',
                _id_json(server_epoch),
                ',"arrays":',
                headers,
                ',"body":',
                body_text,
                "}",
            )
        )
        raw = text.encode()
        signed: list[Frame] = [raw, *arrays] if topic is None else [topic, raw, *arrays]
        size = len(raw) + 64
        if arrays or topic is not None:
            size = sum(frame_length(f) for f in signed) + 64
        if size > self.max_message_size:
            raise TooLarge(f"message of {size} bytes; the limit is {self.max_message_size}")
        signature = self._signer.sign(signed)
        if topic is None:
            return [signature, raw, *arrays]
        return [topic, signature, raw, *arrays]

    # -- receiving ------------------------------------------------------------------------

    def decode(self, frames: Sequence[InFrame], *, topic: bool = False) -> Envelope:
        """Verify and parse one received frame set (`topic=True` on the events channel).

        Raises `TooLarge`, `Unauthorized`, `Replayed` before the envelope JSON is read;
        then `UnsupportedProtocol` or `MalformedMessage` (with `request_id` when readable).
        """
        head = 1 if topic else 0
        count = len(frames)
        if count < head + 2:
            raise Unauthorized(
                f"a signed message has at least {head + 2} frames here, this one has {count}"
            )
        if count - head - 2 > self.max_arrays:
            raise TooLarge(
                f"{count - head - 2} array frames in one message; the limit is {self.max_arrays}"
            )
        buffers = [f if type(f) is bytes else _as_buffer(f) for f in frames]
        size = sum(map(len, buffers))
        if size > self.max_message_size:
            raise TooLarge(f"message of {size} bytes; the limit is {self.max_message_size}")
        signature = bytes(buffers[head])
        signed = buffers[head + 1 :] if head == 0 else [buffers[0], *buffers[2:]]
        if not self._signer.verify(signature, signed):
            raise Unauthorized("the signature does not match the frames")
        if not self._replay.check_and_remember(signature):
            raise Replayed("this message was already received (same signature)")
        data = self.load_envelope(buffers[head + 1])
        return self._parse(data, buffers[head + 2 :], buffers[0] if topic else None, topic)

    def load_envelope(self, raw: Frame) -> object:
        """Step 4 of §3: decode the envelope frame as UTF-8 JSON (NaN/Infinity refused).

        Only ever called on frames whose signature was verified; subclasses may override it
        to observe that.
        """
        try:
            return strict_json_loads(str(raw, "utf-8"))
        except (ValueError, RecursionError) as exc:
            raise MalformedMessage(
                f"envelope: not valid UTF-8 JSON: {exc}", field="envelope"
            ) from None

    def _parse(
        self, data: object, array_frames: Sequence[Frame], topic: Frame | None, on_events: bool
    ) -> Envelope:
        if type(data) is not dict:
            raise MalformedMessage(
                f"envelope: expected a JSON object, not {json_type_name(data)}", field="envelope"
            )
        raw_id = data.get("request_id")
        request_id = raw_id if type(raw_id) is str and 1 <= len(raw_id) <= _ID_MAX else None
        try:
            protocol = data.get("protocol", MISSING)
            if protocol != PROTOCOL_VERSION:
                protocol = self._check_protocol(protocol, request_id)
            cls = self._check_envelope(data, on_events)
            headers = data.get("arrays", _NO_ARRAYS)
            arrays = (
                self._read_arrays(headers, array_frames)
                if headers != _NO_ARRAYS or array_frames
                else _NO_ARRAYS
            )
            body = data["body"]
            if arrays:
                try:
                    body = restore_arrays(body, arrays)
                except SchemaError as exc:
                    raise exc.prefixed(cls.SCHEMA_NAME) from None
            message = cls.from_wire(body)
        except SchemaError as exc:
            raise MalformedMessage.from_schema_error(exc, request_id) from None
        return Envelope(
            protocol=protocol,
            type=cls.TYPE,
            msg_id=data["msg_id"],
            request_id=request_id,
            server_epoch=data["server_epoch"],
            message=message,
            topic=None if topic is None else bytes(topic),
        )

    @staticmethod
    def _check_protocol(protocol: object, request_id: str | None) -> str:
        if protocol == PROTOCOL_VERSION:
            return PROTOCOL_VERSION
        if protocol is MISSING:
            raise SchemaError("envelope.protocol", MISSING, "required field is missing")
        if type(protocol) is not str or _PROTOCOL.fullmatch(protocol) is None:
            raise SchemaError("envelope.protocol", protocol, 'must be a version "MAJOR.MINOR"')
        problem = protocol_problem(protocol)
        if problem is not None:
            raise UnsupportedProtocol(problem, request_id=request_id, field="envelope.protocol")
        return protocol

    @staticmethod
    def _check_envelope(data: Mapping[str, object], on_events: bool) -> type[Any]:
        if data.keys() != _ENVELOPE_FIELDS:  # else all there, nothing else: what we write
            if len(data) > len(_ENVELOPE_FIELDS) or not _ENVELOPE_FIELDS.issuperset(data):
                for key in data:
                    if key not in _ENVELOPE_FIELDS:
                        path = join_path("envelope", key_segment(key))
                        raise SchemaError(path, data[key], "unknown field")
            for key in _REQUIRED_ENVELOPE_FIELDS:
                if key not in data:
                    raise SchemaError(f"envelope.{key}", MISSING, "required field is missing")
        msg_id = data["msg_id"]
        if type(msg_id) is not str or _MSG_ID.fullmatch(msg_id) is None:
            raise SchemaError("envelope.msg_id", msg_id, "must be 32 lowercase hex characters")
        _check_id("envelope.request_id", data["request_id"])
        _check_id("envelope.server_epoch", data["server_epoch"])
        kind = data["type"]
        table = EVENT_MESSAGE_TYPES if on_events else CONTROL_MESSAGE_TYPES
        cls = table.get(kind) if type(kind) is str else None
        if cls is None:
            raise SchemaError("envelope.type", kind, "not a message type of this protocol")
        return cls

    def _read_arrays(self, headers: object, frames: Sequence[Frame]) -> list[npt.NDArray[Any]]:
        if type(headers) is not list:
            raise SchemaError(
                "envelope.arrays", headers, f"expected an array, not {json_type_name(headers)}"
            )
        if len(headers) != len(frames):
            raise SchemaError(
                "envelope.arrays",
                f"{len(headers)} headers",
                f"there must be one header per array frame ({len(frames)} frames)",
            )
        arrays = []
        for index, (header, frame) in enumerate(zip(headers, frames, strict=True)):
            try:
                arrays.append(read_array(header, frame))
            except SchemaError as exc:
                raise exc.prefixed(f"envelope.arrays[{index}]") from None
        return arrays
