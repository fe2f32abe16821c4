"""Plates on disk: the synthetic generator, discovery with and without a manifest, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from openhcs_workflow.pipeline import (
    PlateError,
    discover_plate,
    generate_plate,
    generate_plates,
    read_image,
    well_names,
)
from openhcs_workflow.pipeline.plate_format import check_images, read_image_header

SMALL = {"wells": 4, "fields": 2, "channels": 2, "shape": (128, 128)}


@pytest.fixture
def plate(tmp_path: Path) -> Path:
    generate_plate(tmp_path / "plate", seed=3, **SMALL)  # type: ignore[arg-type]
    return tmp_path / "plate"


def test_generator_writes_the_layout_and_a_manifest_of_planted_counts(plate: Path) -> None:
    manifest = json.loads((plate / "plate.json").read_text())
    assert manifest["wells"] == ["A01", "A02", "A03", "A04"]
    assert manifest["fields"] == [1, 2]
    assert manifest["channels"] == [1, 2]
    assert manifest["shape"] == [128, 128]
    assert manifest["dtype"] == "uint16"
    assert manifest["generator"]["seed"] == 3
    for well in manifest["wells"]:
        assert sorted(p.name for p in (plate / well).iterdir()) == [
            "f1_c1.npy",
            "f1_c2.npy",
            "f2_c1.npy",
            "f2_c2.npy",
        ]
        counts = manifest["planted"][well]
        assert set(counts) == {"1", "2"}
        assert all(10 <= n <= 40 for n in counts.values())
    image = np.load(plate / "A01" / "f1_c1.npy")
    assert image.dtype == np.uint16
    assert image.shape == (128, 128)


def test_generator_is_a_function_of_seed_well_and_field(tmp_path: Path) -> None:
    first = generate_plate(tmp_path / "a", wells=["B07", "A01"], shape=(128, 128), seed=9)
    again = generate_plate(tmp_path / "b", wells=3, shape=(128, 128), seed=9)
    other = generate_plate(tmp_path / "c", wells=1, shape=(128, 128), seed=10)
    same = np.load(tmp_path / "a" / "A01" / "f1_c1.npy")
    assert np.array_equal(same, np.load(tmp_path / "b" / "A01" / "f1_c1.npy"))
    assert not np.array_equal(same, np.load(tmp_path / "c" / "A01" / "f1_c1.npy"))
    assert first.planted("A01") == again.planted("A01")
    assert first.planted("A01") is not None
    assert other.wells == ("A01",)


def test_generate_plates_gives_each_plate_its_own_seed(tmp_path: Path) -> None:
    layouts = generate_plates(tmp_path, 3, seed=1, wells=2, shape=(128, 128))
    assert [layout.name for layout in layouts] == ["plate_01", "plate_02", "plate_03"]
    images = [np.load(layout.root / "A01" / "f1_c1.npy") for layout in layouts]
    assert not np.array_equal(images[0], images[1])
    seeds = {
        json.loads((lay.root / "plate.json").read_text())["generator"]["seed"] for lay in layouts
    }
    assert len(seeds) == 3


def test_generator_refuses_bad_arguments_and_a_non_empty_directory(plate: Path) -> None:
    with pytest.raises(FileExistsError, match="not an empty directory"):
        generate_plate(plate, wells=1, shape=(128, 128))
    with pytest.raises(ValueError, match="need distinct well names"):
        generate_plate(plate.parent / "x", wells=["A01", "A01"])
    with pytest.raises(ValueError, match="at most 384 wells"):
        well_names(385)
    with pytest.raises(ValueError, match="too small for cells"):
        generate_plate(plate.parent / "y", wells=1, shape=(16, 16))
    assert well_names(97)[-1] == "E01"  # a 384-well layout beyond 96


def test_discovery_reads_wells_fields_channels_in_natural_order(plate: Path) -> None:
    layout = discover_plate(plate)
    assert layout.wells == ("A01", "A02", "A03", "A04")
    assert layout.fields == (1, 2)
    assert layout.channels == (1, 2)
    assert layout.extension == "npy"
    assert layout.planted("A01") == sum(layout.manifest.planted["A01"].values())  # type: ignore[union-attr]
    check_images(layout)


def test_a_directory_of_npy_files_without_manifest_is_a_plate(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for well in ("A10", "A2", "B1"):
        (root / well).mkdir(parents=True)
        for channel in (0, 3):
            np.save(root / well / f"f0_c{channel}.npy", np.zeros((8, 9), dtype=np.float32))
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a well")
    (root / "A2" / "thumbnail.png").write_bytes(b"ignored")
    layout = discover_plate(root)
    assert layout.wells == ("A2", "A10", "B1")
    assert layout.fields == (0,)
    assert layout.channels == (0, 3)
    assert layout.manifest is None
    assert layout.planted("A2") is None
    check_images(layout)
    assert read_image(layout.image_path("B1", 0, 3)).dtype == np.float64


def test_tiff_plates_are_read_like_npy_plates(tmp_path: Path) -> None:
    layout = generate_plate(tmp_path / "tif", wells=2, shape=(128, 128), seed=2, extension="tif")
    found = discover_plate(layout.root)
    assert found.extension == "tif"
    path = found.image_path("A02", 1, 1)
    assert path.name == "f1_c1.tif"
    assert np.array_equal(read_image(path), tifffile.imread(path).astype(np.float64))
    check_images(found)


def expect_plate_error(path: Path, *parts: str) -> None:
    with pytest.raises(PlateError) as caught:
        check_images(discover_plate(path))
    message = str(caught.value)
    for part in parts:
        assert part in message, message


def test_missing_plate_and_plate_without_images_are_clear(tmp_path: Path) -> None:
    expect_plate_error(tmp_path / "nope", f"plate directory {tmp_path / 'nope'} does not exist")
    (tmp_path / "file").write_text("x")
    expect_plate_error(tmp_path / "file", "is not a directory")
    (tmp_path / "empty" / "A01").mkdir(parents=True)
    expect_plate_error(tmp_path / "empty", "holds no images", "A01/f1_c1.npy")


def test_incomplete_grid_names_the_missing_files(plate: Path) -> None:
    (plate / "A03" / "f2_c1.npy").unlink()
    expect_plate_error(plate, "missing image A03/f2_c1.npy", "fields [1, 2] × channels [1, 2]")


def test_misnamed_and_mixed_image_files_are_refused(plate: Path) -> None:
    shutil.copy(plate / "A01" / "f1_c1.npy", plate / "A01" / "image1.npy")
    expect_plate_error(plate, "A01/image1.npy: image files must be named f<field>_c<channel>")
    (plate / "A01" / "image1.npy").unlink()
    tifffile.imwrite(plate / "A02" / "f3_c1.tif", np.zeros((128, 128), dtype=np.uint16))
    expect_plate_error(plate, "mixes image file types (npy, tif)")


def test_manifest_disagreeing_with_the_files_is_refused(plate: Path) -> None:
    shutil.rmtree(plate / "A04")
    expect_plate_error(plate, "well 'A04' is listed but", "has no images")
    manifest = json.loads((plate / "plate.json").read_text())
    manifest["wells"].remove("A04")
    del manifest["planted"]["A04"]
    manifest["channels"] = [1, 2, 3]
    (plate / "plate.json").write_text(json.dumps(manifest))
    expect_plate_error(plate, "plate.json: lists channels [1, 2, 3] but the images have [1, 2]")
    manifest["channels"] = [1, 2]
    manifest["wells"].remove("A03")
    del manifest["planted"]["A03"]
    (plate / "plate.json").write_text(json.dumps(manifest))
    expect_plate_error(plate, f"well directory {plate / 'A03'} is not listed in the manifest")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "plate.json.version: unsupported manifest version 2"),
        ({"shape": [128]}, "plate.json.shape: expected [height, width], got [128]"),
        ({"dtype": "pixels"}, "plate.json.dtype: 'pixels' is not a numpy dtype"),
        ({"planted": {"A01": {"1": -1}}}, "plate.json.planted.A01.1: -1 is below the minimum 0"),
        ({"planted": {"Z09": {}}}, "plate.json.planted: well 'Z09' is not among"),
        ({"fields": [1, 1.0]}, "plate.json.fields[1]: expected an integer, got number 1.0"),
        ({"colour": "red"}, "plate.json: unknown field 'colour'"),
        ({"dtype": "float32"}, "dtype uint16 differs from the manifest's float32"),
        ({"shape": [64, 64]}, "shape (128, 128) differs from the manifest's (64, 64)"),
    ],
)
def test_malformed_manifest_fields_are_named(
    plate: Path, change: dict[str, object], message: str
) -> None:
    manifest = json.loads((plate / "plate.json").read_text())
    manifest.update(change)
    (plate / "plate.json").write_text(json.dumps(manifest))
    expect_plate_error(plate, message)


def test_manifest_that_is_not_json_is_named(plate: Path) -> None:
    (plate / "plate.json").write_text('{"wells": NaN}')
    expect_plate_error(plate, "plate.json: not valid JSON: NaN is not JSON")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated or corrupt .npy file"),
        (lambda p: p.write_bytes(b"garbage, not an array"), "not a valid .npy file"),
        (lambda p: p.write_bytes(b""), "not a valid .npy file"),
        (lambda p: np.save(p, np.zeros((128, 128, 3))), "expected a 2-D image, got shape"),
        (lambda p: np.save(p, np.zeros((128, 128), bool)), "expected an integer or float image"),
        (lambda p: np.save(p, np.zeros(2, object)), "object arrays are not images"),
        (lambda p: np.save(p, np.zeros((128, 128), complex)), "got dtype complex128"),
        (lambda p: np.save(p, np.zeros((0, 128))), "empty image of shape (0, 128)"),
    ],
)
def test_bad_image_files_are_named(plate: Path, write: object, message: str) -> None:
    path = plate / "A02" / "f2_c1.npy"
    write(path)  # type: ignore[operator]
    with pytest.raises(PlateError) as caught:
        read_image_header(path)
    assert str(caught.value).startswith(f"{path}: "), str(caught.value)
    assert message in str(caught.value)
    with pytest.raises(PlateError, match=r"A02/f2_c1\.npy"):
        read_image(path)
    expect_plate_error(plate, str(path))


def test_channel_images_of_one_field_must_share_a_shape(tmp_path: Path) -> None:
    (tmp_path / "p" / "A01").mkdir(parents=True)
    np.save(tmp_path / "p" / "A01" / "f1_c1.npy", np.zeros((8, 8)))
    np.save(tmp_path / "p" / "A01" / "f1_c2.npy", np.zeros((8, 9)))
    expect_plate_error(tmp_path / "p", "well A01 field 1: channel images differ in shape")


def test_corrupt_tiff_is_named(tmp_path: Path) -> None:
    layout = generate_plate(tmp_path / "t", wells=1, shape=(128, 128), extension="tiff")
    path = layout.image_path("A01", 1, 1)
    path.write_bytes(b"II*\x00garbage")
    with pytest.raises(PlateError, match=r"f1_c1\.tiff: not a readable TIFF image"):
        read_image(path)
