"""The image steps on synthetic fields, their parameter validation and the pipeline's data flow.

Accuracy tolerance: per field, |counted - planted| <= 1. The generator plants cells at least
5 px apart edge to edge, fully inside the image, with the dimmest cell ~20x above the noise, so
the reference pipeline is expected to count exactly; the one-object slack covers a single
merge of two bright neighbours through their blurred edges (seen once in ~3,900 cells when
the gap is narrowed to 4 px), not a systematic error. Over all fields together the counts
must agree within 1 %.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openhcs_workflow.pipeline import (
    DEFAULT_REGISTRY,
    FieldState,
    PipelineError,
    StepRegistry,
    bind_pipeline,
    default_pipeline,
    float_param,
    otsu_level,
    parse_pipeline,
    render_field,
)


def run_steps(pipeline: list[dict[str, Any]], raw: dict[int, Any], channel: int = 1) -> FieldState:
    steps = bind_pipeline(parse_pipeline(pipeline), DEFAULT_REGISTRY, channels=list(raw))
    state = FieldState.initial(
        well="A01",
        field=1,
        raw={c: np.asarray(image, dtype=np.float64) for c, image in raw.items()},
        channel=channel,
    )
    for step in steps:
        state = step.run(state)
    return state


def planted_label_hits(state: FieldState, cells: Any) -> tuple[int, int]:
    """(planted cells whose centre is unlabelled, planted cells sharing a label with another)."""
    assert state.labels is not None
    labels = [int(state.labels[round(c.y), round(c.x)]) for c in cells]
    found = [label for label in labels if label]
    return labels.count(0), len(found) - len(set(found))


@pytest.mark.parametrize("shape", [(128, 128), (256, 256)])
def test_counts_match_planted_cells_over_many_seeds(shape: tuple[int, int]) -> None:
    planted = counted = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        field = render_field(rng, shape=shape, cells=int(rng.integers(10, 41)))
        state = run_steps(default_pipeline(), {1: field.images[1]})
        assert state.object_count is not None
        assert abs(state.object_count - len(field.cells)) <= 1, (seed, state.object_count)
        missed, merged = planted_label_hits(state, field.cells)
        assert missed <= 1, (seed, missed)
        assert merged <= 1, (seed, merged)
        planted += len(field.cells)
        counted += state.object_count
    assert abs(counted - planted) <= 0.01 * planted


def test_plain_otsu_misses_dim_cells_that_half_otsu_finds() -> None:
    """Why the reference pipeline thresholds at half Otsu's level (and that `scale` works)."""
    rng = np.random.default_rng(7)
    field = render_field(rng, shape=(256, 256), cells=40)
    strict = default_pipeline()
    strict[2]["params"] = {"scale": 1.0}
    missed_strict, _ = planted_label_hits(run_steps(strict, {1: field.images[1]}), field.cells)
    missed_half, _ = planted_label_hits(
        run_steps(default_pipeline(), {1: field.images[1]}), field.cells
    )
    assert missed_strict > missed_half
    assert missed_half == 0


def test_empty_fields_count_zero_thanks_to_the_noise_floor() -> None:
    without_floor = default_pipeline()
    without_floor[2]["params"]["noise_floor"] = 0.0
    false_objects = 0
    for seed in range(6):
        field = render_field(np.random.default_rng(seed), shape=(128, 128), cells=0)
        assert run_steps(default_pipeline(), {1: field.images[1]}).object_count == 0
        count = run_steps(without_floor, {1: field.images[1]}).object_count
        false_objects += count or 0
    assert false_objects > 0  # plain Otsu splits the noise of an empty field


def test_otsu_level_splits_a_bimodal_histogram_between_its_modes() -> None:
    values = np.concatenate([np.full(900, 10.0), np.full(100, 90.0)])
    level = otsu_level(values, bins=64)
    assert 10.0 <= level < 90.0
    assert int(np.sum(values > level)) == 100
    assert otsu_level(np.full(16, 3.0)) == 3.0  # constant image: no foreground


def test_measure_objects_area_centroid_and_intensity_on_a_drawn_image() -> None:
    image = np.zeros((20, 30))
    image[2:6, 3:7] = 100.0  # 16 px, centroid (3.5, 4.5)
    image[10:13, 20:29] = 50.0  # 27 px, centroid (11, 24)
    second = np.where(image > 0, 7.0, 0.0)
    pipeline = [
        {"name": "otsu_threshold", "params": {"fill_holes": False}},
        {"name": "label_objects", "params": {"min_size": 1}},
        {"name": "measure_objects", "params": {}},
        {"name": "measure_objects", "params": {"channel": 2}},
    ]
    # Otsu on a three-level image puts the dim object in the background; scale it down.
    pipeline[0]["params"]["scale"] = 0.1
    state = run_steps(pipeline, {1: image, 2: second})
    assert state.object_count == 2
    assert state.objects is not None
    columns = {name: column.tolist() for name, column in state.objects.columns.items()}
    assert columns["area"] == [16, 27]
    assert columns["centroid_y"] == pytest.approx([3.5, 11.0])
    assert columns["centroid_x"] == pytest.approx([4.5, 24.0])
    assert columns["mean_intensity_c1"] == pytest.approx([100.0, 50.0])
    assert columns["total_intensity_c1"] == pytest.approx([1600.0, 1350.0])
    assert columns["mean_intensity_c2"] == pytest.approx([7.0, 7.0])


