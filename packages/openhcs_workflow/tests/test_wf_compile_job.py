"""CompileJob: validated JSON inputs and a signature that decides artifact reuse."""

from __future__ import annotations

import pytest

from openhcs_workflow import CompileJob, PipelineStep, PlateSpec


def _job(**kw: object) -> CompileJob:
    fields: dict[str, object] = {
        "plate_id": "p1",
        "pipeline": [{"name": "blur", "params": {"sigma": 2}}, {"name": "threshold"}],
        "config": {"workers": 2},
    }
    fields.update(kw)
    return CompileJob(**fields)  # type: ignore[arg-type]


def test_params_are_what_the_handler_receives() -> None:
    assert _job().params() == {
        "plate_id": "p1",
        "pipeline": [
            {"name": "blur", "params": {"sigma": 2}},
            {"name": "threshold", "params": {}},
        ],
        "config": {"workers": 2},
    }


def test_signature_is_stable_and_ignores_key_order() -> None:
    a = _job(config={"a": 1, "b": {"c": 2, "d": 3}})
    b = _job(config={"b": {"d": 3, "c": 2}, "a": 1})
    assert a.signature == b.signature


@pytest.mark.parametrize(
    "change",
    [
        {"plate_id": "p2"},
        {"config": {"workers": 3}},
        {"pipeline": [{"name": "blur", "params": {"sigma": 3}}, {"name": "threshold"}]},
        {"pipeline": [{"name": "threshold"}, {"name": "blur", "params": {"sigma": 2}}]},
    ],
)
def test_signature_changes_with_pipeline_config_or_plate(change: dict[str, object]) -> None:
    assert _job(**change).signature != _job().signature


def test_job_does_not_alias_the_callers_dicts() -> None:
    config = {"workers": 2}
    job = _job(config=config)
    config["workers"] = 99
    assert job.config == {"workers": 2}


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ([{"params": {}}], r"pipeline\[0\].name: expected a non-empty string, got None"),
        ([{"name": "x", "func": "os.system"}], r"pipeline\[0\]: unknown field\(s\) \['func'\]"),
        (
            [{"name": "x", "params": {"k": float("inf")}}],
            r"pipeline\[0\].params.k: expected a finite",
        ),
        (
            [{"name": "x", "params": {"k": object()}}],
            r"pipeline\[0\].params.k: expected a JSON value",
        ),
        ("blur", "pipeline: expected a list of steps"),
    ],
)
def test_bad_pipelines_name_the_step(pipeline: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _job(pipeline=pipeline)


def test_plate_spec_converts_and_validates() -> None:
    spec = PlateSpec(plate_id="p", pipeline=[{"name": "blur"}], config_override={"x": 1})
    assert spec.pipeline == (PipelineStep(name="blur"),)
    with pytest.raises(ValueError, match=r"plate\.pipeline"):
        PlateSpec(plate_id="p", pipeline=[{"name": ""}])
    with pytest.raises(ValueError, match=r"plate\.plate_id"):
        PlateSpec(plate_id="", pipeline=[])
