"""Typed, JSON-serialisable step parameters: declared on attrs classes, validated strictly.

A step's parameters are an attrs class whose fields are declared with `float_param`,
`int_param`, `bool_param`, `choice_param` or `channel_param`. The class gives the step function
typed attributes; the field metadata gives a `ParamSpec` (kind, default, range, choices, doc)
that is shown to users as JSON and used to validate what arrives in a pipeline definition:
unknown parameter, wrong type, out of range, unknown channel all fail with the parameter's name
and the bad value.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal, TypeAlias, TypeVar

import attrs

from openhcs_workflow.pipeline.errors import PipelineError
from openhcs_workflow.pipeline.jsonio import JSONObject, JsonReader, describe

__all__ = [
    "ParamKind",
    "ParamSpec",
    "ParamValue",
    "bind_params",
    "bool_param",
    "channel_param",
    "check_params",
    "choice_param",
    "float_param",
    "int_param",
    "param_specs",
    "params_to_json",
]

ParamKind: TypeAlias = Literal["int", "float", "bool", "choice", "channel"]
ParamValue: TypeAlias = int | float | bool | str | None
P = TypeVar("P")

_SPEC_KEY = "openhcs_workflow.param"
_READ = JsonReader(PipelineError)


@attrs.frozen(slots=True, kw_only=True)
class ParamSpec:
    """One parameter of a step: what it accepts and what it defaults to.

    `required` parameters have no default. `channel` parameters name a plate channel (an
    integer, or null when `nullable`: "the channel being processed").
    """

    name: str
    kind: ParamKind
    doc: str
    default: ParamValue = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def to_json(self) -> JSONObject:
        """The spec as a JSON object (what a GUI needs to build an editor for it)."""
        out: JSONObject = {"name": self.name, "kind": self.kind, "doc": self.doc}
        if self.required:
            out["required"] = True
        else:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.choices:
            out["choices"] = list(self.choices)
        if self.nullable:
            out["nullable"] = True
        return out

    def coerce(self, value: object, where: str, channels: Collection[int] | None) -> ParamValue:
        """Validate one value for this parameter; `where` prefixes the error message.

        `channels` are the plate's channels, checked for `channel` parameters when given.
        """
        where = f"{where}: parameter {self.name!r}"
        if value is None and self.nullable:
            return None
        result: ParamValue
        if self.kind == "int":
            result = _READ.integer(value, where)
        elif self.kind == "float":
            result = _READ.number(value, where)
        elif self.kind == "bool":
            return _READ.boolean(value, where)
        elif self.kind == "choice":
            text = _READ.text(value, where)
            if text not in self.choices:
                raise PipelineError(
                    f"{where}: {describe(value)} is not one of {', '.join(self.choices)}"
                )
            return text
        else:
            channel = _READ.integer(value, where, minimum=0)
            if channels is not None and channel not in channels:
                known = ", ".join(str(c) for c in sorted(channels))
                raise PipelineError(
                    f"{where}: channel {channel} does not exist in the plate (channels: {known})"
                )
            return channel
        if self.minimum is not None and result < self.minimum:
            raise PipelineError(f"{where}: {result!r} is below the minimum {self.minimum!r}")
        if self.maximum is not None and result > self.maximum:
            raise PipelineError(f"{where}: {result!r} is above the maximum {self.maximum!r}")
        return result


def _field(spec: ParamSpec) -> Any:
    if spec.required:
        return attrs.field(metadata={_SPEC_KEY: spec})
    return attrs.field(default=spec.default, metadata={_SPEC_KEY: spec})


def float_param(
    default: float, *, doc: str, minimum: float | None = None, maximum: float | None = None
) -> Any:
    """Declare a float parameter (an integer in JSON is accepted and read as a float)."""
    return _field(
        ParamSpec(name="", kind="float", doc=doc, default=default, minimum=minimum, maximum=maximum)
    )


def int_param(
    default: int, *, doc: str, minimum: int | None = None, maximum: int | None = None
) -> Any:
    """Declare an integer parameter (1.0 and booleans are refused)."""
    return _field(
        ParamSpec(name="", kind="int", doc=doc, default=default, minimum=minimum, maximum=maximum)
    )


def bool_param(default: bool, *, doc: str) -> Any:
    """Declare a boolean parameter."""
    return _field(ParamSpec(name="", kind="bool", doc=doc, default=default))


def choice_param(default: str, *, choices: tuple[str, ...], doc: str) -> Any:
    """Declare a parameter taking one of a fixed set of strings."""
    if default not in choices:
        raise ValueError(f"default {default!r} is not among the choices {choices!r}")
    return _field(ParamSpec(name="", kind="choice", doc=doc, default=default, choices=choices))


def channel_param(*, doc: str, nullable: bool = False) -> Any:
    """Declare a plate channel parameter: required, or null by default when `nullable`."""
    return _field(
        ParamSpec(name="", kind="channel", doc=doc, required=not nullable, nullable=nullable)
    )


def param_specs(params_type: type[Any]) -> tuple[ParamSpec, ...]:
    """The specs of a parameter class, named after its fields, in declaration order."""
    specs = []
    for field in attrs.fields(params_type):
        spec = field.metadata.get(_SPEC_KEY)
        if not isinstance(spec, ParamSpec):
            raise TypeError(
                f"{params_type.__qualname__}.{field.name}: declare step parameters with "
                "float_param/int_param/bool_param/choice_param/channel_param"
            )
        specs.append(attrs.evolve(spec, name=field.name))
    return tuple(specs)


def check_params(
    params_type: type[Any],
    raw: Mapping[str, object],
    *,
    where: str,
    channels: Collection[int] | None = None,
) -> dict[str, ParamValue]:
    """Validate the parameters present in `raw` (no defaults, no required check)."""
    specs = {spec.name: spec for spec in param_specs(params_type)}
    values: dict[str, ParamValue] = {}
    for name, value in raw.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "none"
            raise PipelineError(f"{where}: unknown parameter {name!r} (parameters: {known})")
        values[name] = spec.coerce(value, where, channels)
    return values


def bind_params(
    params_type: type[P],
    raw: Mapping[str, object],
    *,
    where: str,
    channels: Collection[int] | None = None,
) -> P:
    """Validate raw JSON parameters against `params_type` and build it (defaults filled in)."""
    values = check_params(params_type, raw, where=where, channels=channels)
    for spec in param_specs(params_type):
        if spec.required and spec.name not in values:
            raise PipelineError(f"{where}: missing required parameter {spec.name!r}")
    return params_type(**values)


def params_to_json(params: object) -> JSONObject:
    """Every parameter of a bound parameter object, defaults included, as JSON."""
    out: JSONObject = {}
    for spec in param_specs(type(params)):
        value = getattr(params, spec.name)
        if not isinstance(value, int | float | str | None):
            raise TypeError(f"parameter {spec.name!r} holds a non-JSON value {value!r}")
        out[spec.name] = value
    return out
