"""A pipeline definition: a JSON list of `{"name": ..., "params": {...}}`, checked and bound.

Binding checks every step against the registry (known name, valid parameters, channels that
exist in the plate) and checks the data flow: a step that needs a mask or labels must come
after a step that gives them, and the pipeline must end with labelled objects (it counts
objects per well). Every error names the step's index and name (`pipeline[3]
(measure_objects)`), the parameter and the bad value.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from openhcs_workflow.pipeline.errors import PipelineError
from openhcs_workflow.pipeline.jsonio import JSONObject, JsonReader
from openhcs_workflow.pipeline.params import bind_params, check_params, params_to_json
from openhcs_workflow.pipeline.registry import StepRegistry, StepSpec
from openhcs_workflow.pipeline.state import FieldState, Product

__all__ = ["BoundStep", "StepCall", "bind_pipeline", "parse_pipeline"]

_READ = JsonReader(PipelineError)

#: What the state holds before the first step.
_INITIAL: frozenset[Product] = frozenset({"image"})
#: What a pipeline must leave behind: execution writes per-object results.
_REQUIRED_AT_END: Product = "labels"


@attrs.frozen(slots=True, kw_only=True)
class StepCall:
    """One step of a pipeline definition as written: a name and raw JSON parameters."""

    name: str
    params: Mapping[str, object] = attrs.field(factory=dict)


@attrs.frozen(slots=True, kw_only=True)
class BoundStep:
    """A validated step: its registered spec and its typed, defaulted parameters."""

    index: int
    spec: StepSpec[Any]
    params: Any

    @property
    def name(self) -> str:
        """The step's registered name."""
        return self.spec.name

    @property
    def where(self) -> str:
        """How errors name this step: `pipeline[2] (gaussian_smooth)`."""
        return f"pipeline[{self.index}] ({self.name})"

    def run(self, state: FieldState) -> FieldState:
        """Apply the step to one field's state."""
        result: FieldState = self.spec.run(state, self.params)
        return result

    def to_json(self) -> JSONObject:
        """`{"name": ..., "params": {...every parameter...}}`."""
        return {"name": self.name, "params": params_to_json(self.params)}


def parse_pipeline(value: object, where: str = "pipeline") -> tuple[StepCall, ...]:
    """Read a pipeline definition's JSON shape (names and parameter objects)."""
    calls = []
    for index, item in enumerate(_READ.items(value, where)):
        at = f"{where}[{index}]"
        step = _READ.obj(item, at, required=("name",), optional=("params",))
        name = _READ.text(step["name"], f"{at}.name")
        params = _READ.free_obj(step.get("params", {}), f"{at}.params")
        calls.append(StepCall(name=name, params=dict(params)))
    if not calls:
        raise PipelineError(f"{where}: the pipeline has no steps")
    return tuple(calls)


def bind_pipeline(
    calls: Sequence[StepCall],
    registry: StepRegistry,
    *,
    channels: Collection[int] | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    overrides_where: str = "config.step_overrides",
) -> tuple[BoundStep, ...]:
    """Check `calls` against `registry` (and the plate's `channels` when given) and bind them.

    `overrides` maps a step name to parameters replacing those of every step of that name.
    """
    if not calls:
        raise PipelineError("pipeline: the pipeline has no steps")
    specs = [registry.lookup(call.name, f"pipeline[{i}]") for i, call in enumerate(calls)]
    checked = _check_overrides(overrides or {}, specs, channels, overrides_where)
    bound = []
    available = set(_INITIAL)
    for index, (call, spec) in enumerate(zip(calls, specs, strict=True)):
        where = f"pipeline[{index}] ({spec.name})"
        params = bind_params(
            spec.params_type,
            {**call.params, **checked.get(spec.name, {})},
            where=where,
            channels=channels,
        )
        missing = sorted(spec.needs - available)
        if missing:
            raise PipelineError(
                f"{where}: needs {missing[0]}, which no earlier step gives "
                f"(add one of: {', '.join(registry.providers(missing[0]))} before it)"
            )
        available = (available - spec.clears) | spec.gives
        bound.append(BoundStep(index=index, spec=spec, params=params))
    if _REQUIRED_AT_END not in available:
        raise PipelineError(
            f"pipeline: the last steps leave no {_REQUIRED_AT_END} to count and measure "
            f"(end with one of: {', '.join(registry.providers(_REQUIRED_AT_END))})"
        )
    return tuple(bound)


def _check_overrides(
    overrides: Mapping[str, Mapping[str, object]],
    specs: Sequence[StepSpec[Any]],
    channels: Collection[int] | None,
    where: str,
) -> dict[str, dict[str, object]]:
    by_name = {spec.name: spec for spec in specs}
    checked: dict[str, dict[str, object]] = {}
    for name, params in overrides.items():
        spec = by_name.get(name)
        if spec is None:
            raise PipelineError(
                f"{where}: no step named {name!r} in the pipeline (steps: {', '.join(by_name)})"
            )
        values = check_params(spec.params_type, params, where=f"{where}.{name}", channels=channels)
        checked[name] = dict(values)
    return checked
