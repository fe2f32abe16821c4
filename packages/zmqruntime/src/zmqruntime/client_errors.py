"""What a client request can fail with (re-exported by `zmqruntime.client`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ClientClosed", "ServerError", "ServerUnavailable"]


class ServerError(Exception):
    """The server answered a request with an `error` reply (docs/protocol.md §8)."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: Mapping[str, Any] = dict(details or {})


class ServerUnavailable(ConnectionError):
    """No server answered: not reachable, connection lost, or no reply before the deadline."""


class ClientClosed(RuntimeError):
    """The client was closed while a request was in flight, or used after `close()`."""
