"""The SQLite journal across a restart of an in-process server: finished results (numpy arrays
included) come back, and a compile artifact of the previous run is reported lost in the
restart rather than unknown. (The SIGKILL case is in test_zr_fault_server.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np

from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    ErrorCode,
    ErrorReply,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitReply,
)
from zmqruntime.testing import RawPeer, serve_and_connect

S = ExecutionStatus


async def run(peer: RawPeer, message: Submit) -> str:
    reply = await peer.request(message)
    assert isinstance(reply, SubmitReply), reply
    await peer.wait_status(reply.execution_id, S.COMPLETE, S.FAILED)
    return reply.execution_id


def test_results_and_artifacts_survive_a_restart_through_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"

    async def scenario() -> None:
        async with serve_and_connect(journal_path=journal) as (_, peer):
            image = await run(peer, Submit(handler="array_result", params={"size": 100_000}))
            artifact = await run(peer, Submit(handler="compile", params={}, compile_only=True))
            failed = await run(peer, Submit(handler="fail", params={"message": "boom"}))
        mode = sqlite3.connect(journal).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"

        async with serve_and_connect(journal_path=journal) as (server, peer):
            reply = await peer.request(StatusRequest(execution_id=image))
            assert isinstance(reply, StatusReply)
            assert reply.execution.status is S.COMPLETE
            result = reply.execution.result
            assert isinstance(result, dict)
            np.testing.assert_array_equal(result["image"], np.arange(100_000, dtype=np.float64))
            reply = await peer.request(StatusRequest(execution_id=failed))
            assert isinstance(reply, StatusReply)
            assert reply.execution.error is not None
            assert reply.execution.error.code == ErrorCode.HANDLER_ERROR
            refused = await peer.request(
                Submit(handler="execute", params={}, compile_artifact_id=artifact)
            )
            assert isinstance(refused, ErrorReply)
            assert refused.code == ErrorCode.ARTIFACT_MISSING
            assert "lost when the server restarted" in refused.message
            assert server.counters.submitted == 0  # restored records are not new work

    asyncio.run(scenario())
