"""The per-plate run configuration: a small typed schema, read strictly from JSON.

```json
{"output_root": "/data/results", "channel": 1, "wells": ["A01", "B02"],
 "step_overrides": {"otsu_threshold": {"scale": 1.2}}}
```
- `output_root`: results go to `<output_root>/<plate name>_results` (default: next to the plate).
- `channel`: the segmentation channel the working image starts from (default: the lowest).
- `wells`: run only these wells (default: all, in plate order).
- `step_overrides`: parameters replacing those of every step of that name, e.g. a per-plate
  threshold tweak without editing the shared pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

import attrs

from openhcs_workflow.pipeline.errors import PipelineError
from openhcs_workflow.pipeline.jsonio import JSONObject, JsonReader, JSONValue

__all__ = ["RunConfig"]

_READ = JsonReader(PipelineError)


@attrs.frozen(slots=True, kw_only=True)
class RunConfig:
    """How one plate is run (see the module docstring for each field)."""

    output_root: str | None = None
    channel: int | None = None
    wells: tuple[str, ...] | None = None
    step_overrides: Mapping[str, Mapping[str, JSONValue]] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, value: object, where: str = "config") -> RunConfig:
        """Parse a config object (None or `{}` for the defaults); unknown fields are refused."""
        if value is None:
            return cls()
        doc = _READ.obj(
            value, where, optional=("output_root", "channel", "wells", "step_overrides")
        )
        output_root = doc.get("output_root")
        channel = doc.get("channel")
        wells = doc.get("wells")
        overrides: dict[str, Mapping[str, JSONValue]] = {}
        if doc.get("step_overrides") is not None:
            at = f"{where}.step_overrides"
            for name, params in _READ.free_obj(doc["step_overrides"], at).items():
                # values are JSON (they came from the wire); the step binder checks them
                overrides[name] = cast(
                    dict[str, JSONValue], dict(_READ.free_obj(params, f"{at}.{name}"))
                )
        return cls(
            output_root=None
            if output_root is None
            else _READ.text(output_root, f"{where}.output_root"),
            channel=None
            if channel is None
            else _READ.integer(channel, f"{where}.channel", minimum=0),
            wells=None if wells is None else _READ.texts(wells, f"{where}.wells"),
            step_overrides=overrides,
        )

    def to_json(self) -> JSONObject:
        """The config as JSON (fields left at their default are omitted)."""
        out: JSONObject = {}
        if self.output_root is not None:
            out["output_root"] = self.output_root
        if self.channel is not None:
            out["channel"] = self.channel
        if self.wells is not None:
            out["wells"] = list(self.wells)
        if self.step_overrides:
            out["step_overrides"] = {
                name: dict(params) for name, params in self.step_overrides.items()
            }
        return out

    def output_dir(self, plate_root: Path) -> Path:
        """Where this plate's results go: `<output_root>/<plate name>_results`."""
        root = plate_root.parent if self.output_root is None else Path(self.output_root)
        return (root / f"{plate_root.name}_results").absolute()
