"""The reference image steps, registered by name in `DEFAULT_REGISTRY`.

Filtering and labelling use `scipy.ndimage` (the `images` extra: `pip install
'openhcs_workflow[images]'`); Otsu's threshold and the per-object measurements are a few lines
of numpy. `default_pipeline()` counts and measures bright objects (nuclei) on the segmentation
channel:

    background_subtract → gaussian_smooth → otsu_threshold → label_objects → measure_objects
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from openhcs_workflow.pipeline.jsonio import JSONObject
from openhcs_workflow.pipeline.params import (
    bool_param,
    channel_param,
    choice_param,
    float_param,
    int_param,
)
from openhcs_workflow.pipeline.registry import StepRegistry
from openhcs_workflow.pipeline.state import FieldState, FloatImage, ObjectTable

__all__ = [
    "DEFAULT_REGISTRY",
    "BackgroundSubtractParams",
    "GaussianSmoothParams",
    "LabelObjectsParams",
    "MeasureObjectsParams",
    "OtsuThresholdParams",
    "SelectChannelParams",
    "default_pipeline",
    "otsu_level",
]

DEFAULT_REGISTRY = StepRegistry()


def _ndimage() -> Any:
    """`scipy.ndimage`, or an ImportError saying which extra provides it."""
    try:
        module: ModuleType = importlib.import_module("scipy.ndimage")
    except ImportError as exc:
        raise ImportError(
            "the reference image steps need scipy: pip install 'openhcs_workflow[images]'"
        ) from exc
    return module


@attrs.frozen(slots=True, kw_only=True)
class SelectChannelParams:
    """Parameters of `select_channel`."""

    channel: int = channel_param(doc="plate channel whose raw image becomes the working image")


@DEFAULT_REGISTRY.step("select_channel", params=SelectChannelParams, gives=("image",))
def select_channel(state: FieldState, p: SelectChannelParams) -> FieldState:
    """Make a channel's raw image the working image (mask and labels are kept)."""
    return state.evolve(channel=p.channel, image=state.raw[p.channel])


@attrs.frozen(slots=True, kw_only=True)
class BackgroundSubtractParams:
    """Parameters of `background_subtract`."""

    method: str = choice_param(
        "tophat",
        choices=("tophat", "gaussian"),
        doc="tophat: subtract a grey opening (rolling-ball-like); gaussian: subtract a blur",
    )
    radius: float = float_param(
        15.0,
        minimum=1.0,
        maximum=500.0,
        doc="background scale in pixels; larger than the largest object's radius",
    )


@DEFAULT_REGISTRY.step("background_subtract", params=BackgroundSubtractParams, gives=("image",))
def background_subtract(state: FieldState, p: BackgroundSubtractParams) -> FieldState:
    """Remove uneven illumination; negative values are clipped to zero."""
    ndi = _ndimage()
    if p.method == "tophat":
        size = 2 * round(p.radius) + 1
        background: FloatImage = ndi.grey_opening(state.image, size=(size, size))
    else:
        background = ndi.gaussian_filter(state.image, sigma=p.radius, mode="reflect")
    return state.evolve(image=np.clip(state.image - background, 0.0, None))


@attrs.frozen(slots=True, kw_only=True)
class GaussianSmoothParams:
    """Parameters of `gaussian_smooth`."""

    sigma: float = float_param(
        1.0, minimum=0.0, maximum=50.0, doc="standard deviation in pixels (0: no smoothing)"
    )


@DEFAULT_REGISTRY.step("gaussian_smooth", params=GaussianSmoothParams, gives=("image",))
def gaussian_smooth(state: FieldState, p: GaussianSmoothParams) -> FieldState:
    """Blur the working image to suppress pixel noise before thresholding."""
    if p.sigma == 0.0:
        return state
    image: FloatImage = _ndimage().gaussian_filter(state.image, sigma=p.sigma, mode="reflect")
    return state.evolve(image=image)


