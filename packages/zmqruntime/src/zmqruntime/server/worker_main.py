"""The main function of the server's own worker processes (docs/protocol.md §7).

A worker connects a DEALER to the server's jobs socket and says `worker_ready`; from then on
it runs each `run_job` it is handed (one at a time: the server sends the next only when it has
learnt the end of the last, and counts the job started when it sends it). Its `progress`
reports and then the attempt's `job_ended` go out on one PUSH socket to the progress channel,
so the server always learns an attempt's end after its reports. Nothing
but plain values reaches the process: its `WorkerConfig` and signed JSON messages.
"""

from __future__ import annotations

import logging
import os
from typing import Any, TypedDict

import zmq

from zmqruntime.codec import WireCodec, WireError, recv_frames
from zmqruntime.curve import CurveKeyPair, apply_curve_client
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import ErrorCode, ErrorInfo, JobEnded, RunJob, WorkerReady
from zmqruntime.server.worker_runtime import (
    JobOutcome,
    WorkerChannels,
    WorkerCurve,
    run_attempt,
    within_result_limit,
    worker_initializer,
)

__all__ = ["WorkerConfig", "job_ended", "serve_jobs"]

log = logging.getLogger(__name__)


class WorkerConfig(TypedDict):
    """What one worker process is started with; plain values only."""

    identity: str
    jobs_endpoint: str
    progress_endpoint: str
    events_endpoint: str
    key: str
    curve: WorkerCurve | None
    max_message_size: int
    server_pid: int


def job_ended(job: RunJob, outcome: JobOutcome, pid: int) -> JobEnded:
    """The `job_ended` report of an attempt's outcome."""
    error = outcome["error"]
    try:
        return JobEnded(
            execution_id=job.execution_id,
            attempt=job.attempt,
            pid=pid,
            status=ExecutionStatus(outcome["kind"]),
            result=outcome["result"],
            error=None if error is None else ErrorInfo.from_wire(error),
        )
    except ValueError as exc:  # SchemaError included: never leave the server without an end
        return JobEnded(
            execution_id=job.execution_id,
            attempt=job.attempt,
            pid=pid,
            status=ExecutionStatus.FAILED,
            error=ErrorInfo(
                code=ErrorCode.HANDLER_ERROR, message=f"the outcome cannot be reported: {exc}"
            ),
        )


def serve_jobs(config: WorkerConfig) -> None:
    """Run jobs from the server until this process is ended (it never returns on its own)."""
    worker_initializer(config["server_pid"])
    key = bytes.fromhex(config["key"])
    # Jobs carry params and an artifact, each up to the message limit: room for both.
    limit = 3 * config["max_message_size"]
    context: zmq.Context[Any] = zmq.Context()
    # Reports go to the server's progress socket, which drops any message above its limit.
    channels = WorkerChannels(
        config["progress_endpoint"],
        config["events_endpoint"],
        key,
        config["curve"],
        context=context,
        max_message_size=config["max_message_size"],
    )
    codec = WireCodec(key, max_message_size=limit)
    jobs: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    jobs.setsockopt(zmq.LINGER, 0)
    jobs.setsockopt(zmq.ROUTING_ID, config["identity"].encode())
    curve = config["curve"]
    if curve is not None:
        pair = CurveKeyPair(public=curve["public"].encode(), secret=curve["secret"].encode())
        apply_curve_client(jobs, curve["server_public"].encode(), pair)
    jobs.connect(config["jobs_endpoint"])
    pid = os.getpid()
    jobs.send_multipart(codec.encode(WorkerReady(pid=pid)))
    while True:
        frames = recv_frames(jobs, 2, block=True)  # signature and envelope copied
        try:
            job = codec.decode(frames).message
        except WireError as exc:
            log.warning("ignored an invalid message on the jobs channel: %s", exc)
            continue
        if not isinstance(job, RunJob):
            log.warning("ignored a %r message on the jobs channel", type(job).TYPE)
            continue
        outcome = run_attempt(
            channels,
            execution_id=job.execution_id,
            attempt=job.attempt,
            handler=job.handler,
            handler_ref=job.handler_ref,
            params=job.params,
            artifact=job.artifact,
            compile_only=job.compile_only,
            announce=False,  # the server counted the start when it sent the job
        )
        channels.send_end(job_ended(job, within_result_limit(outcome, job.result_limit), pid))
