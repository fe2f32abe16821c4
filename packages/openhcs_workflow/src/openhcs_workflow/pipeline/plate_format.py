"""How a plate is laid out on disk, discovered, checked and read.

A plate is a directory with one sub-directory per well, holding one 2-D image per field and
channel::

    <plate>/plate.json              optional manifest (written by the synthetic generator)
    <plate>/<well>/f<field>_c<channel>.npy     e.g. A01/f1_c1.npy (.tif/.tiff too)

The file names are the source of truth: wells are the sub-directories holding at least one
such image, fields and channels are read from the names, and every well must hold every
field × channel image. A directory of `.npy` files laid out this way is a plate without any
manifest. When `plate.json` is present it must agree with the files (same wells, fields,
channels and extension; images of its shape and dtype); it also records, for synthetic
plates, how many objects were planted per well and field. Images are integer or float arrays
(no bool, complex or object dtypes), read without pickle. TIFF needs `tifffile` (the `images`
extra).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import attrs
import numpy as np

from openhcs_workflow.pipeline.errors import PlateError
from openhcs_workflow.pipeline.fileio import write_json_atomic
from openhcs_workflow.pipeline.jsonio import JSONObject, JsonReader
from openhcs_workflow.pipeline.state import FloatImage

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_NAME",
    "ImageHeader",
    "PlateLayout",
    "PlateManifest",
    "check_images",
    "discover_plate",
    "image_name",
    "read_image",
    "read_image_header",
    "read_manifest",
    "well_sort_key",
    "write_manifest",
]

MANIFEST_NAME = "plate.json"
MANIFEST_FORMAT = "openhcs_workflow.plate"
MANIFEST_VERSION = 1
IMAGE_EXTENSIONS = ("npy", "tif", "tiff")
_IMAGE_NAME = re.compile(r"^f(\d+)_c(\d+)\.(npy|tif|tiff)$")
_WELL_KEY = re.compile(r"^([A-Za-z]*)(\d*)(.*)$")
_READ = JsonReader(PlateError)


def image_name(field: int, channel: int, extension: str = "npy") -> str:
    """The file name of one field/channel image: `f1_c2.npy`."""
    return f"f{field}_c{channel}.{extension}"


def well_sort_key(well: str) -> tuple[str, int, str]:
    """Natural well order: A2 before A10, row letters case-insensitive."""
    match = _WELL_KEY.match(well)
    assert match is not None  # the pattern matches any string
    letters, digits, rest = match.groups()
    return (letters.upper(), int(digits) if digits else -1, rest)


@attrs.frozen(slots=True, kw_only=True)
class ImageHeader:
    """Shape and dtype of an image file, read without loading its pixels."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]


