"""`execution` events gathered to go out as one `executions` event (docs/protocol.md §6).

Only records without result or error are gathered (a batch's `queued` records, `running`
ones): their size is small and can be estimated from the label alone, so a batch is cut well
before the message size limit without encoding anything twice.
"""

from __future__ import annotations

from typing import Final

from zmqruntime.messages import MAX_BATCH_EVENTS, ExecutionEvent

__all__ = ["EXECUTIONS_TOPIC", "RecordBatch"]

#: Topic of `executions` events (several `execution` events in one message).
EXECUTIONS_TOPIC: Final = "__executions__"


class RecordBatch:
    """`execution` events without result or error (a batch's `queued` records, `running`
    ones), gathered to go out as one `executions` event while their estimated size fits."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._events: list[ExecutionEvent] = []
        self._size = 0

    def takes(self, message: object) -> bool:
        """Gather `message` if it is such an event (True), else leave it (False)."""
        if not isinstance(message, ExecutionEvent):
            return False
        record = message.record
        if record.result is not None or record.error is not None:
            return False
        self._events.append(message)
        # Generous: every label character escaped (6 bytes), plus the fixed fields.
        self._size += 512 + len(record.handler) + 6 * len(record.label or "")
        return True

    @property
    def full(self) -> bool:
        return self._size >= self._budget or len(self._events) >= MAX_BATCH_EVENTS

    def take(self) -> list[ExecutionEvent]:
        events, self._events, self._size = self._events, [], 0
        return events
