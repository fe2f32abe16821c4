"""Compile: check a pipeline against the registry and a plate, and freeze what execution needs.

`compile_plate` checks, in order: the pipeline's JSON shape, its step names and parameters, the
run config, the plate's layout (and manifest), the channels the steps and config name, the
selected wells, and every image header of those wells. Its result, `CompiledPlate`, is the
artifact: a JSON object the server keeps and hands to the `execute` handler, carrying the
validated and defaulted steps, the wells, fields and channels, the output directory and a
signature (SHA-256 over the rest of the artifact) that execution verifies, so an artifact
edited or mixed up in transit is refused instead of half-run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from openhcs_workflow.pipeline.config import RunConfig
from openhcs_workflow.pipeline.definition import BoundStep, bind_pipeline, parse_pipeline
from openhcs_workflow.pipeline.errors import PipelineError
from openhcs_workflow.pipeline.jsonio import JSONObject, JsonReader, canonical_hash
from openhcs_workflow.pipeline.plate_format import PlateLayout, check_images, discover_plate
from openhcs_workflow.pipeline.registry import StepRegistry
from openhcs_workflow.pipeline.steps import DEFAULT_REGISTRY

__all__ = ["ARTIFACT_KIND", "CompiledPlate", "compile_plate"]

ARTIFACT_KIND = "openhcs_workflow.compiled_plate"
ARTIFACT_VERSION = 1
_READ = JsonReader(PipelineError)
_FIELDS = (
    "kind",
    "version",
    "plate_id",
    "plate_dir",
    "extension",
    "wells",
    "fields",
    "channels",
    "channel",
    "steps",
    "output_dir",
    "planted",
    "signature",
)


@attrs.frozen(slots=True, kw_only=True)
class CompiledPlate:
    """The compile artifact of one plate: everything execution needs, validated."""

    plate_id: str
    plate_dir: str
    extension: str
    wells: tuple[str, ...]
    fields: tuple[int, ...]
    channels: tuple[int, ...]
    #: The segmentation channel each field's working image starts from.
    channel: int
    #: Validated steps with every parameter filled in.
    steps: tuple[BoundStep, ...]
    output_dir: str
    #: Objects planted per well (synthetic plates), to compare counts against.
    planted: Mapping[str, int] | None
    signature: str = ""

    @property
    def plate_name(self) -> str:
        """The plate directory's name."""
        return Path(self.plate_dir).name

    @property
    def step_names(self) -> tuple[str, ...]:
        """The steps' names, in order."""
        return tuple(step.name for step in self.steps)

    def layout(self) -> PlateLayout:
        """The plate layout the artifact was compiled against (manifest not re-read)."""
        return PlateLayout(
            root=Path(self.plate_dir),
            wells=self.wells,
            fields=self.fields,
            channels=self.channels,
            extension=self.extension,
        )

    def _content(self) -> JSONObject:
        return {
            "kind": ARTIFACT_KIND,
            "version": ARTIFACT_VERSION,
            "plate_id": self.plate_id,
            "plate_dir": self.plate_dir,
            "extension": self.extension,
            "wells": list(self.wells),
            "fields": list(self.fields),
            "channels": list(self.channels),
            "channel": self.channel,
            "steps": [step.to_json() for step in self.steps],
            "output_dir": self.output_dir,
            "planted": None if self.planted is None else dict(self.planted),
        }

    def signed(self) -> CompiledPlate:
        """This artifact with its signature computed."""
        return attrs.evolve(self, signature=canonical_hash(self._content()))

    def to_json(self) -> JSONObject:
        """The artifact as the JSON object the server stores."""
        return {**self._content(), "signature": self.signature}

    @classmethod
    def from_json(
        cls, value: object, where: str = "artifact", *, registry: StepRegistry = DEFAULT_REGISTRY
    ) -> CompiledPlate:
        """Parse an artifact strictly, verify its signature, bind its steps to `registry`.

        Binding again matters: the worker that executes may be another process (or another
        version) than the one that compiled.
        """
        doc = _READ.obj(value, where, required=_FIELDS)
        if doc["kind"] != ARTIFACT_KIND:
            raise PipelineError(
                f"{where}.kind: expected {ARTIFACT_KIND!r}, got {doc['kind']!r} "
                "(not a plate compile artifact)"
            )
        version = _READ.integer(doc["version"], f"{where}.version")
        if version != ARTIFACT_VERSION:
            raise PipelineError(f"{where}.version: unsupported artifact version {version}")
        channels = _READ.integers(doc["channels"], f"{where}.channels", minimum=0)
        calls = parse_pipeline(doc["steps"], f"{where}.steps")
        steps = bind_pipeline(calls, registry, channels=channels)
        planted = None
        if doc["planted"] is not None:
            planted = {
                well: _READ.integer(count, f"{where}.planted.{well}", minimum=0)
                for well, count in _READ.free_obj(doc["planted"], f"{where}.planted").items()
            }
        artifact = cls(
            plate_id=_READ.text(doc["plate_id"], f"{where}.plate_id"),
            plate_dir=_READ.text(doc["plate_dir"], f"{where}.plate_dir"),
            extension=_READ.text(doc["extension"], f"{where}.extension"),
            wells=_READ.texts(doc["wells"], f"{where}.wells"),
            fields=_READ.integers(doc["fields"], f"{where}.fields", minimum=0),
            channels=channels,
            channel=_READ.integer(doc["channel"], f"{where}.channel", minimum=0),
            steps=steps,
            output_dir=_READ.text(doc["output_dir"], f"{where}.output_dir"),
            planted=planted,
            signature=_READ.text(doc["signature"], f"{where}.signature"),
        )
        if artifact.signed().signature != artifact.signature:
            raise PipelineError(
                f"{where}.signature: does not match the artifact's content "
                "(edited or corrupted after compile); compile the plate again"
            )
        return artifact


