"""The connection file: atomic 0600 write, strict read, the key never in a repr."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from zmqruntime.codec import PROTOCOL_VERSION
from zmqruntime.connection import ConnectionInfo
from zmqruntime.schema import SchemaError
from zmqruntime.signing import new_key


def make_info(**changes: object) -> ConnectionInfo:
    fields: dict[str, object] = {
        "control": "tcp://127.0.0.1:40001",
        "events": "tcp://127.0.0.1:40002",
        "progress": "tcp://127.0.0.1:40003",
        "key": new_key(),
        "server_epoch": "a1b2c3",
        "pid": 4242,
    }
    return ConnectionInfo(**{**fields, **changes})  # type: ignore[arg-type]


def test_write_then_read_round_trips_with_mode_0600(tmp_path: Path) -> None:
    info = make_info()
    path = info.write(tmp_path / "server.json")
    assert ConnectionInfo.read(path) == info
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["server.json"]  # no temp file left behind


def test_the_file_holds_the_documented_json(tmp_path: Path) -> None:
    info = make_info()
    data = json.loads(info.write(tmp_path / "c.json").read_text())
    assert data == {
        "protocol": PROTOCOL_VERSION,
        "signature_scheme": "hmac-sha256",
        "key": info.key.hex(),
        "control": "tcp://127.0.0.1:40001",
        "events": "tcp://127.0.0.1:40002",
        "progress": "tcp://127.0.0.1:40003",
        "server_epoch": "a1b2c3",
        "pid": 4242,
    }


def test_rewriting_replaces_the_file_atomically_and_keeps_it_private(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    info = make_info()
    info.write(path)
    assert ConnectionInfo.read(path) == info
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        make_info().write(tmp_path / "missing-dir" / "c.json")
    assert os.listdir(tmp_path) == []


def test_the_key_is_not_in_the_repr() -> None:
    info = make_info()
    assert info.key.hex() not in repr(info)
    assert "key" not in repr(info)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key": "ABCD"}, "connection.key"),
        ({"key": "abc"}, "connection.key"),
        ({"key": "00" * 4}, "connection.key"),
        ({"protocol": "2.0"}, "connection.protocol"),
        ({"protocol": "one"}, "connection.protocol"),
        ({"signature_scheme": "md5"}, "connection.signature_scheme"),
        ({"control": "127.0.0.1:1"}, "connection.control"),
        ({"pid": "4242"}, "connection.pid"),
        ({"pid": -1}, "connection.pid"),
        ({"extra": 1}, "connection.extra"),
    ],
)
def test_from_json_is_strict(change: dict[str, object], field: str) -> None:
    data = {**make_info().to_json(), **change}
    with pytest.raises(SchemaError) as caught:
        ConnectionInfo.from_json(data)
    assert caught.value.path == field


def test_read_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"pid": NaN}')
    with pytest.raises(SchemaError, match="not valid JSON"):
        ConnectionInfo.read(path)
