"""The connection file: where a server listens and the key to talk to it (docs/protocol.md §9).

Like a Jupyter connection file: the server writes it (mode 0600, atomically) once its sockets
are bound; clients and workers read it. It holds the signing key, so its `repr` does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import attrs

from zmqruntime.codec import PROTOCOL_VERSION, protocol_problem
from zmqruntime.json_types import strict_json_loads
from zmqruntime.schema import (
    MinLen,
    NonEmptyStr,
    NonNegativeInt,
    Pattern,
    SchemaError,
    WireModel,
)

__all__ = ["ConnectionInfo"]

_ENDPOINT = Pattern(r"(tcp|ipc|inproc|ws|wss)://\S+")
#: A CURVE public key as Z85 text (docs/protocol.md §9).
_Z85_KEY = Pattern(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


@attrs.frozen(kw_only=True)
class ConnectionInfo(WireModel):
    """Endpoints of a server's three channels, its signing key, epoch and pid, and its CURVE
    public key when it encrypts (`curve_server_public`, left out of the file otherwise).

    `to_json()`/`from_json()` give the file's JSON (the key as lowercase hex); `from_json`
    is strict like every schema here and refuses another major protocol version.
    """

    SCHEMA_NAME: ClassVar[str] = "connection"

    control: Annotated[str, _ENDPOINT]
    events: Annotated[str, _ENDPOINT]
    progress: Annotated[str, _ENDPOINT]
    key: Annotated[bytes, MinLen(16)] = attrs.field(repr=False)
    server_epoch: NonEmptyStr
    pid: NonNegativeInt
    protocol: str = PROTOCOL_VERSION
    signature_scheme: Literal["hmac-sha256"] = "hmac-sha256"
    #: The server's CURVE public key (Z85) when its sockets use CurveZMQ; absent otherwise.
    curve_server_public: Annotated[str, _Z85_KEY] | None = None

    def _check(self) -> None:
        problem = protocol_problem(self.protocol)
        if problem is not None:
            raise SchemaError("protocol", self.protocol, problem)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ConnectionInfo:
        """Parse the connection file's JSON object strictly (SchemaError on any bad field)."""
        return cls.from_wire(data)

    def to_json(self) -> dict[str, Any]:
        """The connection file's JSON object (without `curve_server_public` when it is None,
        so a plain server's file is exactly what readers without Curve support expect)."""
        data = self.to_wire()
        if data.get("curve_server_public") is None:
            data.pop("curve_server_public", None)
        return data

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ConnectionInfo:
        """Load a connection file; SchemaError if it is not valid JSON or breaks the schema."""
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = strict_json_loads(text)
        except ValueError as exc:
            raise SchemaError("connection", text[:200], f"not valid JSON: {exc}") from None
        return cls.from_json(data)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the file atomically with mode 0600: a private temp file, then a rename.

        A reader sees either no file, the old file or the whole new one, never a partial
        write, and the key is never readable by other users, not even for an instant.
        """
        target = Path(path)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_json(), handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return target
