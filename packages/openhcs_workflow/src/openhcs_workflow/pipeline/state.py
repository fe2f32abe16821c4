"""The working state of one field of view as it flows through a pipeline's steps.

A step takes a `FieldState` and returns a new one (states are immutable; arrays are shared,
never modified in place). The state holds the raw channel images of the field, the working
image (initially the raw image of the segmentation channel), and what segmentation produced so
far: a foreground mask, an object label image, and a per-object measurement table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs
import numpy as np
from numpy.typing import NDArray

__all__ = ["FieldState", "FloatImage", "LabelImage", "Mask", "ObjectTable", "Product"]

FloatImage: TypeAlias = NDArray[np.float64]
Mask: TypeAlias = NDArray[np.bool_]
LabelImage: TypeAlias = NDArray[np.int32]

#: What a step may need from, or add to, the state (the working image is always present).
Product: TypeAlias = Literal["image", "mask", "labels", "objects"]


def _check(columns: Mapping[str, NDArray[Any]]) -> None:
    shapes = {name: column.shape for name, column in columns.items()}
    if len(set(shapes.values())) > 1 or any(len(shape) != 1 for shape in shapes.values()):
        raise ValueError(f"object table columns must be 1-D and of one length, got {shapes}")


@attrs.frozen(slots=True, kw_only=True, eq=False)
class ObjectTable:
    """Per-object measurements: named 1-D columns of equal length, row i = label i + 1."""

    columns: Mapping[str, NDArray[Any]] = attrs.field(validator=lambda _s, _a, v: _check(v))

    @property
    def rows(self) -> int:
        """The number of objects in the table."""
        return next((len(column) for column in self.columns.values()), 0)

    def with_columns(self, more: Mapping[str, NDArray[Any]]) -> ObjectTable:
        """A table with `more` columns added (replacing any of the same name)."""
        return ObjectTable(columns={**self.columns, **more})


@attrs.frozen(slots=True, kw_only=True, eq=False)
class FieldState:
    """One field of one well during a pipeline run."""

    well: str
    field: int
    #: The raw image of every channel of this field, as float64.
    raw: Mapping[int, FloatImage]
    #: The channel the working image was taken from.
    channel: int
    image: FloatImage
    mask: Mask | None = None
    labels: LabelImage | None = None
    objects: ObjectTable | None = None

    @classmethod
    def initial(
        cls, *, well: str, field: int, raw: Mapping[int, FloatImage], channel: int
    ) -> FieldState:
        """The state before the first step: the working image is `channel`'s raw image."""
        return cls(well=well, field=field, raw=raw, channel=channel, image=raw[channel])

    @property
    def object_count(self) -> int | None:
        """How many objects are labelled (None before any labelling step)."""
        return None if self.labels is None else int(self.labels.max(initial=0))

    def evolve(self, **changes: Any) -> FieldState:
        """A copy with `changes` applied (what steps return)."""
        return attrs.evolve(self, **changes)
