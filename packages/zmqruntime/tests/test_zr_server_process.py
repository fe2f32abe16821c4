"""Shutdown (graceful and forced), the server as a process (CLI, signals, spawn), a server
killed outright and started again on the same ports, and no orphan worker processes after any
of it (checked with psutil)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from zmqruntime.connection import ConnectionInfo
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    ErrorCode,
    ErrorReply,
    Ping,
    Pong,
    ServerStatus,
    Shutdown,
    ShutdownReply,
    StatusRequest,
    Submit,
)
from zmqruntime.server import (
    ExecutionServer,
    ServerProcessError,
    ServerStartError,
    start_server_process,
)
from zmqruntime.testing import SAMPLE_HANDLERS, RawPeer, free_port_block

S = ExecutionStatus


async def worker_processes(peer: RawPeer) -> list[psutil.Process]:
    status = await peer.request(StatusRequest(execution_id=None))
    assert isinstance(status, ServerStatus)
    assert status.workers, "expected at least one worker process"
    return [psutil.Process(w.pid) for w in status.workers]


def assert_all_gone(processes: list[psutil.Process], timeout: float = 10.0) -> None:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    assert not alive, f"orphan worker processes: {alive}"


def test_graceful_shutdown_cancels_the_queue_and_lets_running_work_finish() -> None:
    async def scenario() -> list[psutil.Process]:
        server = ExecutionServer(SAMPLE_HANDLERS, workers=1, heartbeat_interval=0.1)
        info = await server.start()
        serving = asyncio.create_task(server.serve_forever())  # returns once shut down
        async with RawPeer(info) as peer:
            await peer.ready()
            running = await peer.submit("sleep", seconds=0.5)
            queued = await peer.submit("echo", x=1)
            await peer.wait_progress(running)
            workers = await worker_processes(peer)
            reply = await peer.request(Shutdown(force=False))
            assert reply == ShutdownReply(force=False, cancelled=(queued,))
            refused = await peer.request(Submit(handler="echo", params={}))
            assert isinstance(refused, ErrorReply)
            assert refused.code is ErrorCode.SHUTTING_DOWN
            assert isinstance(await peer.request(Ping()), Pong)  # still answering meanwhile
            assert (await peer.wait_status(queued, S.CANCELLED)).error is not None
            done = await peer.wait_final(running)
            assert done.status is S.COMPLETE
            assert done.result == {"slept": 0.5}
            await asyncio.wait_for(serving, 20)
        assert server.closed
        return workers

    assert_all_gone(asyncio.run(scenario()))


def test_forced_shutdown_cancels_everything_and_ends_the_workers() -> None:
    async def scenario() -> list[psutil.Process]:
        server = ExecutionServer(SAMPLE_HANDLERS, workers=2, heartbeat_interval=0.1)
        info = await server.start()
        async with RawPeer(info) as peer:
            await peer.ready()
            ids = [await peer.submit("uncooperative", seconds=60) for _ in range(2)]
            queued = await peer.submit("echo")
            for eid in ids:
                await peer.wait_progress(eid)
            workers = await worker_processes(peer)
            reply = await peer.request(Shutdown(force=True))
            assert isinstance(reply, ShutdownReply)
            assert reply.force
            assert sorted(reply.cancelled) == sorted([queued, *ids])
            for eid in [*ids, queued]:
                record = await peer.wait_status(eid, S.CANCELLED)
                assert record.error is not None
                assert record.error.code is ErrorCode.CANCELLED
            async with asyncio.timeout(20):
                await server.serve_forever()
        assert server.closed
        return workers

    assert_all_gone(asyncio.run(scenario()))


def test_in_process_start_errors_are_clear() -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = ExecutionServer(SAMPLE_HANDLERS, workers=1, control_port=port)
            with pytest.raises(ServerStartError, match=f"control socket.*:{port}"):
                await server.start()

    asyncio.run(scenario())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqruntime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_refuses_bad_arguments_with_clear_errors() -> None:
    missing = run_cli("serve", "--handlers", "no_such_package.handlers:HANDLERS")
    assert missing.returncode == 2
    assert "cannot import module 'no_such_package.handlers'" in missing.stderr
    not_mapping = run_cli("serve", "--handlers", "zmqruntime.testing.handlers:echo")
    assert not_mapping.returncode == 2
    assert "expected a mapping" in not_mapping.stderr
    bad_port = run_cli("serve", "--handlers", SAMPLE_HANDLERS, "--port", "70000")
    assert bad_port.returncode == 2
    assert "--port" in bad_port.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = run_cli("serve", "--handlers", SAMPLE_HANDLERS, "--port", str(port))
    assert in_use.returncode == 1
    assert f"cannot bind the control socket to tcp://127.0.0.1:{port}" in in_use.stderr


def test_spawn_reports_how_a_server_died_before_it_was_ready() -> None:
    with pytest.raises(ServerProcessError) as failure:
        start_server_process("no_such_package.handlers:HANDLERS", timeout=30)
    message = str(failure.value)
    assert "exited with code 2 before it was ready" in message
    assert "no_such_package" in message  # the stderr tail


def test_sigterm_is_a_graceful_shutdown_that_leaves_no_orphans(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    with start_server_process(
        SAMPLE_HANDLERS, workers=2, connection_file=path, heartbeat_interval=0.1
    ) as server:
        assert path.stat().st_mode & 0o777 == 0o600
        assert ConnectionInfo.read(path) == server.info

        async def scenario() -> tuple[list[psutil.Process], str]:
            async with RawPeer(server.info) as peer:
                await peer.ready()
                eid = await peer.submit("sleep", seconds=0.3)
                await peer.wait_progress(eid)
                workers = await worker_processes(peer)
                server.terminate()
                record = await peer.wait_final(eid)
                return workers, record.status

        workers, status = asyncio.run(scenario())
        assert status is S.COMPLETE
        assert server.wait(20) == 0
    assert_all_gone(workers)
    assert not path.exists()  # removed on a clean exit


def test_a_killed_server_takes_its_workers_along_and_a_restart_has_a_new_epoch(
    tmp_path: Path,
) -> None:
    port = free_port_block(3)
    path = tmp_path / "server.json"
    options = {"workers": 1, "port": port, "connection_file": path, "heartbeat_interval": 0.1}
    first = start_server_process(SAMPLE_HANDLERS, **options)  # type: ignore[arg-type]
    try:

        async def busy_workers() -> list[psutil.Process]:
            async with RawPeer(first.info) as peer:
                await peer.ready()
                eid = await peer.submit("uncooperative", seconds=60)
                await peer.wait_progress(eid)
                return await worker_processes(peer)

        workers = asyncio.run(busy_workers())
        first.kill()
        assert first.wait(10) == -9
        assert_all_gone(workers)  # the kernel ends them with the server (no orphans)
    finally:
        first.close()
    assert first.info.control == f"tcp://127.0.0.1:{port}"
    with start_server_process(SAMPLE_HANDLERS, **options) as second:  # type: ignore[arg-type]
        assert second.info.control == first.info.control
        assert second.info.server_epoch != first.info.server_epoch

        async def ping() -> str | None:
            async with RawPeer(second.info) as peer:
                envelope = await peer.request_envelope(Ping())
                assert isinstance(envelope.message, Pong)
                return envelope.server_epoch

        assert asyncio.run(ping()) == second.info.server_epoch
