"""CurveZMQ on loopback: authorised clients are served and see events, workers (admitted with
the server's own key pair) report progress, unauthorised or plain peers get nothing, and the
connection file carries the server's public key strictly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import zmq
import zmq.auth

from zmqruntime.__main__ import main
from zmqruntime.client import ExecutionClient, ServerUnavailable
from zmqruntime.connection import ConnectionInfo
from zmqruntime.curve import CurveConfig, CurveKeyPair
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import ExecutionEvent, Ping
from zmqruntime.progress import ProgressUpdate
from zmqruntime.schema import SchemaError
from zmqruntime.server.server import ExecutionServer
from zmqruntime.testing import SAMPLE_HANDLERS, RawPeer

SERVER_KEYS = CurveKeyPair.new()
CLIENT_KEYS = CurveKeyPair.new()


@asynccontextmanager
async def curve_server(workers: int = 1) -> AsyncIterator[ExecutionServer]:
    config = CurveConfig(server=SERVER_KEYS, authorized_clients={CLIENT_KEYS.public})
    server = ExecutionServer(SAMPLE_HANDLERS, workers=workers, heartbeat_interval=0.1, curve=config)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown(force=True)


def test_an_authorised_client_is_served_and_sees_worker_progress() -> None:
    async def scenario() -> None:
        async with curve_server() as server:
            info = server.connection_info
            assert info.curve_server_public == SERVER_KEYS.public.decode()
            async with ExecutionClient(info, curve_keypair=CLIENT_KEYS) as client:
                await client.ping(timeout=5.0)
                progress: list[ProgressUpdate] = []
                live, finished = asyncio.Event(), asyncio.Event()

                async def collect() -> None:
                    async for event in client.events():
                        live.set()  # heartbeats arrive: the SUB socket got through CURVE
                        if isinstance(event, ProgressUpdate):
                            progress.append(event)
                        elif isinstance(event, ExecutionEvent) and event.record.status.is_terminal:
                            finished.set()

                collector = asyncio.create_task(collect())
                await asyncio.wait_for(live.wait(), 10.0)
                reply = await client.submit("report", {"n": 5})
                await asyncio.wait_for(finished.wait(), 30.0)
                outcome = await client.wait(reply.execution_id, timeout=30.0)
                assert outcome.status is ExecutionStatus.COMPLETE, outcome
                status = await client.status(reply.execution_id)
                assert status.execution.result == {"reported": 5}
                # Progress went worker → server (a CURVE client of PULL) → this client (SUB).
                assert [p.completed for p in progress] == [1, 2, 3, 4, 5]
                collector.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await collector

    asyncio.run(scenario())


def test_an_unauthorised_or_plain_peer_gets_no_service_and_breaks_nothing() -> None:
    async def scenario() -> None:
        async with curve_server() as server:
            info = server.connection_info
            stranger = CurveKeyPair.new()
            async with ExecutionClient(
                info, curve_keypair=(stranger.public, stranger.secret), connect_timeout=0.5
            ) as intruder:
                with pytest.raises(ServerUnavailable):
                    await intruder.ping(timeout=1.0)
            # A plain (non-CURVE) DEALER knowing the HMAC key gets no handshake either.
            plain = attrs.evolve(info, curve_server_public=None)
            async with RawPeer(plain) as raw:
                with pytest.raises(TimeoutError):
                    await raw.request(Ping(), timeout=1.0)
            assert server.curve_refusals >= 1
            async with ExecutionClient(info, curve_keypair=CLIENT_KEYS) as client:
                await client.ping(timeout=5.0)
                reply = await client.submit("echo", {"x": 1})
                outcome = await client.wait(reply.execution_id, timeout=30.0)
                assert outcome.status is ExecutionStatus.COMPLETE

    asyncio.run(scenario())


def test_a_curve_keypair_for_a_plain_server_is_refused() -> None:
    info = ConnectionInfo(
        control="tcp://127.0.0.1:1",
        events="tcp://127.0.0.1:2",
        progress="tcp://127.0.0.1:3",
        key=b"k" * 16,
        server_epoch="e",
        pid=1,
    )
    with pytest.raises(ValueError, match="does not use CurveZMQ"):
        ExecutionClient(info, curve_keypair=CLIENT_KEYS)


def test_the_connection_file_carries_the_public_key_strictly(tmp_path: Path) -> None:
    info = ConnectionInfo(
        control="tcp://127.0.0.1:1",
        events="tcp://127.0.0.1:2",
        progress="tcp://127.0.0.1:3",
        key=b"k" * 16,
        server_epoch="e",
        pid=1,
        curve_server_public=SERVER_KEYS.public.decode(),
    )
    assert ConnectionInfo.read(info.write(tmp_path / "c.json")) == info
    plain = attrs.evolve(info, curve_server_public=None)
    assert "curve_server_public" not in plain.to_json()
    assert ConnectionInfo.from_json(plain.to_json()) == plain
    with pytest.raises(SchemaError) as caught:
        ConnectionInfo.from_json({**info.to_json(), "curve_server_public": "short"})
    assert caught.value.path == "connection.curve_server_public"


def test_keys_and_allow_list_load_from_certificate_files(tmp_path: Path) -> None:
    zmq.auth.create_certificates(tmp_path, "server")
    allowed = tmp_path / "clients"
    allowed.mkdir()
    client_public, _ = zmq.auth.create_certificates(allowed, "alice")
    config = CurveConfig.from_files(tmp_path / "server.key_secret", allowed)
    assert config.authorized_clients == frozenset({zmq.auth.load_certificate(client_public)[0]})
    with pytest.raises(ValueError, match="no secret key"):
        CurveKeyPair.load(tmp_path / "server.key")
    with pytest.raises(ValueError, match="public"):
        CurveKeyPair(public=b"too short", secret=SERVER_KEYS.secret)


def test_the_cli_wants_both_curve_options_and_readable_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = Path(zmq.auth.create_certificates(tmp_path, "server")[1])
    base = ["serve", "--handlers", SAMPLE_HANDLERS]
    assert main([*base, "--curve-keys", str(secret)]) == 2
    assert "go together" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main([*base, "--curve-keys", str(secret), "--curve-authorized", str(missing)]) == 2
    assert "not a directory" in capsys.readouterr().err
