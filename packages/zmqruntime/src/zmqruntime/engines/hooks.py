"""Calling policy hooks: sync or async, and isolated from the outcome they report on.

A hook is any callable. If it returns an awaitable, the engine awaits it, so a policy may
write `def on_x(...)` or `async def on_x(...)` as it likes. A hook that raises never changes
a job's or an execution's outcome: the exception is kept as a `HookError` in the result and
logged. Cancellation (`asyncio.CancelledError`) is not an error and passes through.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import attrs

__all__ = ["HookError", "HookResult", "HookRunner"]

log = logging.getLogger("zmqruntime.engines")

#: What a hook may return: nothing, or an awaitable the engine awaits.
HookResult: TypeAlias = Awaitable[None] | None


@attrs.frozen(kw_only=True)
class HookError:
    """A policy hook raised: which hook, for which job key or execution id, and the error."""

    hook: str = attrs.field(validator=attrs.validators.instance_of(str))
    key: str = attrs.field(validator=attrs.validators.instance_of(str))
    error: Exception = attrs.field(validator=attrs.validators.instance_of(Exception))


class _Failed:
    """Marker returned by `HookRunner.call` when the hook raised."""


FAILED = _Failed()


class HookRunner:
    """Calls hooks and collects the exceptions they raise, in the order they were raised."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[HookError] = []

    async def call(self, hook: str, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` (awaiting its result if it is awaitable); on error return FAILED."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.warning("policy hook %s for %r raised %r", hook, key, exc, exc_info=exc)
            self.errors.append(HookError(hook=hook, key=key, error=exc))
            return FAILED
        return result
