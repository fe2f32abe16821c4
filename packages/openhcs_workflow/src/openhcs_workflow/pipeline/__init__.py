"""The reference plate pipeline: numpy image steps, plates on disk, compile, execute, handlers.

- `steps` / `registry` / `params`: image steps registered by name with typed JSON parameters
  (`DEFAULT_REGISTRY`, `default_pipeline()`).
- `plate_format`: a plate is `<plate>/<well>/f<field>_c<channel>.npy` (+ optional `plate.json`).
- `synthetic`: seeded synthetic plates with known object counts.
- `compile_plan` / `execute`: `compile_plate` → `CompiledPlate` artifact → `execute_plate`.
- `handlers`: `HANDLERS` for the execution server (`compile`, `execute`).

The steps need scipy (`pip install 'openhcs_workflow[images]'`); importing this package does
not.
"""

from openhcs_workflow.pipeline.compile_plan import CompiledPlate, compile_plate
from openhcs_workflow.pipeline.config import RunConfig
from openhcs_workflow.pipeline.context import (
    HandlerContext,
    LocalContext,
    PlateRunCancelled,
    ProgressEvent,
    ProgressSink,
)
from openhcs_workflow.pipeline.definition import BoundStep, StepCall, bind_pipeline, parse_pipeline
from openhcs_workflow.pipeline.errors import PipelineError, PlateError
from openhcs_workflow.pipeline.execute import execute_plate, run_plate
from openhcs_workflow.pipeline.params import (
    ParamSpec,
    bool_param,
    channel_param,
    choice_param,
    float_param,
    int_param,
)
from openhcs_workflow.pipeline.plate_format import (
    PlateLayout,
    PlateManifest,
    discover_plate,
    read_image,
)
from openhcs_workflow.pipeline.registry import StepRegistry, StepSpec
from openhcs_workflow.pipeline.state import FieldState, ObjectTable
from openhcs_workflow.pipeline.steps import DEFAULT_REGISTRY, default_pipeline, otsu_level
from openhcs_workflow.pipeline.synthetic import (
    PlantedCell,
    SyntheticField,
    generate_plate,
    generate_plates,
    render_field,
    well_names,
)

__all__ = [
    "DEFAULT_REGISTRY",
    "BoundStep",
    "CompiledPlate",
    "FieldState",
    "HandlerContext",
    "LocalContext",
    "ObjectTable",
    "ParamSpec",
    "PipelineError",
    "PlantedCell",
    "PlateError",
    "PlateLayout",
    "PlateManifest",
    "PlateRunCancelled",
    "ProgressEvent",
    "ProgressSink",
    "RunConfig",
    "StepCall",
    "StepRegistry",
    "StepSpec",
    "SyntheticField",
    "bind_pipeline",
    "bool_param",
    "channel_param",
    "choice_param",
    "compile_plate",
    "default_pipeline",
    "discover_plate",
    "execute_plate",
    "float_param",
    "generate_plate",
    "generate_plates",
    "int_param",
    "otsu_level",
    "parse_pipeline",
    "read_image",
    "render_field",
    "run_plate",
    "well_names",
]
