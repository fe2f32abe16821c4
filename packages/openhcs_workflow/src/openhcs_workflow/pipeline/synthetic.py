"""Seeded synthetic plates: noisy cells of varied size and brightness on an uneven background.

Each field holds a known number of elliptical "nuclei" (random size, elongation, orientation,
brightness over a 5x range, texture, soft edges) placed without overlap, `gap` pixels apart at
least (edge to edge along the major axes), and fully inside the image, so the number of objects
a segmentation should find is exactly the number planted. (At the default 5 px the reference
pipeline finds exactly the planted cells on 300 test fields; at 3 px a few bright neighbours
merge through their blurred edges.) The background is uneven (vignetting, a tilt, broad
blobs) and the image gets shot noise plus Gaussian read noise, stored as uint16. Extra
channels show the same cells with a random per-cell expression level over a dimmer
background.

Every image is a function of `(seed, well name, field)` alone: generating wells A01..A10 gives
the same A01 as generating all 96. The planted counts go into the plate's `plate.json`.
Only numpy is needed (TIFF output needs tifffile).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from openhcs_workflow.pipeline.jsonio import JSONObject
from openhcs_workflow.pipeline.plate_format import (
    IMAGE_EXTENSIONS,
    PlateLayout,
    PlateManifest,
    image_name,
    write_manifest,
)

__all__ = [
    "PlantedCell",
    "SyntheticField",
    "generate_plate",
    "generate_plates",
    "render_field",
    "well_names",
]

_MAX_UINT16 = float(np.iinfo(np.uint16).max)


@attrs.frozen(slots=True, kw_only=True)
class PlantedCell:
    """One planted object: centre (row, column), semi-axes, orientation, peak brightness."""

    y: float
    x: float
    radius_major: float
    radius_minor: float
    angle: float
    brightness: float


@attrs.frozen(slots=True, kw_only=True, eq=False)
class SyntheticField:
    """One rendered field: its channel images and the cells planted in it."""

    images: Mapping[int, NDArray[np.uint16]]
    cells: tuple[PlantedCell, ...]


def well_names(count: int) -> tuple[str, ...]:
    """The first `count` wells of a 96-well (up to 96) or 384-well plate, row by row."""
    if count < 1:
        raise ValueError(f"wells: need at least 1 well, got {count}")
    if count <= 96:
        rows, cols = 8, 12
    elif count <= 384:
        rows, cols = 16, 24
    else:
        raise ValueError(f"wells: at most 384 wells are generated, got {count}")
    names = [f"{chr(ord('A') + r)}{c + 1:02d}" for r in range(rows) for c in range(cols)]
    return tuple(names[:count])


def _field_rng(seed: int, well: str, field: int) -> np.random.Generator:
    return np.random.default_rng([seed, field, *well.encode("utf-8")])


def _place_cells(
    rng: np.random.Generator,
    shape: tuple[int, int],
    count: int,
    radius: tuple[float, float],
    gap: float,
) -> list[tuple[float, float, float, float, float]]:
    """Rejection-sample non-overlapping ellipses: (y, x, major, minor, angle)."""
    height, width = shape
    placed: list[tuple[float, float, float, float, float]] = []
    centres = np.empty((count, 3))  # y, x, major radius of the placed cells
    for _ in range(count * 50):
        if len(placed) == count:
            break
        major = float(rng.uniform(*radius))
        margin = major + 2.0
        y = float(rng.uniform(margin, height - margin))
        x = float(rng.uniform(margin, width - margin))
        done = centres[: len(placed)]
        distance = np.hypot(done[:, 0] - y, done[:, 1] - x)
        if np.any(distance < done[:, 2] + major + gap):
            continue
        minor = major * float(rng.uniform(0.65, 1.0))
        centres[len(placed)] = (y, x, major)
        placed.append((y, x, major, minor, float(rng.uniform(0.0, math.pi))))
    return placed


def _background(rng: np.random.Generator, shape: tuple[int, int], level: float) -> NDArray[Any]:
    """Smooth uneven illumination: vignetting, a tilt and two broad blobs."""
    rows = np.linspace(-1.0, 1.0, shape[0])[:, None]
    cols = np.linspace(-1.0, 1.0, shape[1])[None, :]
    tilt_y, tilt_x = rng.uniform(-0.25, 0.25, size=2)
    surface = 1.0 - 0.25 * (rows**2 + cols**2) + tilt_y * rows + tilt_x * cols
    for _ in range(2):
        cy, cx = rng.uniform(-1.0, 1.0, size=2)
        spread = float(rng.uniform(0.3, 0.7))
        amplitude = float(rng.uniform(0.1, 0.35))
        surface = surface + amplitude * (
            np.exp(-((rows - cy) ** 2) / (2 * spread**2))
            * np.exp(-((cols - cx) ** 2) / (2 * spread**2))
        )
    result: NDArray[Any] = level * surface
    return result


def _stamp(
    image: NDArray[Any],
    rng: np.random.Generator,
    cell: tuple[float, float, float, float, float],
    brightness: float,
) -> None:
    """Add one soft-edged, domed, textured ellipse to `image` in place."""
    y, x, major, minor, angle = cell
    reach = major + 3.0
    top, bottom = max(0, int(y - reach)), min(image.shape[0], int(y + reach) + 2)
    left, right = max(0, int(x - reach)), min(image.shape[1], int(x + reach) + 2)
    dy = np.arange(top, bottom, dtype=np.float64)[:, None] - y
    dx = np.arange(left, right, dtype=np.float64)[None, :] - x
    cos, sin = math.cos(angle), math.sin(angle)
    along = dx * cos + dy * sin
    across = dy * cos - dx * sin
    rho = np.sqrt((along / major) ** 2 + (across / minor) ** 2)
    edge = 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) * minor / 0.7, -50.0, 50.0)))
    dome = np.clip(1.0 - 0.3 * rho**2, 0.0, None)
    texture = 1.0 + 0.08 * rng.standard_normal(rho.shape)
    image[top:bottom, left:right] += brightness * edge * dome * texture


def render_field(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int] = (256, 256),
    channels: Sequence[int] = (1,),
    cells: int = 25,
    cell_radius: tuple[float, float] = (4.0, 9.0),
    brightness: tuple[float, float] = (300.0, 1500.0),
    background: float = 200.0,
    noise: float = 8.0,
    gap: float = 5.0,
) -> SyntheticField:
    """Render one field: up to `cells` cells (fewer if they do not fit) in every channel.

    The first channel is the nuclear stain the reference pipeline segments; the others show
    the same cells at a random per-cell expression level over half the background.
    """
    if min(shape) < 4 * cell_radius[1] + 4:
        raise ValueError(f"shape {shape} is too small for cells of radius up to {cell_radius[1]}")
    placed = _place_cells(rng, shape, cells, cell_radius, gap)
    peaks = rng.uniform(*brightness, size=len(placed))
    images: dict[int, NDArray[np.uint16]] = {}
    for index, channel in enumerate(channels):
        level = background if index == 0 else background / 2.0
        scale = peaks if index == 0 else peaks * rng.lognormal(-0.5, 0.5, size=len(placed))
        expected = _background(rng, shape, level)
        for cell, peak in zip(placed, scale, strict=True):
            _stamp(expected, rng, cell, float(peak))
        # shot noise (Poisson, in its Gaussian form: every mean is >= ~50 counts) + read noise
        spread = np.sqrt(np.clip(expected, 0.0, None) + noise**2)
        counts = expected + spread * rng.standard_normal(size=shape)
        images[channel] = np.clip(np.rint(counts), 0.0, _MAX_UINT16).astype(np.uint16)
    planted = tuple(
        PlantedCell(
            y=y, x=x, radius_major=major, radius_minor=minor, angle=angle, brightness=float(peak)
        )
        for (y, x, major, minor, angle), peak in zip(placed, peaks, strict=True)
    )
    return SyntheticField(images=images, cells=planted)


def _save(path: Path, image: NDArray[np.uint16]) -> None:
    if path.suffix == ".npy":
        np.save(path, image, allow_pickle=False)
    else:
        try:
            tifffile: Any = importlib.import_module("tifffile")
        except ImportError as exc:
            raise ImportError(
                "writing TIFF plates needs tifffile: pip install 'openhcs_workflow[images]'"
            ) from exc
        tifffile.imwrite(path, image)


def generate_plate(
    path: str | os.PathLike[str],
    *,
    wells: int | Sequence[str] = 96,
    fields: int = 1,
    channels: int = 1,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    cells_per_field: tuple[int, int] = (10, 40),
    cell_radius: tuple[float, float] = (4.0, 9.0),
    brightness: tuple[float, float] = (300.0, 1500.0),
    background: float = 200.0,
    noise: float = 8.0,
    gap: float = 5.0,
    extension: str = "npy",
    exist_ok: bool = False,
) -> PlateLayout:
    """Write a synthetic plate to `path` (fields and channels numbered from 1).

    `wells` is a count (A01, A02, ... row by row) or explicit well names. Each field gets a
    cell count drawn uniformly from `cells_per_field`; what was actually placed is recorded
    in `plate.json`. Refuses a non-empty existing directory unless `exist_ok`.
    """
    root = Path(path).absolute()
    names = well_names(wells) if isinstance(wells, int) else tuple(wells)
    _check_arguments(root, names, fields, channels, seed, cells_per_field, extension, exist_ok)
    field_ids = tuple(range(1, fields + 1))
    channel_ids = tuple(range(1, channels + 1))
    planted: dict[str, dict[int, int]] = {}
    for well in names:
        (root / well).mkdir(parents=True, exist_ok=True)
        planted[well] = {}
        for field in field_ids:
            rng = _field_rng(seed, well, field)
            rendered = render_field(
                rng,
                shape=shape,
                channels=channel_ids,
                cells=int(rng.integers(cells_per_field[0], cells_per_field[1] + 1)),
                cell_radius=cell_radius,
                brightness=brightness,
                background=background,
                noise=noise,
                gap=gap,
            )
            for channel, image in rendered.images.items():
                _save(root / well / image_name(field, channel, extension), image)
            planted[well][field] = len(rendered.cells)
    generator: JSONObject = {
        "name": "openhcs_workflow.pipeline.synthetic",
        "seed": seed,
        "cells_per_field": list(cells_per_field),
        "cell_radius": list(cell_radius),
        "brightness": list(brightness),
        "background": background,
        "noise": noise,
        "gap": gap,
    }
    manifest = PlateManifest(
        wells=names,
        fields=field_ids,
        channels=channel_ids,
        extension=extension,
        shape=shape,
        dtype="uint16",
        planted=planted,
        generator=generator,
    )
    write_manifest(root, manifest)
    return PlateLayout(
        root=root,
        wells=names,
        fields=field_ids,
        channels=channel_ids,
        extension=extension,
        manifest=manifest,
    )


def _check_arguments(
    root: Path,
    wells: tuple[str, ...],
    fields: int,
    channels: int,
    seed: int,
    cells_per_field: tuple[int, int],
    extension: str,
    exist_ok: bool,
) -> None:
    if not wells or len(set(wells)) != len(wells):
        raise ValueError(f"wells: need distinct well names, got {list(wells)}")
    for well in wells:
        if not well or "/" in well or well.startswith(".") or well != well.strip():
            raise ValueError(f"wells: {well!r} is not usable as a directory name")
    if fields < 1 or channels < 1:
        raise ValueError(f"fields and channels must be >= 1, got {fields} and {channels}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0 <= cells_per_field[0] <= cells_per_field[1]:
        raise ValueError(
            f"cells_per_field must be (low, high) with 0 <= low <= high, got {cells_per_field}"
        )
    if extension not in IMAGE_EXTENSIONS:
        raise ValueError(f"extension must be one of {IMAGE_EXTENSIONS}, got {extension!r}")
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not exist_ok)):
        raise FileExistsError(f"{root} exists and is not an empty directory (pass exist_ok=True)")


def generate_plates(
    root: str | os.PathLike[str],
    count: int,
    *,
    seed: int = 0,
    prefix: str = "plate",
    **options: Any,
) -> list[PlateLayout]:
    """Write `count` synthetic plates `<root>/<prefix>_01`, ... each with its own seed.

    `options` are passed to `generate_plate` (wells, fields, channels, shape, ...).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    width = max(2, len(str(count)))
    layouts = []
    for index in range(count):
        plate_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        layouts.append(
            generate_plate(
                Path(root) / f"{prefix}_{index + 1:0{width}d}", seed=plate_seed, **options
            )
        )
    return layouts