@attrs.frozen(slots=True, kw_only=True)
class PlateManifest:
    """`plate.json`: what the plate holds, and for synthetic plates what was planted."""

    wells: tuple[str, ...]
    fields: tuple[int, ...]
    channels: tuple[int, ...]
    extension: str = "npy"
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    #: well → field → number of objects planted (synthetic plates).
    planted: Mapping[str, Mapping[int, int]] | None = None
    #: How the plate was made (free-form, informational).
    generator: JSONObject | None = None

    def to_json(self) -> JSONObject:
        """The manifest's JSON object."""
        out: JSONObject = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "wells": list(self.wells),
            "fields": list(self.fields),
            "channels": list(self.channels),
            "extension": self.extension,
        }
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.planted is not None:
            out["planted"] = {
                well: {str(field): count for field, count in per_field.items()}
                for well, per_field in self.planted.items()
            }
        if self.generator is not None:
            out["generator"] = self.generator
        return out

    @classmethod
    def from_json(cls, value: object, where: str) -> PlateManifest:
        """Parse a manifest strictly; errors are prefixed with `where` (the file)."""
        doc = _READ.obj(
            value,
            where,
            required=("format", "version", "wells", "fields", "channels", "extension"),
            optional=("shape", "dtype", "planted", "generator"),
        )
        if doc["format"] != MANIFEST_FORMAT:
            raise PlateError(f"{where}.format: expected {MANIFEST_FORMAT!r}, got {doc['format']!r}")
        version = _READ.integer(doc["version"], f"{where}.version")
        if version != MANIFEST_VERSION:
            raise PlateError(f"{where}.version: unsupported manifest version {version}")
        wells = _READ.texts(doc["wells"], f"{where}.wells")
        fields = _READ.integers(doc["fields"], f"{where}.fields", minimum=0)
        extension = _READ.text(doc["extension"], f"{where}.extension")
        if extension not in IMAGE_EXTENSIONS:
            raise PlateError(
                f"{where}.extension: {extension!r} is not one of {', '.join(IMAGE_EXTENSIONS)}"
            )
        shape = None
        if doc.get("shape") is not None:
            dims = _READ.integers(doc["shape"], f"{where}.shape", minimum=1, distinct=False)
            if len(dims) != 2:
                raise PlateError(f"{where}.shape: expected [height, width], got {list(dims)}")
            shape = (dims[0], dims[1])
        dtype = None
        if doc.get("dtype") is not None:
            text = _READ.text(doc["dtype"], f"{where}.dtype")
            try:
                dtype = np.dtype(text).name
            except TypeError:
                raise PlateError(f"{where}.dtype: {text!r} is not a numpy dtype") from None
        planted = None
        if doc.get("planted") is not None:
            planted = _read_planted(doc["planted"], f"{where}.planted", wells, fields)
        generator = None
        if doc.get("generator") is not None:
            # free-form JSON (it came from json.loads)
            generator = cast(
                JSONObject, dict(_READ.free_obj(doc["generator"], f"{where}.generator"))
            )
        return cls(
            wells=wells,
            fields=fields,
            channels=_READ.integers(doc["channels"], f"{where}.channels", minimum=0),
            extension=extension,
            shape=shape,
            dtype=dtype,
            planted=planted,
            generator=generator,
        )


def _read_planted(
    value: object, where: str, wells: Iterable[str], fields: Iterable[int]
) -> dict[str, dict[int, int]]:
    known_wells, known_fields = set(wells), {str(field): field for field in fields}
    planted: dict[str, dict[int, int]] = {}
    for well, per_field in _READ.free_obj(value, where).items():
        if well not in known_wells:
            raise PlateError(f"{where}: well {well!r} is not among the manifest's wells")
        counts: dict[int, int] = {}
        for key, count in _READ.free_obj(per_field, f"{where}.{well}").items():
            if key not in known_fields:
                raise PlateError(
                    f"{where}.{well}: field {key!r} is not among the manifest's fields"
                )
            counts[known_fields[key]] = _READ.integer(count, f"{where}.{well}.{key}", minimum=0)
        planted[well] = counts
    return planted


@attrs.frozen(slots=True, kw_only=True)
class PlateLayout:
    """A discovered plate: where it is and which wells, fields and channels it holds."""

    root: Path
    wells: tuple[str, ...]
    fields: tuple[int, ...]
    channels: tuple[int, ...]
    extension: str
    manifest: PlateManifest | None = None

    @property
    def name(self) -> str:
        """The plate directory's name."""
        return self.root.name

    def image_path(self, well: str, field: int, channel: int) -> Path:
        """Where one field/channel image of a well lives."""
        return self.root / well / image_name(field, channel, self.extension)

    def planted(self, well: str) -> int | None:
        """Objects planted in a well over all fields, if the manifest records them."""
        if self.manifest is None or self.manifest.planted is None:
            return None
        per_field = self.manifest.planted.get(well)
        return None if per_field is None else sum(per_field.values())


def read_manifest(plate_dir: Path) -> PlateManifest | None:
    """The plate's manifest, or None when it has none."""
    path = plate_dir / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlateError(f"{path}: cannot read the manifest: {exc}") from exc
    try:
        value = _json_loads(text)
    except ValueError as exc:
        raise PlateError(f"{path}: not valid JSON: {exc}") from exc
    return PlateManifest.from_json(value, str(path))


