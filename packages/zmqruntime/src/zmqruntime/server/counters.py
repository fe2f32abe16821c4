"""Running totals of what the server refused and what it ran (reported in `server_status`)."""

from __future__ import annotations

import attrs

from zmqruntime.messages import ErrorCode, ServerCounters

__all__ = ["Counters"]

_REJECTION_FIELDS = {
    ErrorCode.UNAUTHORIZED: "rejected_unauthorized",
    ErrorCode.REPLAYED: "rejected_replayed",
    ErrorCode.TOO_LARGE: "rejected_too_large",
    ErrorCode.UNSUPPORTED_PROTOCOL: "rejected_protocol",
}


@attrs.define(kw_only=True)
class Counters:
    """Mutable counters owned by the server's event loop (never shared across threads).

    The wire counters are those of `ServerCounters`; `progress_dropped` (reports for unknown
    or finished executions) and `internal_errors` (bugs caught so a loop could go on) are kept
    for logs and tests.
    """

    rejected_unauthorized: int = 0
    rejected_replayed: int = 0
    rejected_too_large: int = 0
    rejected_malformed: int = 0
    rejected_protocol: int = 0
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    progress_dropped: int = 0
    internal_errors: int = 0

    def count_rejection(self, code: ErrorCode) -> None:
        """Count one refused message by its error code (everything else is `malformed`)."""
        name = _REJECTION_FIELDS.get(code, "rejected_malformed")
        setattr(self, name, getattr(self, name) + 1)

    def to_wire(self) -> ServerCounters:
        """The counters as they appear in `server_status`."""
        return ServerCounters(
            rejected_unauthorized=self.rejected_unauthorized,
            rejected_replayed=self.rejected_replayed,
            rejected_too_large=self.rejected_too_large,
            rejected_malformed=self.rejected_malformed,
            rejected_protocol=self.rejected_protocol,
            submitted=self.submitted,
            completed=self.completed,
            failed=self.failed,
            cancelled=self.cancelled,
        )