def compile_plate(
    plate_dir: str | os.PathLike[str],
    pipeline: object,
    config: RunConfig | Mapping[str, Any] | None = None,
    *,
    plate_id: str | None = None,
    registry: StepRegistry = DEFAULT_REGISTRY,
    on_well: Callable[[int, str], None] | None = None,
) -> CompiledPlate:
    """Validate `pipeline` (a JSON list of steps) against `registry` and the plate, and
    return the signed artifact.

    `plate_id` (default: `plate_dir` as given) is the id progress and results carry.
    `on_well(index, well)` is called as each well's images are checked. Raises
    `PipelineError` for the pipeline and config, `PlateError` for the plate and its images.
    """
    calls = parse_pipeline(pipeline)
    bind_pipeline(calls, registry)  # step names and parameters, before touching the plate
    run_config = config if isinstance(config, RunConfig) else RunConfig.from_json(config)
    layout = discover_plate(plate_dir)
    channel = layout.channels[0] if run_config.channel is None else run_config.channel
    if channel not in layout.channels:
        raise PipelineError(
            f"config.channel: channel {channel} does not exist in the plate "
            f"(channels: {', '.join(map(str, layout.channels))})"
        )
    steps = bind_pipeline(
        calls, registry, channels=layout.channels, overrides=run_config.step_overrides
    )
    wells = _select_wells(layout, run_config.wells)
    check_images(layout, wells, on_well)
    output_dir = run_config.output_dir(layout.root)
    if output_dir.exists() and not output_dir.is_dir():
        raise PipelineError(f"config.output_root: {output_dir} exists and is not a directory")
    planted = {well: layout.planted(well) for well in wells}
    return CompiledPlate(
        plate_id=str(plate_dir) if plate_id is None else plate_id,
        plate_dir=str(layout.root),
        extension=layout.extension,
        wells=wells,
        fields=layout.fields,
        channels=layout.channels,
        channel=channel,
        steps=steps,
        output_dir=str(output_dir),
        planted=None
        if any(count is None for count in planted.values())
        else {well: count for well, count in planted.items() if count is not None},
    ).signed()


def _select_wells(layout: PlateLayout, selected: tuple[str, ...] | None) -> tuple[str, ...]:
    if selected is None:
        return layout.wells
    for index, well in enumerate(selected):
        if well not in layout.wells:
            raise PipelineError(
                f"config.wells[{index}]: no well {well!r} in plate {layout.root} "
                f"(wells: {_summarise(layout.wells)})"
            )
    if not selected:
        raise PipelineError("config.wells: must name at least one well (or be omitted)")
    return tuple(well for well in layout.wells if well in selected)


def _summarise(wells: tuple[str, ...]) -> str:
    return ", ".join(wells) if len(wells) <= 8 else f"{', '.join(wells[:6])}, ... {wells[-1]}"