def _json_loads(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    result: object = json.loads(text, parse_constant=refuse)
    return result


def write_manifest(plate_dir: Path, manifest: PlateManifest) -> Path:
    """Write `plate.json` atomically; returns its path."""
    path = plate_dir / MANIFEST_NAME
    write_json_atomic(path, manifest.to_json())
    return path


def discover_plate(plate_dir: str | os.PathLike[str]) -> PlateLayout:
    """Find a plate's wells, fields and channels from its files, checked against its manifest.

    Only names are looked at here; `check_images` reads the image headers.
    """
    root = Path(plate_dir).absolute()
    if not root.exists():
        raise PlateError(f"plate directory {root} does not exist")
    if not root.is_dir():
        raise PlateError(f"plate {root} is not a directory")
    found = _scan_wells(root)
    manifest = read_manifest(root)
    if manifest is not None:
        _check_manifest_wells(root, manifest, found)
    if not found:
        raise PlateError(
            f"plate {root} holds no images (expected <well>/f<field>_c<channel>.npy, "
            "e.g. A01/f1_c1.npy)"
        )
    extensions = {ext for images in found.values() for _, _, ext in images}
    if len(extensions) > 1:
        raise PlateError(
            f"plate {root} mixes image file types ({', '.join(sorted(extensions))}); use one"
        )
    wells = tuple(sorted(found, key=well_sort_key))
    fields = tuple(sorted({f for images in found.values() for f, _, _ in images}))
    channels = tuple(sorted({c for images in found.values() for _, c, _ in images}))
    layout = PlateLayout(
        root=root,
        wells=wells,
        fields=fields,
        channels=channels,
        extension=extensions.pop(),
        manifest=manifest,
    )
    _check_complete(layout, found)
    if manifest is not None:
        _check_manifest_grid(root, manifest, layout)
    return layout


def _scan_wells(root: Path) -> dict[str, set[tuple[int, int, str]]]:
    found: dict[str, set[tuple[int, int, str]]] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise PlateError(f"plate directory {root}: cannot list it: {exc}") from exc
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        images: set[tuple[int, int, str]] = set()
        try:
            files = sorted(entry.iterdir())
        except OSError as exc:
            raise PlateError(f"well directory {entry}: cannot list it: {exc}") from exc
        for file in files:
            match = _IMAGE_NAME.match(file.name)
            if match is not None:
                images.add((int(match[1]), int(match[2]), match[3]))
            elif file.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS:
                raise PlateError(
                    f"{file}: image files must be named f<field>_c<channel>.<ext> (e.g. f1_c1.npy)"
                )
        if images:
            found[entry.name] = images
    return found


def _check_complete(layout: PlateLayout, found: Mapping[str, set[tuple[int, int, str]]]) -> None:
    missing = [
        layout.image_path(well, field, channel)
        for well in layout.wells
        for field in layout.fields
        for channel in layout.channels
        if (field, channel, layout.extension) not in found[well]
    ]
    if missing:
        shown = ", ".join(str(path.relative_to(layout.root)) for path in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise PlateError(
            f"plate {layout.root}: missing image {shown}{more} (every well needs fields "
            f"{list(layout.fields)} × channels {list(layout.channels)})"
        )


def _check_manifest_wells(root: Path, manifest: PlateManifest, found: Mapping[str, object]) -> None:
    where = root / MANIFEST_NAME
    for well in manifest.wells:
        if well not in found:
            raise PlateError(f"{where}: well {well!r} is listed but {root / well} has no images")
    for well in found:
        if well not in manifest.wells:
            raise PlateError(f"{where}: well directory {root / well} is not listed in the manifest")


def _check_manifest_grid(root: Path, manifest: PlateManifest, layout: PlateLayout) -> None:
    where = root / MANIFEST_NAME
    for name, listed, actual in (
        ("fields", manifest.fields, layout.fields),
        ("channels", manifest.channels, layout.channels),
    ):
        if sorted(listed) != list(actual):
            raise PlateError(
                f"{where}: lists {name} {sorted(listed)} but the images have {list(actual)}"
            )
    if manifest.extension != layout.extension:
        raise PlateError(
            f"{where}: lists extension {manifest.extension!r} but the images are "
            f".{layout.extension}"
        )


def _tifffile() -> ModuleType:
    try:
        return importlib.import_module("tifffile")
    except ImportError as exc:
        raise ImportError(
            "reading TIFF plates needs tifffile: pip install 'openhcs_workflow[images]'"
        ) from exc


def read_image_header(path: Path) -> ImageHeader:
    """Shape and dtype of an image file; a truncated or malformed file is a `PlateError`."""
    if path.suffix == ".npy":
        header = _npy_header(path)
    else:
        tifffile = _tifffile()
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                header = ImageHeader(shape=tuple(series.shape), dtype=np.dtype(series.dtype))
        except FileNotFoundError:
            raise PlateError(f"{path}: image file is missing") from None
        except (OSError, ValueError, IndexError) as exc:
            raise PlateError(f"{path}: not a readable TIFF image: {exc}") from exc
    _check_header(path, header)
    return header


def _npy_header(path: Path) -> ImageHeader:
    npy_format: Any = np.lib.format
    try:
        with path.open("rb") as handle:
            version = npy_format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(handle)
            else:
                raise PlateError(f"{path}: unsupported .npy format version {version}")
            offset = handle.tell()
    except FileNotFoundError:
        raise PlateError(f"{path}: image file is missing") from None
    except OSError as exc:
        raise PlateError(f"{path}: cannot read: {exc}") from exc
    except ValueError as exc:
        raise PlateError(f"{path}: not a valid .npy file ({exc})") from exc
    header = ImageHeader(shape=tuple(shape), dtype=np.dtype(dtype))
    if header.dtype.hasobject:
        raise PlateError(f"{path}: object arrays are not images (dtype {header.dtype})")
    size = path.stat().st_size
    expected = offset + math.prod(header.shape) * header.dtype.itemsize
    if size != expected:
        raise PlateError(
            f"{path}: truncated or corrupt .npy file ({size} bytes, its header promises {expected})"
        )
    return header


def _check_header(path: Path, header: ImageHeader) -> None:
    if len(header.shape) != 2:
        raise PlateError(f"{path}: expected a 2-D image, got shape {header.shape}")
    if header.dtype.kind not in "uif":
        raise PlateError(f"{path}: expected an integer or float image, got dtype {header.dtype}")
    if 0 in header.shape:
        raise PlateError(f"{path}: empty image of shape {header.shape}")


def read_image(path: Path) -> FloatImage:
    """Load one image as float64, checked as `read_image_header` does."""
    header = read_image_header(path)
    try:
        if path.suffix == ".npy":
            pixels: np.ndarray[Any, Any] = np.load(path, allow_pickle=False)
        else:
            pixels = np.asarray(_tifffile().imread(path))
    except FileNotFoundError:
        raise PlateError(f"{path}: image file is missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise PlateError(f"{path}: unreadable image: {exc}") from exc
    if pixels.shape != header.shape:
        raise PlateError(f"{path}: read shape {pixels.shape}, header says {header.shape}")
    return pixels.astype(np.float64)


def check_images(
    layout: PlateLayout,
    wells: Iterable[str] | None = None,
    on_well: Callable[[int, str], None] | None = None,
) -> None:
    """Read every image header of `wells` (default all): 2-D, numeric, channels of a field
    alike in shape, and of the manifest's shape and dtype when it gives them.

    `on_well(index, well)` is called after each well is checked (for progress).
    """
    manifest = layout.manifest
    for index, well in enumerate(layout.wells if wells is None else wells):
        for field in layout.fields:
            shapes: dict[int, tuple[int, ...]] = {}
            for channel in layout.channels:
                path = layout.image_path(well, field, channel)
                header = read_image_header(path)
                if manifest is not None and manifest.shape not in (None, header.shape):
                    raise PlateError(
                        f"{path}: shape {header.shape} differs from the manifest's {manifest.shape}"
                    )
                if manifest is not None and manifest.dtype not in (None, header.dtype.name):
                    raise PlateError(
                        f"{path}: dtype {header.dtype} differs from the manifest's {manifest.dtype}"
                    )
                shapes[channel] = header.shape
            if len(set(shapes.values())) > 1:
                listed = ", ".join(f"c{c} {shape}" for c, shape in shapes.items())
                raise PlateError(
                    f"plate {layout.root}: well {well} field {field}: channel images differ "
                    f"in shape ({listed})"
                )
        if on_well is not None:
            on_well(index, well)
