"""What one plate's compile consists of, and the signature that decides artifact reuse."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from openhcs_workflow.json_value import JSONObject, canonical_json, json_object_copy

__all__ = ["CompileJob", "PipelineStep", "pipeline_from_json"]


def _step_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"step.{attribute.name}: expected a non-empty string, got {value!r}")


def _convert_params(value: object) -> JSONObject:
    return json_object_copy(value, "params")


def _convert_config(value: object) -> JSONObject:
    return json_object_copy(value, "config")


@attrs.frozen(kw_only=True)
class PipelineStep:
    """One pipeline step: the name of a function registered on the server, and its parameters."""

    name: str = attrs.field(validator=_step_name)
    params: JSONObject = attrs.field(factory=dict, converter=_convert_params)

    def to_json(self) -> JSONObject:
        """The step as sent to the server: `{"name": …, "params": {…}}`."""
        return {"name": self.name, "params": json_object_copy(self.params, "params")}


def pipeline_from_json(steps: object, path: str = "pipeline") -> tuple[PipelineStep, ...]:
    """Parse `[{"name": …, "params": {…}}, …]`; `ValueError` naming the bad step's path."""
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence):
        raise ValueError(f"{path}: expected a list of steps, got {steps!r}")
    parsed: list[PipelineStep] = []
    for i, step in enumerate(steps):
        where = f"{path}[{i}]"
        if isinstance(step, PipelineStep):
            parsed.append(step)
            continue
        if not isinstance(step, Mapping):
            raise ValueError(f"{where}: expected a step object, got {step!r}")
        unknown = set(step) - {"name", "params"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)!r}")
        name = step.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}.name: expected a non-empty string, got {name!r}")
        params = json_object_copy(step.get("params", {}), f"{where}.params")
        parsed.append(PipelineStep(name=name, params=params))
    return tuple(parsed)


def _plate_id(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name}: expected a non-empty string, got {value!r}")


@attrs.frozen(kw_only=True)
class CompileJob:
    """One plate's compile: the live pipeline definition and the config resolved for it.

    `signature` is a SHA-256 over plate id, pipeline and config in canonical JSON: equal
    signatures mean a compile artifact made from one job is valid for the other.
    """

    plate_id: str = attrs.field(validator=_plate_id)
    pipeline: tuple[PipelineStep, ...] = attrs.field(converter=pipeline_from_json)
    config: JSONObject = attrs.field(converter=_convert_config)
    signature: str = attrs.field(init=False)

    @signature.default
    def _signature(self) -> str:
        text = canonical_json(
            {
                "plate_id": self.plate_id,
                "pipeline": [step.to_json() for step in self.pipeline],
                "config": self.config,
            }
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def params(self) -> dict[str, Any]:
        """The handler parameters: `{"plate_id", "pipeline": [steps], "config": {…}}`."""
        return {
            "plate_id": self.plate_id,
            "pipeline": [step.to_json() for step in self.pipeline],
            "config": json_object_copy(self.config, "config"),
        }
