"""Execute: outputs on disk, the results summary, counts vs planted, progress, cancel, errors.

Counting tolerance: per field |counted - planted| <= 1 and per plate within 1 % (see
test_wf_pipeline_steps.py for why); on these seeds the counts are in fact exact.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from openhcs_workflow.pipeline import (
    DEFAULT_REGISTRY,
    FieldState,
    LocalContext,
    PipelineError,
    PlateError,
    PlateRunCancelled,
    ProgressEvent,
    StepRegistry,
    compile_plate,
    default_pipeline,
    execute_plate,
    float_param,
    generate_plate,
    run_plate,
)
from zmqruntime.progress import Phase, ProgressUpdate

SHAPE = (128, 128)


def make_plate(root: Path, seed: int = 5, **options: Any) -> Path:
    options = {"wells": 3, "fields": 2, "channels": 2, "shape": SHAPE, **options}
    generate_plate(root / f"plate{seed}", seed=seed, **options)
    return root / f"plate{seed}"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def as_update(event: ProgressEvent) -> ProgressUpdate:
    """The event as the wire schema would carry it (raises SchemaError if it is invalid)."""
    fields = attrs.asdict(event)
    return ProgressUpdate(
        execution_id="e1", timestamp=1.0, seq=0, **{**fields, "phase": Phase(event.phase)}
    )


def test_execute_writes_per_well_tables_and_a_correct_summary(tmp_path: Path) -> None:
    plate = make_plate(tmp_path)
    pipeline = [*default_pipeline(), {"name": "measure_objects", "params": {"channel": 2}}]
    summary = run_plate(plate, pipeline, {"output_root": str(tmp_path / "out")})
    out = tmp_path / "out" / "plate5_results"
    assert summary["output_dir"] == str(out)
    assert json.loads((out / "results.json").read_text()) == summary
    manifest = json.loads((plate / "plate.json").read_text())
    wells = ["A01", "A02", "A03"]
    assert summary["wells"] == wells
    assert summary["well_count"] == summary["wells_processed"] == 3
    assert summary["steps"] == [step["name"] for step in pipeline]
    per_well = summary["objects_per_well"]
    assert summary["objects_total"] == sum(per_well.values())
    assert summary["planted_per_well"] == {w: sum(manifest["planted"][w].values()) for w in wells}
    assert summary["planted_total"] == sum(summary["planted_per_well"].values())
    assert summary["timings"]["total_seconds"] > 0
    rows_by_well = {row["well"]: row for row in read_csv(out / "wells.csv")}
    for well in wells:
        objects = read_csv(out / well / "objects.csv")
        assert summary["outputs"]["objects_csv"][well] == str(out / well / "objects.csv")
        assert len(objects) == per_well[well] == int(rows_by_well[well]["objects"])
        assert list(objects[0]) == [
            "well",
            "field",
            "label",
            "area",
            "centroid_y",
            "centroid_x",
            "mean_intensity_c1",
            "total_intensity_c1",
            "mean_intensity_c2",
            "total_intensity_c2",
        ]
        for field in ("1", "2"):
            labels = [int(r["label"]) for r in objects if r["field"] == field]
            assert labels == list(range(1, len(labels) + 1))
            assert abs(len(labels) - manifest["planted"][well][field]) <= 1
        assert all(float(r["mean_intensity_c1"]) > 0 for r in objects)
        well_summary = json.loads((out / well / "summary.json").read_text())
        assert well_summary["objects"] == per_well[well]
        assert well_summary["planted"] == summary["planted_per_well"][well]
        assert well_summary["mean_area"] == pytest.approx(
            float(np.mean([int(r["area"]) for r in objects]))
        )


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_counts_per_field_match_planted_on_several_plates(tmp_path: Path, seed: int) -> None:
    plate = make_plate(tmp_path, seed, wells=4, channels=1)
    summary = run_plate(plate)
    manifest = json.loads((plate / "plate.json").read_text())
    for well in summary["wells"]:
        objects = read_csv(Path(summary["outputs"]["objects_csv"][well]))
        counted = Counter(row["field"] for row in objects)
        for field, planted in manifest["planted"][well].items():
            assert abs(counted[field] - planted) <= 1, (well, field, counted[field], planted)
    assert (
        abs(summary["objects_total"] - summary["planted_total"]) <= 0.01 * summary["planted_total"]
    )


def test_progress_per_well_is_ordered_complete_and_schema_valid(tmp_path: Path) -> None:
    plate = make_plate(tmp_path)
    events: list[ProgressEvent] = []
    run_plate(plate, ctx=LocalContext(events.append))
    updates = [as_update(event) for event in events]
    assert updates[0].phase == Phase.INIT
    assert updates[0].axis_id == ""
    assert updates[0].total == 3
    steps = [step["name"] for step in default_pipeline()]
    for well in ("A01", "A02", "A03"):
        mine = [u for u in updates if u.axis_id == well]
        expected: list[tuple[str, str, int]] = [("axis_started", steps[0], 0)]
        for index, name in enumerate(steps):
            expected += [("step_started", name, index)]
            expected += [("pattern_group", name, index)] * 2  # two fields
            expected += [("step_completed", name, index)]
        expected += [("axis_completed", steps[-1], len(steps) - 1)]
        assert [(u.phase.value, u.step_name, u.step_index) for u in mine] == expected
        percents = [u.percent for u in mine]
        assert percents == sorted(percents)
        assert percents[0] == 0.0
        assert percents[-1] == 100.0
        assert mine[-1].status.value == "completed"
        assert mine[-1].message is not None
        assert mine[-1].message.endswith(" objects")
        groups = [u for u in mine if u.phase == Phase.PATTERN_GROUP]
        assert [(u.pattern, u.completed, u.total) for u in groups[:2]] == [
            ("f1", 1, 2),
            ("f2", 2, 2),
        ]
    # wells run one after another
    order = [u.axis_id for u in updates[1:]]
    assert order == sorted(order)


def test_cancel_between_steps_stops_the_plate_without_an_error_event(tmp_path: Path) -> None:
    plate = make_plate(tmp_path)
    artifact = compile_plate(plate, default_pipeline())
    events: list[ProgressEvent] = []

    def cancel_during_a02(event: ProgressEvent) -> None:
        events.append(event)
        if event.axis_id == "A02" and event.phase == "step_completed" and event.step_index == 1:
            ctx.cancel()

    ctx = LocalContext(cancel_during_a02)
    with pytest.raises(PlateRunCancelled):
        execute_plate(artifact, ctx)
    a02 = [e for e in events if e.axis_id == "A02"]
    assert (a02[-1].phase, a02[-1].step_index) == ("step_completed", 1)
    assert not any(e.axis_id == "A03" for e in events)
    assert all(e.status != "error" for e in events)
    out = Path(artifact.output_dir)
    assert (out / "A01" / "objects.csv").exists()
    assert not (out / "A02").exists()
    assert not (out / "results.json").exists()


def test_an_image_broken_after_compile_fails_the_plate_naming_the_file(tmp_path: Path) -> None:
    plate = make_plate(tmp_path)
    artifact = compile_plate(plate, default_pipeline())
    broken = plate / "A02" / "f2_c2.npy"
    broken.write_bytes(b"\x93NUMPY garbage")
    events: list[ProgressEvent] = []
    with pytest.raises(PlateError) as caught:
        execute_plate(artifact, LocalContext(events.append))
    assert str(caught.value).startswith(f"{broken.absolute()}: not a valid .npy file")
    last = events[-1]
    assert (last.axis_id, last.phase, last.status) == ("A02", "axis_completed", "error")
    assert last.message == str(caught.value)
    as_update(last)
    out = Path(artifact.output_dir)
    assert (out / "A01" / "summary.json").exists()
    assert not (out / "results.json").exists()


def test_a_plate_removed_after_compile_is_a_clear_error(tmp_path: Path) -> None:
    plate = make_plate(tmp_path)
    artifact = compile_plate(plate, default_pipeline())
    plate.rename(tmp_path / "moved")
    with pytest.raises(PlateError, match=r"plate directory .*plate5 no longer exists"):
        execute_plate(artifact)


@attrs.frozen(kw_only=True)
class _FailParams:
    level: float = float_param(1.0, doc="unused")


def _explode(state: FieldState, p: _FailParams) -> FieldState:
    """A step with a bug."""
    raise ZeroDivisionError("division by zero")


def test_a_failing_step_is_reported_with_its_index_well_and_field(tmp_path: Path) -> None:
    plate = make_plate(tmp_path, wells=1)
    registry = StepRegistry(
        [DEFAULT_REGISTRY.lookup(n, "x") for n in ("otsu_threshold", "label_objects")]
    )
    registry.step("explode", params=_FailParams)(_explode)
    pipeline = [{"name": "otsu_threshold"}, {"name": "label_objects"}, {"name": "explode"}]
    artifact = compile_plate(plate, pipeline, registry=registry)
    with pytest.raises(PipelineError) as caught:
        execute_plate(artifact)
    assert str(caught.value) == (
        "pipeline[2] (explode) failed on well A01 field 1: ZeroDivisionError: division by zero"
    )
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
