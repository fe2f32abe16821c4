"""What `ExecutionStatusPoller.run` returns: exactly one outcome per run."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from zmqruntime.engines.hooks import HookError
from zmqruntime.execution_status import ExecutionStatus

__all__ = ["PollOutcome", "PollOutcomeKind"]


class PollOutcomeKind(enum.StrEnum):
    """How following one execution ended.

    `complete`, `failed`, `cancelled` mirror the execution's terminal status (`failed` also
    covers an unexpected status reply and `on_poll_exception` returning False); `lost`
    means no sign of life within the liveness timeout, or a restarted server (new epoch);
    `timed_out` means the overall deadline passed first.
    """

    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    TIMED_OUT = "timed_out"


@attrs.frozen(kw_only=True)
class PollOutcome:
    """The end of one poller run, with the last status and record seen and why it ended.

    `error` is the poll exception that stopped the run (`on_poll_exception` returned False),
    or for `lost`/`timed_out` the latest poll's exception if that poll failed.
    `hook_errors` lists the exceptions the policy's hooks raised (the outcome ignores them).
    """

    kind: PollOutcomeKind
    execution_id: str
    status: ExecutionStatus | None = None
    payload: Mapping[str, Any] = attrs.field(factory=lambda: MappingProxyType({}))
    reason: str
    error: Exception | None = None
    hook_errors: tuple[HookError, ...] = ()

    @property
    def ok(self) -> bool:
        return self.kind is PollOutcomeKind.COMPLETE
