"""Command line: `python -m zmqruntime serve --handlers package.module:ATTR [options]`.

Starts an execution server, writes its connection file (endpoints + key, mode 0600) once every
socket is bound, prints the file's path on stdout, and runs until SIGTERM or SIGINT (a graceful
shutdown; a second signal forces it) or a `shutdown` request. Exit status: 0 after a shutdown,
2 for bad arguments (including handlers that cannot be loaded), 1 when the server cannot start
(a port in use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from zmqruntime.connection import ConnectionInfo
from zmqruntime.curve import CurveConfig
from zmqruntime.server.handlers import HandlerRegistry, HandlerSpecError
from zmqruntime.server.server import ExecutionServer, ServerStartError
from zmqruntime.signing import new_key

__all__ = ["default_connection_file", "load_or_create_key", "main"]

log = logging.getLogger("zmqruntime.serve")

_MAX_BASE_PORT = 65535 - 2


def default_connection_file() -> Path:
    """`$XDG_RUNTIME_DIR/zmqruntime/server-<pid>.json`, else a private dir under the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        base = Path(runtime) / "zmqruntime"
    else:
        base = Path(tempfile.gettempdir()) / f"zmqruntime-{os.getuid()}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base / f"server-{os.getpid()}.json"


def load_or_create_key(path: Path) -> bytes:
    """The hex signing key stored at `path`; a fresh one is written there (0600) if absent.

    Reusing the key lets a server restarted on the same ports be talked to by clients and
    workers that still hold the old connection file; they tell it apart by its new epoch.
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        key = new_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key.hex() + "\n")
        return key
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError("expected the key as hex digits") from None
    if len(key) < 16:
        raise ValueError(f"the key has {len(key)} bytes; at least 16 are needed")
    return key


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= _MAX_BASE_PORT:
        raise argparse.ArgumentTypeError(
            f"must be 0 (random ports) or 1-{_MAX_BASE_PORT} (it uses P, P+1, P+2), got {text!r}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zmqruntime")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run an execution server")
    serve.add_argument(
        "--handlers",
        required=True,
        metavar="MODULE:ATTR",
        help="a mapping of handler name to function, e.g. mypkg.handlers:HANDLERS",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_port,
        default=0,
        help="control port P; events use P+1 and progress P+2 (default 0: random ports)",
    )
    serve.add_argument(
        "--workers", type=_positive_int, default=None, help="worker processes (default: cpus)"
    )
    serve.add_argument(
        "--connection-file", type=Path, default=None, help="where to write the connection file"
    )
    serve.add_argument(
        "--heartbeat-interval", type=_positive_float, default=1.0, help="seconds (default 1)"
    )
    serve.add_argument(
        "--artifact-ttl", type=_positive_float, default=1800.0, help="seconds (default 1800)"
    )
    serve.add_argument(
        "--max-message-size",
        type=_positive_int,
        default=64 * 2**20,
        help="bytes a message may have on any channel (default 64 MiB)",
    )
    serve.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="signing key (hex) to reuse; created (mode 0600) if missing, so a restarted "
        "server on the same ports keeps its clients' key",
    )
    serve.add_argument(
        "--journal",
        type=Path,
        default=None,
        help="SQLite journal of execution records: after a restart, executions of the "
        "previous run answer `failed` (server_restarted) or keep their results",
    )
    serve.add_argument(
        "--curve-keys",
        type=Path,
        default=None,
        metavar="SECRET_CERT",
        help="encrypt and authenticate with CurveZMQ using this server certificate "
        "(NAME.key_secret from zmq.auth.create_certificates); needs --curve-authorized",
    )
    serve.add_argument(
        "--curve-authorized",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of the public certificates (*.key) of the clients to admit",
    )
    serve.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run handlers on this Dask cluster (needs the `dask` extra), e.g. tcp://host:8786",
    )
    serve.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level (default WARNING)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> int:
    port = args.port
    key = None
    if args.key_file is not None:
        try:
            key = load_or_create_key(args.key_file)
        except (OSError, ValueError) as exc:
            print(f"zmqruntime serve: error: --key-file {args.key_file}: {exc}", file=sys.stderr)
            return 2
    curve = None
    if args.curve_keys is not None or args.curve_authorized is not None:
        if args.curve_keys is None or args.curve_authorized is None:
            print(
                "zmqruntime serve: error: --curve-keys and --curve-authorized go together",
                file=sys.stderr,
            )
            return 2
        try:
            curve = CurveConfig.from_files(args.curve_keys, args.curve_authorized)
        except (OSError, ValueError) as exc:
            print(
                f"zmqruntime serve: error: --curve-keys/--curve-authorized: {exc}", file=sys.stderr
            )
            return 2
    executor_factory = None
    if args.dask_scheduler is not None:
        try:
            from zmqruntime.server.dask_executor import dask_executor_factory
        except ImportError as exc:
            print(
                f"zmqruntime serve: error: --dask-scheduler needs `distributed`: {exc}",
                file=sys.stderr,
            )
            return 2
        executor_factory = dask_executor_factory(args.dask_scheduler)
    server = ExecutionServer(
        args.handlers,
        host=args.host,
        control_port=port,
        events_port=port + 1 if port else 0,
        progress_port=port + 2 if port else 0,
        workers=args.workers,
        heartbeat_interval=args.heartbeat_interval,
        artifact_ttl=args.artifact_ttl,
        max_message_size=args.max_message_size,
        key=key,
        journal_path=args.journal,
        curve=curve,
        executor_factory=executor_factory,
    )
    try:
        info = await server.start()
    except ServerStartError as exc:
        print(f"zmqruntime serve: error: {exc}", file=sys.stderr)
        return 1
    path: Path = args.connection_file or default_connection_file()
    try:
        info.write(path)
    except OSError as exc:
        print(f"zmqruntime serve: error: cannot write {path}: {exc}", file=sys.stderr)
        await server.shutdown(force=True)
        return 1
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        log.warning("signal received: %s shutdown", "forced" if signals_seen > 1 else "graceful")
        server.request_shutdown(force=signals_seen > 1)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    print(path, flush=True)
    try:
        await server.serve_forever()
    finally:
        _remove_if_ours(path, info)
    return 0


def _remove_if_ours(path: Path, info: ConnectionInfo) -> None:
    """Delete the connection file unless another server has replaced it meanwhile."""
    with contextlib.suppress(Exception):
        if ConnectionInfo.read(path).server_epoch == info.server_epoch:
            path.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m zmqruntime` and the `zmqruntime` script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        HandlerRegistry(args.handlers)
    except HandlerSpecError as exc:
        parser.exit(2, f"zmqruntime serve: error: --handlers: {exc}\n")
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
