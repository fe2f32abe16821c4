"""Importing a host's optional dependency, with the extra to install when it is missing."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_optional"]


def import_optional(module: str, *, extra: str, needed_for: str) -> Any:
    """`importlib.import_module(module)`, or ImportError saying which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ImportError(
            f"{needed_for} needs {package}: pip install 'openhcs_workflow[{extra}]' ({exc})"
        ) from exc
