"""Start an execution server as a child process and wait until it answers.

`start_server_process` runs `python -m zmqruntime serve`, waits (under one deadline) until the
server printed its connection file's path — it does so only once every socket is bound and the
file is written — and then until a signed `ping` is answered. If the process dies first, the
error says how (exit code or signal) and shows the end of its stderr.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import zmq

from zmqruntime.codec import WireCodec, WireError
from zmqruntime.connection import ConnectionInfo
from zmqruntime.messages import Ping, Pong
from zmqruntime.server.worker_pool import describe_exit

__all__ = ["ServerProcess", "ServerProcessError", "start_server_process"]

_STDERR_TAIL = 4000


class ServerProcessError(RuntimeError):
    """The server process died or did not become ready in time (message says which, and how)."""


class ServerProcess:
    """A running server child process: its connection info, pid, and how to stop it.

    As a context manager it stops the server on exit (SIGTERM: a graceful shutdown; SIGKILL
    if it has not exited within `stop_timeout`) and reaps it.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        info: ConnectionInfo,
        connection_file: Path,
        stderr_path: Path,
        workdir: Path,
    ) -> None:
        self.process = process
        self.info = info
        self.connection_file = connection_file
        self.stderr_path = stderr_path
        self._workdir = workdir

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def poll(self) -> int | None:
        """The exit status if the process has exited (negative: killed by that signal)."""
        return self.process.poll()

    def terminate(self) -> None:
        """SIGTERM: the server shuts down gracefully."""
        if self.process.poll() is None:
            self.process.terminate()

    def kill(self) -> None:
        """SIGKILL: the server dies at once (its workers die with it)."""
        if self.process.poll() is None:
            self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; returns its exit status."""
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """Graceful stop, escalating to SIGKILL after `timeout` seconds; returns the status."""
        self.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()

    def stderr_tail(self, limit: int = _STDERR_TAIL) -> str:
        """The last `limit` characters the server wrote to stderr."""
        return _tail(self.stderr_path, limit)

    def close(self) -> None:
        """Stop the server if it runs, then remove the temporary files."""
        try:
            self.stop()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_line(stream: IO[bytes], process: subprocess.Popen[bytes], deadline: float) -> bytes:
    """Read the first stdout line without blocking past the deadline or a dead process."""
    fd = stream.fileno()
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # stdout closed: the process is exiting
            data += chunk
        elif process.poll() is not None:
            break
    return data.split(b"\n", 1)[0]


def _ping(info: ConnectionInfo, deadline: float) -> None:
    """A signed ping answered by a server of this epoch, before the deadline."""
    codec = WireCodec(info.key)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(info.control)
        sock.send_multipart(codec.encode(Ping(), request_id="spawn-ready"), copy=False)
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not sock.poll(remaining_ms, zmq.POLLIN):
                raise TimeoutError
            try:
                envelope = codec.decode(sock.recv_multipart(copy=False))
            except WireError:
                continue
            if envelope.request_id == "spawn-ready" and isinstance(envelope.message, Pong):
                if envelope.server_epoch != info.server_epoch:
                    raise ServerProcessError(
                        f"a different server (epoch {envelope.server_epoch}) answers at "
                        f"{info.control}"
                    )
                return
    finally:
        sock.close(linger=0)
        context.term()


def start_server_process(
    handlers: str,
    *,
    workers: int = 2,
    connection_file: str | os.PathLike[str] | None = None,
    host: str | None = None,
    port: int = 0,
    heartbeat_interval: float | None = None,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start `python -m zmqruntime serve` and return once it answers a signed ping.

    `handlers` is the `"package.module:ATTR"` of the handler mapping; without `host` the
    server binds its default, 127.0.0.1. Without
    `connection_file` the file goes into a temporary directory removed by `close()`. Raises
    `ServerProcessError` (with the exit code or signal and the stderr tail) if the process
    dies or is not ready within `timeout` seconds; the process is then killed and reaped.
    """
    workdir = Path(tempfile.mkdtemp(prefix="zmqruntime-server-"))
    path = Path(connection_file) if connection_file is not None else workdir / "server.json"
    stderr_path = workdir / "stderr.log"
    command = [
        sys.executable,
        "-m",
        "zmqruntime",
        "serve",
        "--handlers",
        handlers,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--connection-file",
        str(path),
    ]
    if host is not None:  # else the server's own default: loopback only
        command += ["--host", host]
    if heartbeat_interval is not None:
        command += ["--heartbeat-interval", str(heartbeat_interval)]
    command += list(extra_args)
    deadline = time.monotonic() + timeout
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=None if env is None else dict(env),
        )
    assert process.stdout is not None
    try:
        line = _read_line(process.stdout, process, deadline)
        if not line:
            raise ServerProcessError(_died(process, stderr_path))
        path = Path(line.decode())
        info = ConnectionInfo.read(path)
        _ping(info, deadline)
    except TimeoutError:
        if process.poll() is not None:
            reason = _died(process, stderr_path)
        else:
            reason = (
                f"the server process {process.pid} was not ready within {timeout:g} s"
                f"\n--- stderr (tail) ---\n{_tail(stderr_path)}"
            )
        _abandon(process, workdir)
        raise ServerProcessError(reason) from None
    except BaseException:
        _abandon(process, workdir)
        raise
    return ServerProcess(process, info, path, stderr_path, workdir)


def _tail(stderr_path: Path, limit: int = _STDERR_TAIL) -> str:
    try:
        data = stderr_path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _died(process: subprocess.Popen[bytes], stderr_path: Path) -> str:
    try:
        status = process.wait(5.0)
    except subprocess.TimeoutExpired:
        return f"the server process {process.pid} closed its output but did not exit"
    return (
        f"the server process {process.pid} {describe_exit(status)} before it was ready"
        f"\n--- stderr (tail) ---\n{_tail(stderr_path)}"
    )


def _abandon(process: subprocess.Popen[bytes], workdir: Path) -> None:
    """Kill and reap a server that never became ready, and remove its files."""
    with contextlib.suppress(Exception):
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10.0)
    if process.stdout is not None:
        process.stdout.close()
    shutil.rmtree(workdir, ignore_errors=True)
