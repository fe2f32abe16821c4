"""What a plate run writes, and where::

    <output_dir>/<well>/objects.csv     one row per object: well, field, label, measurements
    <output_dir>/<well>/summary.json    the well's summary (objects per field, planted, time)
    <output_dir>/wells.csv              one row per well: objects, planted, mean area, seconds
    <output_dir>/results.json           the run's results summary (what `execute` returns)

Every file is written atomically, so a cancelled or failed run leaves whole files only. Files
of an earlier run that this run does not rewrite are left in place; `results.json` says which
wells this run produced.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import numpy as np

from openhcs_workflow.pipeline.fileio import write_json_atomic, write_text_atomic
from openhcs_workflow.pipeline.jsonio import JSONObject
from openhcs_workflow.pipeline.state import FieldState

__all__ = ["WellResult", "write_plate_outputs", "write_well_outputs"]

CsvCell = str | int | float


@attrs.frozen(slots=True, kw_only=True)
class WellResult:
    """What one well produced."""

    well: str
    objects_per_field: dict[int, int]
    planted: int | None
    mean_area: float | None
    seconds: float
    objects_csv: Path
    summary_json: Path

    @property
    def objects(self) -> int:
        """Objects counted over all fields."""
        return sum(self.objects_per_field.values())

    def to_json(self) -> JSONObject:
        """The well's summary."""
        return {
            "well": self.well,
            "objects": self.objects,
            "objects_per_field": {str(f): n for f, n in self.objects_per_field.items()},
            "planted": self.planted,
            "mean_area": self.mean_area,
            "seconds": round(self.seconds, 6),
            "objects_csv": str(self.objects_csv),
        }


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[CsvCell | None]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    return buffer.getvalue()


def _object_rows(state: FieldState, columns: Sequence[str]) -> list[list[CsvCell]]:
    count = state.object_count or 0
    table = state.objects
    values = [] if table is None else [table.columns[name].tolist() for name in columns]
    return [
        [state.well, state.field, label + 1, *(column[label] for column in values)]
        for label in range(count)
    ]


def write_well_outputs(
    output_dir: Path,
    states: Sequence[FieldState],
    *,
    planted: int | None,
    seconds: float,
) -> WellResult:
    """Write a well's object table and summary from its fields' final states."""
    well = states[0].well
    well_dir = output_dir / well
    columns = [] if states[0].objects is None else list(states[0].objects.columns)
    rows = [row for state in states for row in _object_rows(state, columns)]
    objects_csv = well_dir / "objects.csv"
    write_text_atomic(objects_csv, _csv_text(["well", "field", "label", *columns], rows))
    areas = [
        state.objects.columns["area"]
        for state in states
        if state.objects is not None and "area" in state.objects.columns
    ]
    all_areas = np.concatenate(areas) if areas else np.empty(0)
    result = WellResult(
        well=well,
        objects_per_field={state.field: state.object_count or 0 for state in states},
        planted=planted,
        mean_area=float(all_areas.mean()) if all_areas.size else None,
        seconds=seconds,
        objects_csv=objects_csv,
        summary_json=well_dir / "summary.json",
    )
    write_json_atomic(result.summary_json, result.to_json())
    return result


def write_plate_outputs(
    output_dir: Path, wells: Sequence[WellResult], summary: JSONObject
) -> JSONObject:
    """Write `wells.csv` and `results.json` (the summary plus an `outputs` entry naming the
    files written); returns that completed summary."""
    wells_csv = output_dir / "wells.csv"
    results_json = output_dir / "results.json"
    write_text_atomic(
        wells_csv,
        _csv_text(
            ["well", "objects", "planted", "mean_area", "seconds"],
            ([w.well, w.objects, w.planted, w.mean_area, round(w.seconds, 6)] for w in wells),
        ),
    )
    completed: JSONObject = {
        **summary,
        "outputs": {
            "results_json": str(results_json),
            "wells_csv": str(wells_csv),
            "objects_csv": {w.well: str(w.objects_csv) for w in wells},
        },
    }
    write_json_atomic(results_json, completed)
    return completed
