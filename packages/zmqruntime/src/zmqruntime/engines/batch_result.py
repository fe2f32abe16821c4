"""What a batch run returns: one outcome per job, in job order, plus the hook errors.

The outcome kinds partition the jobs:
- `ok`: submitted and waited for successfully (`submission_id` set);
- `failed`: `submit` or `wait` raised (`phase` says which, `error` holds the exception;
  `submission_id` is set when the wait failed);
- `cancelled`: submitted (or being submitted) when the batch stopped early, or the job's own
  wait reported cancellation; `on_abort` was called for every submitted job cancelled by
  the engine stopping;
- `not_submitted`: never submitted, because submit fail-fast stopped the submission loop
  (or the engine was cancelled) before its turn. Nothing of it exists on the server.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from zmqruntime.engines.hooks import HookError

__all__ = ["BatchAborted", "BatchPhase", "BatchResult", "JobOutcome", "JobOutcomeKind"]


class JobOutcomeKind(enum.StrEnum):
    """How one job of a batch ended."""

    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_SUBMITTED = "not_submitted"


class BatchPhase(enum.StrEnum):
    """The step of a job an outcome refers to."""

    SUBMIT = "submit"
    WAIT = "wait"


@attrs.frozen(kw_only=True)
class JobOutcome:
    """One job's end: its key, 1-based index, kind, and the id/error/phase that apply."""

    key: str
    index: int
    kind: JobOutcomeKind
    submission_id: str | None = None
    error: Exception | None = None
    phase: BatchPhase | None = None

    @property
    def ok(self) -> bool:
        return self.kind is JobOutcomeKind.OK


@attrs.frozen(kw_only=True)
class BatchResult:
    """Every job's outcome in job order, and the exceptions the policy's hooks raised."""

    outcomes: tuple[JobOutcome, ...]
    hook_errors: tuple[HookError, ...] = ()

    @property
    def artifacts(self) -> Mapping[str, str]:
        """Job key → submission id, for the jobs that ended `ok` (in job order)."""
        return {o.key: o.submission_id for o in self.outcomes if o.submission_id and o.ok}

    @property
    def by_key(self) -> Mapping[str, JobOutcome]:
        return {o.key: o for o in self.outcomes}

    @property
    def all_ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def of_kind(self, kind: JobOutcomeKind) -> tuple[JobOutcome, ...]:
        """The outcomes of one kind, in job order."""
        return tuple(o for o in self.outcomes if o.kind is kind)


class BatchAborted(Exception):
    """Fail-fast stopped the batch. `result` holds every job's outcome; `cause` the failure."""

    def __init__(self, result: BatchResult, cause: JobOutcome) -> None:
        self.result = result
        self.cause = cause
        super().__init__(
            f"batch aborted: job {cause.key!r} failed in {cause.phase}: {cause.error!r}"
        )
