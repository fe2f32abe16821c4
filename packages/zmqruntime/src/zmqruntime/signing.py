"""HMAC-SHA256 signatures over frames, and the replay window (docs/protocol.md §3).

The signature of frames f_1 … f_n is `hex(HMAC-SHA256(key, M))` with
`M = len(f_1) || f_1 || … || len(f_n) || f_n`, each length an 8-byte big-endian unsigned
integer, so frame boundaries are signed too.
"""

from __future__ import annotations

import collections
import hmac
import secrets
import struct
from collections.abc import Sequence
from hashlib import sha256

__all__ = ["SIGNATURE_LENGTH", "MessageSigner", "ReplayGuard", "frame_length", "new_key"]

#: A signature frame is this many bytes: lowercase hex of a SHA-256 HMAC.
SIGNATURE_LENGTH = 64

_LENGTH = struct.Struct(">Q")
_BLOCK = 64  # SHA-256 block size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))

Buffer = bytes | bytearray | memoryview


def new_key() -> bytes:
    """A fresh per-server signing key: 32 random bytes."""
    return secrets.token_bytes(32)


def frame_length(frame: Buffer) -> int:
    """Length in bytes of a frame (a memoryview's `nbytes`, not its item count)."""
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


class MessageSigner:
    """Signs and verifies frame sequences with one key."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or not key:
            raise ValueError("the signing key must be non-empty bytes")
        # HMAC as RFC 2104 defines it, with the keyed inner and outer hash states computed
        # once: H((K ^ opad) || H((K ^ ipad) || M)). Cheaper per message than hmac.HMAC.copy().
        if len(key) > _BLOCK:
            key = sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = sha256(block.translate(_IPAD))
        self._outer = sha256(block.translate(_OPAD))

    def sign(self, frames: Sequence[Buffer]) -> bytes:
        """The 64-byte lowercase hex signature of these frames, in order.

        Each frame is fed to the HMAC after its length prefix, in place: frames are never
        joined or copied, however large.
        """
        mac = self._inner.copy()
        update = mac.update
        pack = _LENGTH.pack
        for frame in frames:
            update(pack(len(frame) if type(frame) is bytes else frame_length(frame)))
            update(frame)
        outer = self._outer.copy()
        outer.update(mac.digest())
        return outer.hexdigest().encode()

    def verify(self, signature: Buffer, frames: Sequence[Buffer]) -> bool:
        """Whether `signature` is the signature of `frames`, compared in constant time."""
        return hmac.compare_digest(signature, self.sign(frames))

    def __repr__(self) -> str:
        return "MessageSigner(key=<hidden>)"


class ReplayGuard:
    """Remembers the last `capacity` accepted signatures; refuses one seen again.

    O(1) per check, memory bounded by `capacity` (the oldest signatures are forgotten first).
    Not thread-safe: use one per receiving socket or event loop.
    """

    __slots__ = ("_order", "_seen", "capacity")

    def __init__(self, capacity: int = 65536) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._order: collections.deque[bytes] = collections.deque()

    def check_and_remember(self, signature: bytes) -> bool:
        """True (and remembered) the first time a signature is seen in the window, else False."""
        if signature in self._seen:
            return False
        if len(self._order) >= self.capacity:
            self._seen.discard(self._order.popleft())
        self._seen.add(signature)
        self._order.append(signature)
        return True

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, signature: object) -> bool:
        return signature in self._seen
