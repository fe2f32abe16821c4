"""`progress` events gathered to go out as `progress_batch` events (docs/protocol.md §6).

The server handles worker reports in batches (`REPORT_BATCH` per loop turn). The updates of
one execution handled together are published as one message: a busy stream then costs one
signature, one send and one verification per batch rather than per update, and an idle one
still publishes each update at once, alone.
"""

from __future__ import annotations

from typing import Final

from zmqruntime.messages import MAX_BATCH_UPDATES
from zmqruntime.progress import ProgressUpdate

__all__ = ["UPDATE_BATCH_BYTES", "UpdateBatches", "estimated_size"]

#: Estimated size a batch stays within (a larger update goes alone): small, so that the events
#: queued for a slow subscriber (a count, `EVENTS_SNDHWM`) stay a bounded amount of memory.
UPDATE_BATCH_BYTES: Final = 64 * 1024
#: An update's size without its free-text fields, generously (field names, numbers, ids).
_FIXED_BYTES: Final = 512


def estimated_size(update: ProgressUpdate) -> int:
    """The update's encoded size, generously: every text character counted as escaped (6
    bytes). Only characters beyond the Basic Multilingual Plane take more (12), so a batch
    is at most twice its estimate, within the limit (the server budgets half of it)."""
    text = (
        len(update.execution_id)
        + len(update.plate_id)
        + len(update.axis_id)
        + len(update.step_name)
        + len(update.pattern or "")
        + len(update.component or "")
        + len(update.message or "")
        + len(update.error or "")
        + len(update.traceback or "")
    )
    return _FIXED_BYTES + 6 * text


class UpdateBatches:
    """Progress updates waiting to be published, per execution, in `seq` order."""

    def __init__(self, budget: int = UPDATE_BATCH_BYTES) -> None:
        self._budget = budget
        self._updates: dict[str, list[ProgressUpdate]] = {}
        self._sizes: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._updates)

    def add(self, update: ProgressUpdate) -> list[ProgressUpdate] | None:
        """Gather `update`. When it would not fit in its execution's batch, that batch is
        taken out and returned (publish it now) and `update` starts the next one."""
        execution_id = update.execution_id
        size = estimated_size(update)
        updates = self._updates.get(execution_id)
        if updates is not None:
            total = self._sizes[execution_id] + size
            if total <= self._budget and len(updates) < MAX_BATCH_UPDATES:
                updates.append(update)
                self._sizes[execution_id] = total
                return None
        self._updates[execution_id] = [update]
        self._sizes[execution_id] = size
        return updates

    def take(self) -> list[list[ProgressUpdate]]:
        """Every execution's gathered updates (each list non-empty), and forget them."""
        batches = list(self._updates.values())
        self._updates.clear()
        self._sizes.clear()
        return batches
