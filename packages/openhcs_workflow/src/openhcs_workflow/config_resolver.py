"""Which config a plate runs with: its override, else its saved config, else the global default.

The order is per field, and nested objects are layered the same way: a per-plate override that
sets one field keeps every other field of the saved config, and fields set nowhere come from the
global default. The default is also the schema: a field it does not have, or a value of another
JSON kind (a bool where the default holds a number, an object where it holds a string), is
refused with the field path and the bad value. An integer is accepted where the default holds a
float; a `null` default accepts any value.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from openhcs_workflow.json_value import JSONObject, JSONValue, json_object_copy

__all__ = ["PlateConfigSources", "plate_config_resolver"]


def _kind(value: JSONValue) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def _layer(base: JSONObject, layer: JSONObject, path: str) -> JSONObject:
    """`base` with `layer`'s fields applied on top, each checked against `base`'s field kind."""
    merged = dict(base)
    for key, value in layer.items():
        where = f"{path}.{key}"
        if key not in base:
            raise ValueError(f"{where}: unknown config field (value {value!r})")
        current = base[key]
        if current is None:
            merged[key] = value
        elif isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _layer(current, value, where)
        elif _kind(current) != _kind(value):
            kind = _kind(current)
            article = "an" if kind[0] in "aeiou" else "a"
            raise ValueError(f"{where}: expected {article} {kind}, got {value!r}")
        else:
            merged[key] = value
    return merged


def plate_config_resolver(
    plate_id: str,
    *,
    default: Mapping[str, object],
    saved: Mapping[str, object] | None = None,
    override: Mapping[str, object] | None = None,
) -> JSONObject:
    """The config for `plate_id`: per field, `override` ▸ `saved` ▸ `default` (a fresh copy)."""
    resolved = json_object_copy(default, "config.default")
    if saved is not None:
        resolved = _layer(resolved, json_object_copy(saved, f"config.saved[{plate_id}]"), "config")
    if override is not None:
        resolved = _layer(
            resolved, json_object_copy(override, f"config.override[{plate_id}]"), "config"
        )
    return resolved


def _convert_default(value: object) -> JSONObject:
    return json_object_copy(value, "config.default")


def _convert_saved(value: object) -> dict[str, JSONObject]:
    if not isinstance(value, Mapping):
        raise ValueError(f"config.saved: expected a mapping of plate id to config, got {value!r}")
    return {str(k): json_object_copy(v, f"config.saved[{k}]") for k, v in value.items()}


@attrs.frozen(kw_only=True)
class PlateConfigSources:
    """The global default and the plates' saved configs the service resolves against."""

    default: JSONObject = attrs.field(factory=dict, converter=_convert_default)
    saved: dict[str, JSONObject] = attrs.field(factory=dict, converter=_convert_saved)

    def resolve(self, plate_id: str, override: Mapping[str, object] | None = None) -> JSONObject:
        """`plate_config_resolver` for one plate with these sources."""
        return plate_config_resolver(
            plate_id, default=self.default, saved=self.saved.get(plate_id), override=override
        )

    def with_saved(self, plate_id: str, config: Mapping[str, object]) -> PlateConfigSources:
        """A copy with `plate_id`'s saved config replaced (validated now, not at compile)."""
        plate_config_resolver(plate_id, default=self.default, saved=config)
        return attrs.evolve(self, saved={**self.saved, plate_id: config})
