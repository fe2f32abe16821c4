"""Optional CurveZMQ encryption and authentication for servers reached across a network.

With a `CurveConfig`, every server socket is a CURVE server: all traffic on the three channels
is encrypted, and a ZAP authenticator on the server's event loop admits only the client public
keys of its allow-list (plus the key the server gives its own workers). HMAC signing stays on
underneath (defence in depth). Keys are Z85 text (40 characters) as made by
`zmq.curve_keypair()`; key files are ZeroMQ certificates as written by
`zmq.auth.create_certificates(directory, name)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

__all__ = [
    "CurveConfig",
    "CurveKeyPair",
    "apply_curve_client",
    "apply_curve_server",
    "check_z85_key",
    "start_authenticator",
]


def check_z85_key(key: bytes, what: str) -> bytes:
    """`key` if it is a Z85 CURVE key (40 characters, 32 bytes decoded); ValueError naming
    `what` otherwise."""
    if not isinstance(key, bytes) or len(key) != 40:
        raise ValueError(f"{what}: expected a 40-character Z85 CURVE key, got {key!r}")
    try:
        z85.decode(key)
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{what}: not valid Z85 text: {key!r}") from None
    return key


def _public(instance: Any, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    check_z85_key(value, attribute.name)


def _secret(instance: Any, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    try:
        check_z85_key(value, attribute.name)
    except ValueError:
        raise ValueError(f"{attribute.name}: expected a 40-character Z85 CURVE key") from None


@attrs.frozen(kw_only=True)
class CurveKeyPair:
    """A CURVE key pair, both halves Z85 bytes; the secret is left out of `repr`."""

    public: bytes = attrs.field(validator=_public)
    secret: bytes = attrs.field(validator=_secret, repr=False)

    @classmethod
    def new(cls) -> CurveKeyPair:
        """A fresh key pair from `zmq.curve_keypair()`."""
        public, secret = zmq.curve_keypair()
        return cls(public=public, secret=secret)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CurveKeyPair:
        """Read a secret certificate (`NAME.key_secret`); ValueError if it has no secret key."""
        public, secret = zmq.auth.load_certificate(os.fspath(path))
        if secret is None:
            raise ValueError(f"{path}: holds no secret key (use the .key_secret file)")
        return cls(public=public, secret=secret)


def _key_set(keys: Iterable[bytes] | None) -> frozenset[bytes] | None:
    return None if keys is None else frozenset(keys)


def _authorized(instance: Any, attribute: Any, value: frozenset[bytes] | None) -> None:
    if value is None:
        return
    for key in value:
        check_z85_key(key, "authorized_clients[]")


@attrs.frozen(kw_only=True)
class CurveConfig:
    """A server's CURVE settings: its key pair and the client public keys it admits.

    `authorized_clients=None` admits any client that knows the server's public key (the
    encryption still holds; prefer an allow-list). The server's own workers are admitted
    either way, with a key pair the server makes at start.
    """

    server: CurveKeyPair
    authorized_clients: frozenset[bytes] | None = attrs.field(
        converter=_key_set, validator=_authorized
    )

    @classmethod
    def from_files(
        cls, keys: str | os.PathLike[str], authorized: str | os.PathLike[str] | None
    ) -> CurveConfig:
        """The server key pair from a secret certificate; the allow-list from a directory of
        public certificates (`*.key`, as `zmq.auth.load_certificates` reads them), or None."""
        server = CurveKeyPair.load(keys)
        if authorized is None:
            return cls(server=server, authorized_clients=None)
        directory = Path(authorized)
        if not directory.is_dir():
            raise ValueError(f"{authorized}: not a directory of public certificates")
        return cls(
            server=server, authorized_clients=frozenset(zmq.auth.load_certificates(directory))
        )


class _AllowList:
    """ZAP credentials provider: admits the configured keys plus any added later."""

    def __init__(self, keys: Iterable[bytes] | None) -> None:
        self.any = keys is None
        self.keys: set[bytes] = set(keys or ())
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if self.any or key in self.keys:
            return True
        self.denied += 1
        return False


class CurveAuthenticator:
    """The server's ZAP handler: a task on its event loop, stopped before the context ends."""

    def __init__(
        self, context: zmq.Context[Any], config: CurveConfig, extra: Iterable[bytes]
    ) -> None:
        self.allow = _AllowList(config.authorized_clients)
        self.allow.keys.update(extra)
        self._auth = AsyncioAuthenticator(context)

    def start(self) -> None:
        """Begin answering ZAP requests (before any socket is bound)."""
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self.allow)

    @property
    def denied(self) -> int:
        """Handshakes refused so far because the client key is not on the allow-list."""
        return self.allow.denied

    def stop(self) -> None:
        self._auth.stop()


def start_authenticator(
    context: zmq.Context[Any], config: CurveConfig, extra: Iterable[bytes]
) -> CurveAuthenticator:
    """Start a ZAP authenticator on `context` (call from the running event loop)."""
    authenticator = CurveAuthenticator(context, config, extra)
    authenticator.start()
    return authenticator


def apply_curve_server(sock: zmq.Socket[Any], keys: CurveKeyPair) -> None:
    """Make `sock` a CURVE server with this key pair (before bind)."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def apply_curve_client(sock: zmq.Socket[Any], server_public: bytes, keys: CurveKeyPair) -> None:
    """Make `sock` a CURVE client of the server with that public key (before connect)."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
