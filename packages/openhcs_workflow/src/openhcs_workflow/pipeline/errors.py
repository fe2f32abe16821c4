"""The two kinds of bad input a plate run can meet, both `ValueError`s with precise messages."""

from __future__ import annotations

__all__ = ["PipelineError", "PlateError"]


class PipelineError(ValueError):
    """The pipeline definition, a step parameter, the run config or a compile artifact is wrong.

    The message names where (`pipeline[2] (gaussian_smooth): parameter 'sigma'`, `config.wells[0]`)
    and the bad value.
    """


class PlateError(ValueError):
    """A plate directory, its manifest or one of its images is missing, malformed or unreadable.

    The message names the file or directory.
    """
