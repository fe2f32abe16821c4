"""Hypothesis strategies that generate valid instances of every wire message.

For property tests of code that sends or receives messages (ours and yours): every value drawn
here passes its schema. Needs `hypothesis` (the package's `test` extra); nothing else in
zmqruntime imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zmqruntime.arrays import ARRAY_KEY
from zmqruntime.execution_status import ExecutionStatus
from zmqruntime.messages import (
    Cancel,
    CancelNotice,
    CancelReply,
    ErrorCode,
    ErrorInfo,
    ErrorReply,
    ExecutionEvent,
    ExecutionEvents,
    ExecutionRecord,
    Heartbeat,
    JobEnded,
    Ping,
    Pong,
    ProgressBatch,
    QueuedExecution,
    RunJob,
    RunningExecution,
    ServerCounters,
    ServerStatus,
    Shutdown,
    ShutdownReply,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitBatch,
    SubmitBatchReply,
    SubmitOutcome,
    SubmitReply,
    WorkerInfo,
    WorkerReady,
    WorkerStarted,
)
from zmqruntime.progress import Phase, ProgressStatus, ProgressUpdate
from zmqruntime.schema import INT_MAX, INT_MIN

__all__ = [
    "ALLOWED_DTYPES",
    "MESSAGE_STRATEGIES",
    "MESSAGE_STRATEGIES_WITH_ARRAYS",
    "arrays",
    "execution_records",
    "json_objects",
    "json_values",
    "messages",
    "progress_updates",
]

#: Every dtype the protocol carries, in both byte orders where that matters.
ALLOWED_DTYPES: tuple[str, ...] = (
    "|b1",
    "|i1",
    "|u1",
    "<i2",
    ">i2",
    "<u2",
    "<i4",
    ">u4",
    "<i8",
    "<u8",
    "<f4",
    ">f4",
    "<f8",
    ">f8",
    "<c8",
    "<c16",
    ">c16",
)

ids = st.text(min_size=1, max_size=12)
texts = st.text(max_size=16)
counts = st.integers(min_value=0, max_value=INT_MAX)
small_counts = st.integers(min_value=0, max_value=10_000)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
json_ints = st.integers(min_value=INT_MIN, max_value=INT_MAX)
json_floats = st.floats(allow_nan=False, allow_infinity=False)


def arrays(*, max_side: int = 6, big: bool = False) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    """Arrays of every allowed dtype and byte order; `big` adds arrays above 64 KiB."""
    dtypes = st.sampled_from(ALLOWED_DTYPES).map(np.dtype)
    small = dtypes.flatmap(
        lambda dt: hnp.arrays(
            dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side)
        )
    )
    if not big:
        return small
    large = st.sampled_from(ALLOWED_DTYPES).map(lambda text: _large_array(np.dtype(text)))
    return st.one_of(small, large)


def _large_array(dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """A deterministic array of a bit more than 64 KiB (drawing its values would be slow)."""
    count = 65 * 1024 // dtype.itemsize + 7
    return np.arange(count).astype(dtype).reshape(-1, 1)


def json_values(*, with_arrays: bool = False, big_arrays: bool = False) -> st.SearchStrategy[Any]:
    """Free-form JSON values (arrays optionally among the leaves)."""
    leaves: st.SearchStrategy[Any] = st.none() | st.booleans() | json_ints | json_floats | texts
    if with_arrays:
        leaves = leaves | arrays(big=big_arrays)
    keys = st.text(max_size=6).filter(lambda k: k != ARRAY_KEY)
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3)
        ),
        max_leaves=8,
    )


def json_objects(
    *, with_arrays: bool = False, big_arrays: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """Free-form JSON objects."""
    keys = st.text(max_size=6).filter(lambda k: k != ARRAY_KEY)
    return st.dictionaries(
        keys, json_values(with_arrays=with_arrays, big_arrays=big_arrays), max_size=4
    )


@st.composite
def progress_updates(
    draw: st.DrawFn, *, execution_id: st.SearchStrategy[str] | None = None
) -> ProgressUpdate:
    """Valid progress events (step_index < total_steps, completed <= total)."""
    total_steps = draw(st.integers(min_value=1, max_value=50))
    total = draw(small_counts)
    optional = st.none() | texts
    return ProgressUpdate(
        execution_id=draw(ids if execution_id is None else execution_id),
        plate_id=draw(ids),
        axis_id=draw(texts),
        step_name=draw(texts),
        step_index=draw(st.integers(min_value=0, max_value=total_steps - 1)),
        total_steps=total_steps,
        phase=draw(st.sampled_from(Phase)),
        status=draw(st.sampled_from(ProgressStatus)),
        completed=draw(st.integers(min_value=0, max_value=total)),
        total=total,
        percent=draw(st.floats(min_value=0, max_value=100)),
        timestamp=draw(times),
        seq=draw(counts),
        pattern=draw(optional),
        component=draw(optional),
        message=draw(optional),
        error=draw(optional),
        traceback=draw(optional),
    )


error_infos = st.builds(
    ErrorInfo, code=st.sampled_from(ErrorCode), message=texts, traceback=st.none() | texts
)


@st.composite
def execution_records(
    draw: st.DrawFn, *, with_arrays: bool = False, big_arrays: bool = False
) -> ExecutionRecord:
    """Valid records: a result only when complete, an error exactly when failed or cancelled."""
    status = draw(st.sampled_from(ExecutionStatus))
    result = None
    if status is ExecutionStatus.COMPLETE:
        result = draw(json_values(with_arrays=with_arrays, big_arrays=big_arrays))
    error = None
    if status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        error = draw(error_infos)
    return ExecutionRecord(
        execution_id=draw(ids),
        handler=draw(ids),
        label=draw(st.none() | texts),
        status=status,
        compile_only=draw(st.booleans()),
        compile_artifact_id=draw(st.none() | ids),
        submitted_at=draw(times),
        started_at=draw(st.none() | times),
        finished_at=draw(st.none() | times),
        worker_pid=draw(st.none() | st.integers(min_value=0, max_value=2**22)),
        result=result,
        error=error,
    )


@st.composite
def _submits(draw: st.DrawFn, *, with_arrays: bool, big_arrays: bool) -> Submit:
    compile_only = draw(st.booleans())
    return Submit(
        handler=draw(ids),
        params=draw(json_objects(with_arrays=with_arrays, big_arrays=big_arrays)),
        compile_only=compile_only,
        compile_artifact_id=None if compile_only else draw(st.none() | ids),
        label=draw(st.none() | texts),
    )


@st.composite
def _status_replies(draw: st.DrawFn, *, with_arrays: bool, big_arrays: bool) -> StatusReply:
    record = draw(execution_records(with_arrays=with_arrays, big_arrays=big_arrays))
    own = st.just(record.execution_id)
    return StatusReply(
        execution=record,
        latest_progress=draw(st.none() | progress_updates(execution_id=own)),
        axes=tuple(draw(st.lists(progress_updates(execution_id=own), max_size=3))),
        seq=draw(counts),
    )


@st.composite
def _progress_batches(draw: st.DrawFn) -> ProgressBatch:
    """One execution's updates with rising `seq`s, as the server publishes them together."""
    own = st.just(draw(ids))
    updates = draw(st.lists(progress_updates(execution_id=own), min_size=1, max_size=3))
    seq = draw(st.integers(min_value=0, max_value=INT_MAX - 3 * len(updates)))  # room to rise
    stamped = []
    for update in updates:
        stamped.append(update.with_seq(seq))
        seq += draw(st.integers(min_value=1, max_value=3))
    return ProgressBatch(updates=tuple(stamped))


