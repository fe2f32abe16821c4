"""Generic engines: a concurrent batch submit/wait engine and an execution status poller.

Both follow the policy pattern: an ABC (`…PolicyABC`) says what the engine needs from its
caller, a frozen `Callback…Policy` builds one from functions. Neither knows about plates or
any application; both run on asyncio and have blocking wrappers (`run_blocking`).
"""

from zmqruntime.engines.batch_policy import BatchSubmitWaitPolicyABC, CallbackBatchSubmitWaitPolicy
from zmqruntime.engines.batch_result import (
    BatchAborted,
    BatchPhase,
    BatchResult,
    JobOutcome,
    JobOutcomeKind,
)
from zmqruntime.engines.batch_submit_wait import BatchSubmitWaitEngine
from zmqruntime.engines.hooks import HookError, HookResult
from zmqruntime.engines.poll_outcome import PollOutcome, PollOutcomeKind
from zmqruntime.engines.poll_policy import (
    CallbackExecutionStatusPollPolicy,
    ExecutionStatusPollPolicyABC,
    StatusObservation,
)
from zmqruntime.engines.signals import ExecutionSignals, ExecutionWatch, WakeReason
from zmqruntime.engines.status_poller import ExecutionStatusPoller, terminal_outcome

__all__ = [
    "BatchAborted",
    "BatchPhase",
    "BatchResult",
    "BatchSubmitWaitEngine",
    "BatchSubmitWaitPolicyABC",
    "CallbackBatchSubmitWaitPolicy",
    "CallbackExecutionStatusPollPolicy",
    "ExecutionSignals",
    "ExecutionStatusPollPolicyABC",
    "ExecutionStatusPoller",
    "ExecutionWatch",
    "HookError",
    "HookResult",
    "JobOutcome",
    "JobOutcomeKind",
    "PollOutcome",
    "PollOutcomeKind",
    "StatusObservation",
    "WakeReason",
    "terminal_outcome",
]
