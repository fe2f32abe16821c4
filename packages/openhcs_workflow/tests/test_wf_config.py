"""Per-plate config: override ▸ saved ▸ default, per field, checked against the default."""

from __future__ import annotations

import math

import pytest

from openhcs_workflow import PlateConfigSources, plate_config_resolver

DEFAULT = {"workers": 4, "sigma": 1.5, "gpu": False, "io": {"suffix": "_out", "zarr": True}}


def test_default_only() -> None:
    assert plate_config_resolver("p", default=DEFAULT) == DEFAULT


def test_saved_then_override_per_field() -> None:
    saved = {"workers": 8, "io": {"suffix": "_saved"}}
    override = {"sigma": 3, "io": {"zarr": False}}
    resolved = plate_config_resolver("p", default=DEFAULT, saved=saved, override=override)
    assert resolved == {
        "workers": 8,
        "sigma": 3,
        "gpu": False,
        "io": {"suffix": "_saved", "zarr": False},
    }


def test_override_beats_saved() -> None:
    resolved = plate_config_resolver(
        "p", default=DEFAULT, saved={"workers": 8}, override={"workers": 2}
    )
    assert resolved["workers"] == 2


def test_result_is_a_fresh_copy() -> None:
    resolved = plate_config_resolver("p", default=DEFAULT)
    resolved["io"]["suffix"] = "changed"  # type: ignore[index]
    assert DEFAULT["io"]["suffix"] == "_out"  # type: ignore[index]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"wokers": 2}, "config.wokers: unknown config field"),
        ({"gpu": 1}, "config.gpu: expected a boolean, got 1"),
        ({"workers": True}, "config.workers: expected a number, got True"),
        ({"io": {"suffix": 3}}, "config.io.suffix: expected a string, got 3"),
        ({"io": "x"}, "config.io: expected an object, got 'x'"),
        ({"sigma": math.nan}, "config.override[p].sigma: expected a finite number, got nan"),
    ],
)
def test_bad_override_names_field_and_value(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        plate_config_resolver("p", default=DEFAULT, override=override)


def test_sources_resolve_saved_configs_by_plate() -> None:
    sources = PlateConfigSources(default=DEFAULT).with_saved("p2", {"workers": 1})
    assert sources.resolve("p1")["workers"] == 4
    assert sources.resolve("p2")["workers"] == 1
    assert sources.resolve("p2", {"workers": 9})["workers"] == 9


def test_sources_validate_saved_configs_when_set() -> None:
    with pytest.raises(ValueError, match=r"config\.nope: unknown config field"):
        PlateConfigSources(default=DEFAULT).with_saved("p", {"nope": 1})