@st.composite
def _jobs_ended(draw: st.DrawFn, *, with_arrays: bool, big_arrays: bool) -> JobEnded:
    status = draw(
        st.sampled_from(
            [ExecutionStatus.COMPLETE, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED]
        )
    )
    complete = status is ExecutionStatus.COMPLETE
    return JobEnded(
        execution_id=draw(ids),
        attempt=draw(st.integers(min_value=1, max_value=2**31)),
        pid=draw(st.integers(min_value=0, max_value=2**22)),
        status=status,
        result=draw(json_values(with_arrays=with_arrays, big_arrays=big_arrays))
        if complete
        else None,
        error=None if complete else draw(error_infos),
    )


def _builders(with_arrays: bool, big_arrays: bool) -> Mapping[type, st.SearchStrategy[Any]]:
    pids = st.integers(min_value=0, max_value=2**22)
    attempts = st.integers(min_value=1, max_value=2**31)
    floats = st.floats(min_value=0, max_value=1e6)
    submit_replies = st.builds(
        SubmitReply,
        execution_id=ids,
        status=st.sampled_from(ExecutionStatus),
        queue_position=small_counts,
    )
    error_replies = st.builds(
        ErrorReply,
        code=st.sampled_from(ErrorCode),
        message=texts,
        details=json_objects(with_arrays=with_arrays, big_arrays=big_arrays),
    )
    return {
        Ping: st.builds(Ping),
        Pong: st.builds(Pong, server_name=texts, pid=pids, uptime=floats, protocol=ids),
        Submit: _submits(with_arrays=with_arrays, big_arrays=big_arrays),
        SubmitReply: submit_replies,
        SubmitBatch: st.builds(
            SubmitBatch,
            submits=st.lists(
                _submits(with_arrays=with_arrays, big_arrays=big_arrays), min_size=1, max_size=3
            ).map(tuple),
        ),
        SubmitBatchReply: st.builds(
            SubmitBatchReply,
            outcomes=st.lists(
                st.builds(SubmitOutcome, reply=submit_replies)
                | st.builds(SubmitOutcome, error=error_replies),
                max_size=3,
            ).map(tuple),
        ),
        StatusRequest: st.builds(StatusRequest, execution_id=st.none() | ids),
        StatusReply: _status_replies(with_arrays=with_arrays, big_arrays=big_arrays),
        ServerStatus: st.builds(
            ServerStatus,
            server_epoch=ids,
            uptime=floats,
            pid=pids,
            running=st.lists(
                st.builds(
                    RunningExecution,
                    execution_id=ids,
                    handler=ids,
                    label=st.none() | texts,
                    compile_only=st.booleans(),
                    started_at=times,
                    worker_pid=st.none() | pids,
                ),
                max_size=2,
            ).map(tuple),
            queued=st.lists(
                st.builds(
                    QueuedExecution,
                    execution_id=ids,
                    handler=ids,
                    label=st.none() | texts,
                    compile_only=st.booleans(),
                    queue_position=st.integers(min_value=1, max_value=1000),
                ),
                max_size=2,
            ).map(tuple),
            workers=st.lists(
                st.builds(
                    WorkerInfo,
                    pid=pids,
                    cpu_percent=floats,
                    memory_mb=floats,
                    execution_id=st.none() | ids,
                ),
                max_size=2,
            ).map(tuple),
            counters=st.builds(
                ServerCounters,
                **{name: small_counts for name in _COUNTER_NAMES},
            ),
            handlers=st.lists(ids, max_size=3).map(tuple),
        ),
        Cancel: st.builds(Cancel, execution_id=ids, force=st.booleans()),
        CancelReply: st.builds(
            CancelReply,
            execution_id=ids,
            status=st.sampled_from(ExecutionStatus),
            changed=st.booleans(),
        ),
        Shutdown: st.builds(Shutdown, force=st.booleans()),
        ShutdownReply: st.builds(
            ShutdownReply, force=st.booleans(), cancelled=st.lists(ids, max_size=3).map(tuple)
        ),
        ErrorReply: error_replies,
        ExecutionEvent: st.builds(
            ExecutionEvent,
            record=execution_records(with_arrays=with_arrays, big_arrays=big_arrays),
            seq=counts,
        ),
        ExecutionEvents: st.builds(
            ExecutionEvents,
            events=st.lists(
                st.builds(
                    ExecutionEvent,
                    record=execution_records(with_arrays=with_arrays, big_arrays=big_arrays),
                    seq=counts,
                ),
                min_size=1,
                max_size=3,
            ).map(tuple),
        ),
        ProgressBatch: _progress_batches(),
        Heartbeat: st.builds(
            Heartbeat,
            seq=counts,
            uptime=floats,
            interval=st.floats(min_value=0.001, max_value=3600),
        ),
        CancelNotice: st.builds(CancelNotice, execution_id=ids, force=st.booleans()),
        WorkerStarted: st.builds(
            WorkerStarted, execution_id=ids, pid=pids, attempt=st.none() | attempts
        ),
        ProgressUpdate: progress_updates(),
        WorkerReady: st.builds(WorkerReady, pid=pids),
        RunJob: st.builds(
            RunJob,
            execution_id=ids,
            attempt=attempts,
            handler=ids,
            handler_ref=ids,
            params=json_objects(with_arrays=with_arrays, big_arrays=big_arrays),
            artifact=json_values(with_arrays=with_arrays, big_arrays=big_arrays),
            compile_only=st.booleans(),
            result_limit=attempts,
        ),
        JobEnded: _jobs_ended(with_arrays=with_arrays, big_arrays=big_arrays),
    }


_COUNTER_NAMES = (
    "rejected_unauthorized",
    "rejected_replayed",
    "rejected_too_large",
    "rejected_malformed",
    "rejected_protocol",
    "submitted",
    "completed",
    "failed",
    "cancelled",
)

#: One strategy per message class (JSON fields without arrays).
MESSAGE_STRATEGIES: Mapping[type, st.SearchStrategy[Any]] = _builders(False, False)
#: The same, with numpy arrays (some above 64 KiB) inside free-form JSON fields.
MESSAGE_STRATEGIES_WITH_ARRAYS: Mapping[type, st.SearchStrategy[Any]] = _builders(True, True)


def messages(*, with_arrays: bool = False) -> st.SearchStrategy[Any]:
    """Any message of the protocol."""
    table = MESSAGE_STRATEGIES_WITH_ARRAYS if with_arrays else MESSAGE_STRATEGIES
    return st.one_of(*table.values())