def test_min_size_drops_small_objects_and_relabels_consecutively() -> None:
    mask_image = np.zeros((10, 10))
    mask_image[0, 0] = 1.0  # 1 px
    mask_image[4:7, 4:7] = 1.0  # 9 px
    mask_image[9, 9] = 1.0  # 1 px
    state = run_steps(
        [
            {"name": "otsu_threshold", "params": {}},
            {"name": "label_objects", "params": {"min_size": 2}},
        ],
        {1: mask_image},
    )
    assert state.labels is not None
    assert sorted(np.unique(state.labels).tolist()) == [0, 1]
    assert int(np.sum(state.labels == 1)) == 9


@pytest.mark.parametrize(
    ("step", "params", "message"),
    [
        ("gaussian_smooth", {"sigma": -1.0}, "parameter 'sigma': -1.0 is below the minimum 0.0"),
        ("gaussian_smooth", {"sigma": 51}, "parameter 'sigma': 51.0 is above the maximum 50.0"),
        ("gaussian_smooth", {"sigma": True}, "parameter 'sigma': expected a number, got boolean"),
        ("gaussian_smooth", {"sigma": "2"}, "parameter 'sigma': expected a number, got string"),
        ("gaussian_smooth", {"sigma": float("nan")}, "parameter 'sigma': must be finite"),
        ("gaussian_smooth", {"radius": 2}, "unknown parameter 'radius' (parameters: sigma)"),
        ("label_objects", {"min_size": 2.0}, "parameter 'min_size': expected an integer, got"),
        ("label_objects", {"connectivity": 3}, "'connectivity': 3 is above the maximum 2"),
        ("background_subtract", {"method": "ball"}, "'method': string 'ball' is not one of"),
        ("otsu_threshold", {"fill_holes": 1}, "'fill_holes': expected a boolean, got integer"),
        ("select_channel", {}, "missing required parameter 'channel'"),
        ("select_channel", {"channel": 3}, "channel 3 does not exist in the plate (channels: 1)"),
        ("measure_objects", {"channel": -1}, "'channel': -1 is below the minimum 0"),
    ],
)
def test_bad_parameters_are_named_with_step_index_name_and_value(
    step: str, params: dict[str, Any], message: str
) -> None:
    pipeline = [
        {"name": "otsu_threshold"},
        {"name": "label_objects"},
        {"name": step, "params": params},
    ]
    with pytest.raises(PipelineError) as caught:
        bind_pipeline(parse_pipeline(pipeline), DEFAULT_REGISTRY, channels=[1])
    text = str(caught.value)
    assert text.startswith(f"pipeline[2] ({step}): "), text
    assert message in text, text


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ([], "pipeline: the pipeline has no steps"),
        ({"name": "x"}, "pipeline: expected a list, got object"),
        (["otsu_threshold"], "pipeline[0]: expected an object, got string"),
        ([{"params": {}}], "pipeline[0]: missing required field 'name'"),
        ([{"name": "a", "func": 1}], "pipeline[0]: unknown field 'func' (allowed: name, params)"),
        ([{"name": "a", "params": [1]}], "pipeline[0].params: expected an object, got list"),
        ([{"name": ""}], "pipeline[0].name: must not be empty"),
    ],
)
def test_malformed_pipeline_json_is_refused_with_its_path(pipeline: Any, message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(pipeline)
    assert str(caught.value).startswith(message), str(caught.value)


def test_unknown_step_is_named_with_a_suggestion() -> None:
    calls = parse_pipeline([{"name": "otsu_threshold"}, {"name": "gausian_smooth"}])
    with pytest.raises(PipelineError) as caught:
        bind_pipeline(calls, DEFAULT_REGISTRY)
    message = str(caught.value)
    assert message.startswith("pipeline[1]: unknown step 'gausian_smooth'")
    assert "did you mean 'gaussian_smooth'?" in message


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["label_objects"], "pipeline[0] (label_objects): needs mask, which no earlier step"),
        (
            ["otsu_threshold", "measure_objects"],
            "pipeline[1] (measure_objects): needs labels, which no earlier step gives "
            "(add one of: label_objects before it)",
        ),
        (
            ["otsu_threshold", "label_objects", "otsu_threshold"],
            "pipeline: the last steps leave no labels",
        ),
        (["gaussian_smooth"], "pipeline: the last steps leave no labels"),
    ],
)
def test_data_flow_errors_say_what_is_missing(names: list[str], message: str) -> None:
    with pytest.raises(PipelineError) as caught:
        bind_pipeline(parse_pipeline([{"name": n} for n in names]), DEFAULT_REGISTRY)
    assert str(caught.value).startswith(message), str(caught.value)


