"""Compile: validation against registry and plate, the artifact, its JSON and its signature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openhcs_workflow.pipeline import (
    CompiledPlate,
    PipelineError,
    PlateError,
    RunConfig,
    compile_plate,
    default_pipeline,
    generate_plate,
)


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    generate_plate(tmp_path / "plate", wells=3, fields=2, channels=2, shape=(128, 128), seed=4)
    return tmp_path / "plate"


def test_artifact_holds_validated_steps_layout_output_and_planted(plate: Path) -> None:
    wells_seen: list[tuple[int, str]] = []
    artifact = compile_plate(
        plate,
        default_pipeline(),
        {"output_root": str(plate.parent / "out"), "channel": 2},
        on_well=lambda index, well: wells_seen.append((index, well)),
    )
    doc = artifact.to_json()
    assert doc["kind"] == "openhcs_workflow.compiled_plate"
    assert doc["plate_id"] == str(plate)
    assert doc["plate_dir"] == str(plate.absolute())
    assert doc["wells"] == ["A01", "A02", "A03"]
    assert doc["fields"] == [1, 2]
    assert doc["channels"] == [1, 2]
    assert doc["channel"] == 2
    assert doc["output_dir"] == str(plate.parent / "out" / "plate_results")
    assert doc["steps"][2] == {
        "name": "otsu_threshold",
        "params": {"bins": 256, "scale": 0.5, "noise_floor": 5.0, "fill_holes": True},
    }
    manifest = json.loads((plate / "plate.json").read_text())
    assert doc["planted"] == {
        well: sum(per_field.values()) for well, per_field in manifest["planted"].items()
    }
    assert wells_seen == [(0, "A01"), (1, "A02"), (2, "A03")]
    assert len(artifact.signature) == 64
    assert not (plate.parent / "out").exists()  # compile writes nothing


def test_artifact_round_trips_through_json_and_is_deterministic(plate: Path) -> None:
    artifact = compile_plate(plate, default_pipeline(), plate_id="plate-1")
    wire = json.loads(json.dumps(artifact.to_json(), allow_nan=False))
    assert CompiledPlate.from_json(wire) == artifact
    assert compile_plate(plate, default_pipeline(), plate_id="plate-1") == artifact
    other = compile_plate(plate, default_pipeline(), {"wells": ["A02"]}, plate_id="plate-1")
    assert other.wells == ("A02",)
    assert other.signature != artifact.signature
    assert artifact.output_dir == str(plate.parent.absolute() / "plate_results")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(wells=["A01"]), "artifact.signature: does not match"),
        (lambda d: d["steps"][1]["params"].update(sigma=3.0), "artifact.signature: does not match"),
        (lambda d: d.update(kind="other"), "artifact.kind: expected 'openhcs_workflow.compiled"),
        (lambda d: d.pop("signature"), "artifact: missing required field 'signature'"),
        (lambda d: d.update(extra=1), "artifact: unknown field 'extra'"),
        (lambda d: d["steps"][1].update(name="blur"), "pipeline[1]: unknown step 'blur'"),
        (lambda d: d.update(channel="1"), "artifact.channel: expected an integer, got string"),
    ],
)
def test_a_tampered_or_malformed_artifact_is_refused(
    plate: Path, change: Any, message: str
) -> None:
    doc = compile_plate(plate, default_pipeline()).to_json()
    change(doc)
    with pytest.raises(PipelineError) as caught:
        CompiledPlate.from_json(doc)
    assert message in str(caught.value), str(caught.value)


def test_step_overrides_from_the_config_end_up_in_the_artifact(plate: Path) -> None:
    config = RunConfig.from_json({"step_overrides": {"label_objects": {"min_size": 25}}})
    artifact = compile_plate(plate, default_pipeline(), config)
    assert artifact.steps[3].to_json()["params"] == {"connectivity": 1, "min_size": 25}


@pytest.mark.parametrize(
    ("pipeline_change", "config", "error", "message"),
    [
        (
            lambda p: p.insert(1, {"name": "median_filter"}),
            None,
            PipelineError,
            "pipeline[1]: unknown step 'median_filter'",
        ),
        (
            lambda p: p[1]["params"].update(sigma=-1),
            None,
            PipelineError,
            "pipeline[1] (gaussian_smooth): parameter 'sigma': -1.0 is below the minimum 0.0",
        ),
        (
            lambda p: p[4]["params"].update(channel=5),
            None,
            PipelineError,
            "pipeline[4] (measure_objects): parameter 'channel': channel 5 does not exist in "
            "the plate (channels: 1, 2)",
        ),
        (
            lambda p: None,
            {"channel": 3},
            PipelineError,
            "config.channel: channel 3 does not exist in the plate (channels: 1, 2)",
        ),
        (
            lambda p: None,
            {"wells": ["A01", "H12"]},
            PipelineError,
            "config.wells[1]: no well 'H12' in plate",
        ),
        (lambda p: None, {"wells": []}, PipelineError, "config.wells: must name at least one"),
        (lambda p: None, {"thresh": 1}, PipelineError, "config: unknown field 'thresh'"),
        (
            lambda p: None,
            {"step_overrides": {"otsu_threshold": {"scale": "high"}}},
            PipelineError,
            "config.step_overrides.otsu_threshold: parameter 'scale': expected a number",
        ),
    ],
)
def test_compile_errors_name_the_step_parameter_channel_or_well(
    plate: Path, pipeline_change: Any, config: Any, error: type[Exception], message: str
) -> None:
    pipeline = default_pipeline()
    pipeline_change(pipeline)
    with pytest.raises(error) as caught:
        compile_plate(plate, pipeline, config)
    assert str(caught.value).startswith(message), str(caught.value)


def test_compile_checks_the_pipeline_before_the_plate(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"unknown step 'blur'"):
        compile_plate(tmp_path / "missing", [{"name": "blur"}])
    with pytest.raises(PlateError, match=r"plate directory .*missing does not exist"):
        compile_plate(tmp_path / "missing", default_pipeline())


def test_compile_reads_every_image_header_of_the_selected_wells(plate: Path) -> None:
    corrupt = plate / "A03" / "f2_c2.npy"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    with pytest.raises(PlateError) as caught:
        compile_plate(plate, default_pipeline())
    assert str(caught.value).startswith(f"{corrupt.absolute()}: truncated or corrupt .npy file")
    # wells not selected are not read
    compile_plate(plate, default_pipeline(), {"wells": ["A01", "A02"]})


def test_output_root_that_is_a_file_is_refused(plate: Path) -> None:
    (plate.parent / "plate_results").write_text("in the way")
    with pytest.raises(PipelineError, match="exists and is not a directory"):
        compile_plate(plate, default_pipeline())
