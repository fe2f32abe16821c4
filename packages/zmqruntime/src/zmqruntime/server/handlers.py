"""The handler registry: names a request may use, and how a worker finds each function.

A handler is an importable module-level function taking a `JobContext`. Workers run in other
processes (or on other machines), so a handler travels as its reference `"module:qualname"`
(a plain string) and is imported again on the worker side; nothing is pickled, nothing is
evaluated. Registration checks that the reference resolves back to the same function, so a
lambda or a nested function is refused at server start, not at the first request.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["HandlerRegistry", "HandlerSpecError", "handler_reference", "resolve_reference"]

HandlerFunction = Callable[[Any], Any]


class HandlerSpecError(ValueError):
    """The handlers given to a server are not usable; the message says which and why."""


def resolve_reference(reference: str) -> Any:
    """Import `"package.module:attr.path"` and return the object it names.

    Only imports and attribute look-ups: no code from the string is evaluated.
    """
    module_name, sep, attr_path = reference.partition(":")
    if not sep or not module_name or not attr_path:
        raise HandlerSpecError(f"handler reference {reference!r}: expected 'package.module:ATTR'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerSpecError(
            f"handler reference {reference!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerSpecError(
                f"handler reference {reference!r}: {part!r} not found in {module_name!r}"
            ) from None
    return obj


def handler_reference(name: str, function: object) -> str:
    """The importable `"module:qualname"` of a handler function, checked to resolve back to it."""
    if not callable(function):
        raise HandlerSpecError(f"handler {name!r}: expected a function, got {function!r}")
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise HandlerSpecError(
            f"handler {name!r}: {function!r} has no module/qualname; use a module-level function"
        )
    if "<" in qualname:
        raise HandlerSpecError(
            f"handler {name!r}: {module}.{qualname} is not importable "
            "(lambda or nested function); define it at module level"
        )
    reference = f"{module}:{qualname}"
    try:
        resolved = resolve_reference(reference)
    except HandlerSpecError as exc:
        raise HandlerSpecError(f"handler {name!r}: {exc}") from exc
    if resolved is not function:
        raise HandlerSpecError(
            f"handler {name!r}: {reference} resolves to a different object; "
            "register the module-level function itself"
        )
    return reference


class HandlerRegistry(Mapping[str, str]):
    """Handler name → importable reference, validated once at construction."""

    def __init__(self, handlers: Mapping[str, HandlerFunction] | str) -> None:
        mapping: object = handlers
        if isinstance(handlers, str):
            mapping = resolve_reference(handlers)
            if not isinstance(mapping, Mapping):
                raise HandlerSpecError(
                    f"handlers {handlers!r}: expected a mapping of name to function, "
                    f"got {type(mapping).__name__}"
                )
        if not isinstance(mapping, Mapping):
            raise HandlerSpecError(
                f"handlers: expected a mapping or 'package.module:ATTR', got {handlers!r}"
            )
        references: dict[str, str] = {}
        for name, function in mapping.items():
            if not isinstance(name, str) or not name:
                raise HandlerSpecError(f"handler name {name!r}: expected a non-empty string")
            references[name] = handler_reference(name, function)
        if not references:
            raise HandlerSpecError("handlers: at least one handler must be registered")
        self._references = references

    def __getitem__(self, name: str) -> str:
        return self._references[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._references)

    def __len__(self) -> int:
        return len(self._references)

    @property
    def names(self) -> list[str]:
        """Registered handler names, sorted."""
        return sorted(self._references)