def test_step_overrides_replace_parameters_and_are_validated() -> None:
    calls = parse_pipeline(default_pipeline())
    bound = bind_pipeline(calls, DEFAULT_REGISTRY, overrides={"gaussian_smooth": {"sigma": 2.5}})
    assert bound[1].to_json() == {"name": "gaussian_smooth", "params": {"sigma": 2.5}}
    with pytest.raises(
        PipelineError,
        match=r"config\.step_overrides\.gaussian_smooth: "
        r"parameter 'sigma': -2\.0 is below the minimum",
    ):
        bind_pipeline(calls, DEFAULT_REGISTRY, overrides={"gaussian_smooth": {"sigma": -2.0}})
    with pytest.raises(PipelineError, match=r"no step named 'watershed' in the pipeline"):
        bind_pipeline(calls, DEFAULT_REGISTRY, overrides={"watershed": {}})


def test_bound_steps_carry_every_parameter_with_defaults() -> None:
    bound = bind_pipeline(parse_pipeline(default_pipeline()), DEFAULT_REGISTRY)
    assert [step.to_json() for step in bound] == [
        {"name": "background_subtract", "params": {"method": "tophat", "radius": 15.0}},
        {"name": "gaussian_smooth", "params": {"sigma": 1.0}},
        {
            "name": "otsu_threshold",
            "params": {"bins": 256, "scale": 0.5, "noise_floor": 5.0, "fill_holes": True},
        },
        {"name": "label_objects", "params": {"connectivity": 1, "min_size": 10}},
        {"name": "measure_objects", "params": {"channel": None}},
    ]


def test_registry_schema_is_json_with_types_defaults_and_ranges() -> None:
    schema = json.loads(json.dumps(DEFAULT_REGISTRY.schema(), allow_nan=False))
    by_name = {step["name"]: step for step in schema}
    assert list(by_name) == [
        "select_channel",
        "background_subtract",
        "gaussian_smooth",
        "otsu_threshold",
        "label_objects",
        "measure_objects",
    ]
    sigma = by_name["gaussian_smooth"]["params"][0]
    assert sigma == {
        "name": "sigma",
        "kind": "float",
        "doc": sigma["doc"],
        "default": 1.0,
        "minimum": 0.0,
        "maximum": 50.0,
    }
    assert by_name["select_channel"]["params"][0]["required"] is True
    assert by_name["background_subtract"]["params"][0]["choices"] == ["tophat", "gaussian"]
    assert by_name["measure_objects"]["needs"] == ["labels"]
    assert all(step["doc"] for step in schema)


@attrs.frozen(kw_only=True)
class _GainParams:
    gain: float = float_param(2.0, minimum=0.0, doc="multiplier")


def test_a_custom_registry_runs_its_own_steps_and_refuses_duplicates() -> None:
    registry = StepRegistry(
        [DEFAULT_REGISTRY.lookup(name, "x") for name in ("otsu_threshold", "label_objects")]
    )

    @registry.step("gain", params=_GainParams, gives=("image",))
    def gain(state: FieldState, p: _GainParams) -> FieldState:
        """Multiply the working image."""
        return state.evolve(image=state.image * p.gain)

    with pytest.raises(ValueError, match="a step named 'otsu_threshold' is already registered"):
        registry.register(DEFAULT_REGISTRY.lookup("otsu_threshold", "x"))
    pipeline = [
        {"name": "gain", "params": {"gain": 3}},
        {"name": "otsu_threshold"},
        {"name": "label_objects"},
    ]
    bound = bind_pipeline(parse_pipeline(pipeline), registry)
    assert bound[0].to_json() == {"name": "gain", "params": {"gain": 3.0}}
    state = FieldState.initial(well="A01", field=1, raw={1: np.ones((4, 4))}, channel=1)
    assert np.all(bound[0].run(state).image == 3.0)
    with pytest.raises(PipelineError, match=r"pipeline\[0\]: unknown step 'gaussian_smooth'"):
        bind_pipeline(parse_pipeline([{"name": "gaussian_smooth"}]), registry)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)


@settings(max_examples=150)
@given(data=st.data(), value=JSON_VALUES)
def test_any_json_value_for_any_parameter_is_accepted_or_named(data: Any, value: Any) -> None:
    spec = data.draw(st.sampled_from([DEFAULT_REGISTRY.lookup(n, "x") for n in DEFAULT_REGISTRY]))
    names = [p.name for p in spec.params]
    name = data.draw(st.sampled_from(names) | st.text(min_size=1, max_size=4))
    # The step under test sits at index 2; the pipeline ends in labels whatever it clears.
    pipeline = [{"name": "otsu_threshold"}, {"name": "label_objects"}]
    pipeline.append({"name": spec.name, "params": {name: value}})
    pipeline += [{"name": "otsu_threshold"}, {"name": "label_objects"}]
    try:
        bound = bind_pipeline(parse_pipeline(pipeline), DEFAULT_REGISTRY, channels=[1, 2])
    except PipelineError as exc:
        message = str(exc)
    else:
        assert name in names
        kept = bound[2].to_json()["params"][name]
        assert kept == value
        assert type(kept) is type(value) or (type(kept), type(value)) == (float, int)
        return
    assert message.startswith(f"pipeline[2] ({spec.name}): "), message
    assert repr(name) in message, message
