"""Ready-made hosts: a terminal (`ConsoleHost`) and a Jupyter notebook (`NotebookHost`).

Both build on `BatchDisplayHost`, which turns the `Host` callbacks into rendering hooks and
reads plate rows (`PlateRow`, `BatchProgress`) from the service's view. Their optional
dependencies (tqdm, IPython) are imported when a host is created, not here.
"""

from openhcs_workflow.hosts.bars import TqdmBars, plate_detail
from openhcs_workflow.hosts.console import ConsoleHost
from openhcs_workflow.hosts.display import BatchDisplayHost, default_dispatcher
from openhcs_workflow.hosts.notebook import NotebookDispatcher, NotebookHost
from openhcs_workflow.hosts.rows import BatchProgress, PlateRow, batch_progress, plate_name

__all__ = [
    "BatchDisplayHost",
    "BatchProgress",
    "ConsoleHost",
    "NotebookDispatcher",
    "NotebookHost",
    "PlateRow",
    "TqdmBars",
    "batch_progress",
    "default_dispatcher",
    "plate_detail",
    "plate_name",
]