def otsu_level(image: NDArray[Any], bins: int = 256) -> float:
    """Otsu's threshold: the histogram split maximising the between-class variance.

    Returns the upper edge of the last background bin, so `image > level` is the foreground.
    A constant image returns its value (no foreground).
    """
    values = image.ravel()
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return high
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centers = (edges[:-1] + edges[1:]) / 2.0
    weight_below = np.cumsum(counts)[:-1].astype(np.float64)
    weight_above = float(values.size) - weight_below
    mass_below = np.cumsum(counts * centers)[:-1]
    mass_total = float(np.sum(counts * centers))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = mass_below / weight_below
        mean_above = (mass_total - mass_below) / weight_above
        between = weight_below * weight_above * (mean_below - mean_above) ** 2
    between[(weight_below == 0) | (weight_above == 0)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


@attrs.frozen(slots=True, kw_only=True)
class OtsuThresholdParams:
    """Parameters of `otsu_threshold`."""

    bins: int = int_param(256, minimum=2, maximum=65536, doc="histogram bins")
    scale: float = float_param(
        1.0, minimum=0.05, maximum=20.0, doc="multiplies the Otsu level (>1: stricter)"
    )
    noise_floor: float = float_param(
        0.0,
        minimum=0.0,
        maximum=100.0,
        doc="never threshold below median + noise_floor x robust noise sigma (1.4826 MAD); "
        "keeps empty fields empty (0: off)",
    )
    fill_holes: bool = bool_param(True, doc="fill holes inside foreground objects")


@DEFAULT_REGISTRY.step(
    "otsu_threshold",
    params=OtsuThresholdParams,
    gives=("mask",),
    clears=("labels", "objects"),
)
def otsu_threshold(state: FieldState, p: OtsuThresholdParams) -> FieldState:
    """Foreground mask: pixels above Otsu's level of the working image (times `scale`).

    Otsu always splits the histogram, so on a field without objects it splits the noise;
    `noise_floor` puts a lower bound on the level measured in robust noise units.
    """
    level = otsu_level(state.image, p.bins) * p.scale
    if p.noise_floor > 0.0:
        median = float(np.median(state.image))
        sigma = 1.4826 * float(np.median(np.abs(state.image - median)))
        level = max(level, median + p.noise_floor * sigma)
    mask = state.image > level
    if p.fill_holes:
        mask = np.asarray(_ndimage().binary_fill_holes(mask), dtype=np.bool_)
    return state.evolve(mask=mask, labels=None, objects=None)


@attrs.frozen(slots=True, kw_only=True)
class LabelObjectsParams:
    """Parameters of `label_objects`."""

    connectivity: int = int_param(
        1, minimum=1, maximum=2, doc="1: edge neighbours only; 2: diagonal neighbours too"
    )
    min_size: int = int_param(
        10, minimum=0, maximum=10**9, doc="objects smaller than this (pixels) are dropped"
    )


@DEFAULT_REGISTRY.step(
    "label_objects",
    params=LabelObjectsParams,
    needs=("mask",),
    gives=("labels",),
    clears=("objects",),
)
def label_objects(state: FieldState, p: LabelObjectsParams) -> FieldState:
    """Number the connected foreground regions 1..n, dropping the small ones."""
    assert state.mask is not None  # guaranteed by the pipeline's data-flow check
    ndi = _ndimage()
    structure = ndi.generate_binary_structure(2, p.connectivity)
    labels, count = ndi.label(state.mask, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= p.min_size
    keep[0] = False
    relabel = np.cumsum(keep, dtype=np.int32) * keep
    return state.evolve(labels=relabel[labels].astype(np.int32), objects=None)


@attrs.frozen(slots=True, kw_only=True)
class MeasureObjectsParams:
    """Parameters of `measure_objects`."""

    channel: int | None = channel_param(
        nullable=True,
        doc="channel whose raw intensities are measured (null: the working image's channel)",
    )


@DEFAULT_REGISTRY.step(
    "measure_objects", params=MeasureObjectsParams, needs=("labels",), gives=("objects",)
)
def measure_objects(state: FieldState, p: MeasureObjectsParams) -> FieldState:
    """Per object: area, centroid, and mean and total raw intensity in one channel.

    Intensity columns are named after the channel (`mean_intensity_c1`), so measuring
    several channels adds columns to one table.
    """
    assert state.labels is not None  # guaranteed by the pipeline's data-flow check
    channel = state.channel if p.channel is None else p.channel
    flat = state.labels.ravel()
    count = int(flat.max(initial=0))
    area = np.bincount(flat, minlength=count + 1)[1:].astype(np.int64)
    total = np.bincount(flat, weights=state.raw[channel].ravel(), minlength=count + 1)[1:]
    rows, cols = np.indices(state.labels.shape)
    safe_area = np.maximum(area, 1)
    table = state.objects
    if table is None:
        table = ObjectTable(
            columns={
                "area": area,
                "centroid_y": np.bincount(flat, weights=rows.ravel(), minlength=count + 1)[1:]
                / safe_area,
                "centroid_x": np.bincount(flat, weights=cols.ravel(), minlength=count + 1)[1:]
                / safe_area,
            }
        )
    table = table.with_columns(
        {f"mean_intensity_c{channel}": total / safe_area, f"total_intensity_c{channel}": total}
    )
    return state.evolve(objects=table)


def default_pipeline() -> list[JSONObject]:
    """A fresh copy of the reference pipeline: count and measure bright objects (nuclei).

    The threshold is half Otsu's level: with objects spanning a 5x brightness range, Otsu's
    level falls among the dim objects' intensities, while half of it stays far above the
    smoothed, background-subtracted noise. The 5-sigma noise floor keeps empty fields at zero
    objects (without it Otsu splits their noise into a few blobs); on synthetic fields 4
    sigma still let a false object through and 7 sigma began to lose dim cells in crowded
    fields, whose cells inflate the noise estimate.
    """
    return [
        {"name": "background_subtract", "params": {"method": "tophat", "radius": 15.0}},
        {"name": "gaussian_smooth", "params": {"sigma": 1.0}},
        {"name": "otsu_threshold", "params": {"scale": 0.5, "noise_floor": 5.0}},
        {"name": "label_objects", "params": {"min_size": 10}},
        {"name": "measure_objects", "params": {}},
    ]
