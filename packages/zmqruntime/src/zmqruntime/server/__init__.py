"""The execution server: sockets and loops (`ExecutionServer`), what handlers see
(`JobContext`), and starting a server as a separate process (`start_server_process`)."""

from zmqruntime.server.handlers import HandlerRegistry, HandlerSpecError
from zmqruntime.server.job_context import ExecutionCancelled, JobContext
from zmqruntime.server.server import ExecutionServer, ServerStartError
from zmqruntime.server.spawn import ServerProcess, ServerProcessError, start_server_process

__all__ = [
    "ExecutionCancelled",
    "ExecutionServer",
    "HandlerRegistry",
    "HandlerSpecError",
    "JobContext",
    "ServerProcess",
    "ServerProcessError",
    "ServerStartError",
    "start_server_process",
]
