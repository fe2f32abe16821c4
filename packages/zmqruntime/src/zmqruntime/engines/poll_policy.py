"""What `ExecutionStatusPoller` asks of its caller: how to read a status, limits, hooks.

`ExecutionStatusPollPolicyABC` is the boundary; `CallbackExecutionStatusPollPolicy` builds
one from functions. Hooks may be plain functions or coroutine functions (the poller awaits
an awaitable result); an exception raised by a hook is kept in `PollOutcome.hook_errors`
and never changes the outcome. Only `on_poll_exception` steers: True keeps trying (within
the liveness and deadline limits), False stops with a `failed` outcome; if it raises, the
poller keeps trying.

There is always a liveness limit (no "poll forever" against a dead server); the overall
deadline is optional.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from zmqruntime.engines.checks import (
    as_validator,
    check_callable,
    check_mapping,
    check_optional_callable,
    check_optional_seconds,
    check_seconds,
)
from zmqruntime.engines.hooks import HookResult
from zmqruntime.execution_status import ExecutionStatus

__all__ = [
    "CallbackExecutionStatusPollPolicy",
    "ExecutionStatusPollPolicyABC",
    "StatusObservation",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@attrs.frozen(kw_only=True)
class StatusObservation:
    """One look at an execution: its status, its record (handed to `on_terminal`), the
    epoch of the server that answered (None if unknown)."""

    status: ExecutionStatus = attrs.field(validator=attrs.validators.instance_of(ExecutionStatus))
    payload: Mapping[str, Any] = attrs.field(default=_EMPTY, validator=as_validator(check_mapping))
    server_epoch: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )


class ExecutionStatusPollPolicyABC(abc.ABC):
    """How to read one execution's status, how often, for how long; plus hooks."""

    @abc.abstractmethod
    async def poll_status(self, execution_id: str) -> StatusObservation:
        """Read the execution's current status (raise if it could not be read)."""

    @property
    def poll_interval_seconds(self) -> float:
        """Pause between polls when no event wakes the poller earlier."""
        return 1.0

    @property
    def liveness_timeout_seconds(self) -> float:
        """The server counts as lost after this long without a sign of life (a successful
        poll, an event for the execution, a heartbeat)."""
        return 10.0

    @property
    def deadline_seconds(self) -> float | None:
        """Give up (`timed_out`) this long after the poller started; None for no deadline."""
        return None

    def on_running(self, execution_id: str) -> HookResult:
        """Called once, at the first `running` status seen."""

    def on_terminal(
        self, execution_id: str, status: ExecutionStatus, payload: Mapping[str, Any]
    ) -> HookResult:
        """Called once with the terminal status and the record, before the poller returns."""

    def on_status_error(self, execution_id: str, message: str) -> HookResult:
        """Called when `poll_status` answered something that is not a valid observation."""

    def on_poll_exception(self, execution_id: str, error: Exception) -> bool | Awaitable[bool]:
        """`poll_status` raised (or did not answer in time): True keeps trying, False stops."""
        return True


_callable = as_validator(check_callable)
_optional_callable = as_validator(check_optional_callable)


@attrs.frozen(kw_only=True)
class CallbackExecutionStatusPollPolicy(ExecutionStatusPollPolicyABC):
    """A poll policy built from functions; hooks are optional, each sync or async."""

    poll_status_fn: Callable[[str], Awaitable[StatusObservation]] = attrs.field(validator=_callable)
    poll_interval_seconds_value: float = attrs.field(
        default=1.0, validator=as_validator(check_seconds)
    )
    liveness_timeout_seconds_value: float = attrs.field(
        default=10.0, validator=as_validator(check_seconds)
    )
    deadline_seconds_value: float | None = attrs.field(
        default=None, validator=as_validator(check_optional_seconds)
    )
    on_running_fn: Callable[[str], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_terminal_fn: Callable[[str, ExecutionStatus, Mapping[str, Any]], HookResult] | None = (
        attrs.field(default=None, validator=_optional_callable)
    )
    on_status_error_fn: Callable[[str, str], HookResult] | None = attrs.field(
        default=None, validator=_optional_callable
    )
    on_poll_exception_fn: Callable[[str, Exception], bool | Awaitable[bool]] | None = attrs.field(
        default=None, validator=_optional_callable
    )

    async def poll_status(self, execution_id: str) -> StatusObservation:
        return await self.poll_status_fn(execution_id)

    @property
    def poll_interval_seconds(self) -> float:
        return self.poll_interval_seconds_value

    @property
    def liveness_timeout_seconds(self) -> float:
        return self.liveness_timeout_seconds_value

    @property
    def deadline_seconds(self) -> float | None:
        return self.deadline_seconds_value

    def on_running(self, execution_id: str) -> HookResult:
        return None if self.on_running_fn is None else self.on_running_fn(execution_id)

    def on_terminal(
        self, execution_id: str, status: ExecutionStatus, payload: Mapping[str, Any]
    ) -> HookResult:
        fn = self.on_terminal_fn
        return None if fn is None else fn(execution_id, status, payload)

    def on_status_error(self, execution_id: str, message: str) -> HookResult:
        fn = self.on_status_error_fn
        return None if fn is None else fn(execution_id, message)

    def on_poll_exception(self, execution_id: str, error: Exception) -> bool | Awaitable[bool]:
        fn = self.on_poll_exception_fn
        return True if fn is None else fn(execution_id, error)
