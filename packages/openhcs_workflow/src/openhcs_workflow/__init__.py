"""openhcs_workflow: plate batch workflow for high-content-screening GUIs.

One `BatchWorkflowService` owns compile-only and run batches for a host (a nominal `Host`
subclass), converges every plate to one terminal state through one funnel, and publishes
plate state and progress through a read-only `WorkflowView`. See docs/workflow.md.
"""

from openhcs_workflow.backend import (
    BackendEvent,
    BackendUnavailable,
    ExecutionNotFound,
    ExecutionUpdate,
    PipelineHandlers,
    Submission,
    SubmissionRejected,
    WorkflowBackend,
)
from openhcs_workflow.batch import (
    BatchBusyError,
    BatchKind,
    BatchReport,
    CompileFailurePolicy,
    PlateOutcome,
    PlateSpec,
)
from openhcs_workflow.batch_reset import progress_batch_reset
from openhcs_workflow.blocking import BlockingBatchWorkflowService
from openhcs_workflow.compile_job import CompileJob, PipelineStep, pipeline_from_json
from openhcs_workflow.config_resolver import PlateConfigSources, plate_config_resolver
from openhcs_workflow.host import Host
from openhcs_workflow.plate_labels import STATE_LABELS, plate_label
from openhcs_workflow.plate_record import CompiledPlate, PlateRecord
from openhcs_workflow.plate_state import PlateState
from openhcs_workflow.progress_projection import (
    PlateProgress,
    PlateProgressAccumulator,
    ProgressState,
)
from openhcs_workflow.service import BatchWorkflowService
from openhcs_workflow.status_presenter import ExecutionServerStatusPresenter, StatusSummary
from openhcs_workflow.workflow_state import Activity, WorkflowState, WorkflowView
from openhcs_workflow.zmq_backend import ZmqWorkflowBackend

__all__ = [
    "STATE_LABELS",
    "Activity",
    "BackendEvent",
    "BackendUnavailable",
    "BatchBusyError",
    "BatchKind",
    "BatchReport",
    "BatchWorkflowService",
    "BlockingBatchWorkflowService",
    "CompileFailurePolicy",
    "CompileJob",
    "CompiledPlate",
    "ExecutionNotFound",
    "ExecutionServerStatusPresenter",
    "ExecutionUpdate",
    "Host",
    "PipelineHandlers",
    "PipelineStep",
    "PlateConfigSources",
    "PlateOutcome",
    "PlateProgress",
    "PlateProgressAccumulator",
    "PlateRecord",
    "PlateSpec",
    "PlateState",
    "ProgressState",
    "StatusSummary",
    "Submission",
    "SubmissionRejected",
    "WorkflowBackend",
    "WorkflowState",
    "WorkflowView",
    "ZmqWorkflowBackend",
    "pipeline_from_json",
    "plate_config_resolver",
    "plate_label",
    "progress_batch_reset",
]
