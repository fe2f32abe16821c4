"""Steps registered by name: what each one needs, gives and accepts as parameters.

A step is a function `(FieldState, Params) -> FieldState` plus a `StepSpec` saying what it
needs from the state (`mask`, `labels`, ...), what it adds, and what it invalidates. The
registry is what compile checks a pipeline definition against and what execution looks steps
up in; it must therefore be populated the same way in the process that compiles and in the
worker that executes (register steps at import time of a module both import).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import attrs

from openhcs_workflow.pipeline.errors import PipelineError
from openhcs_workflow.pipeline.jsonio import JSONObject
from openhcs_workflow.pipeline.params import ParamSpec, param_specs
from openhcs_workflow.pipeline.state import FieldState, Product

__all__ = ["StepRegistry", "StepSpec"]

P = TypeVar("P")
F = TypeVar("F", bound=Callable[[FieldState, Any], FieldState])


@attrs.frozen(slots=True, kw_only=True)
class StepSpec(Generic[P]):
    """A registered step: its name, parameter class, function and data flow."""

    name: str
    doc: str
    params_type: type[P]
    run: Callable[[FieldState, P], FieldState]
    needs: frozenset[Product] = frozenset()
    gives: frozenset[Product] = frozenset()
    clears: frozenset[Product] = frozenset()

    @property
    def params(self) -> tuple[ParamSpec, ...]:
        """The parameter specs, in declaration order."""
        return param_specs(self.params_type)

    def to_json(self) -> JSONObject:
        """The step's schema as JSON: name, doc, data flow and parameters."""
        return {
            "name": self.name,
            "doc": self.doc,
            "needs": [str(product) for product in sorted(self.needs)],
            "gives": [str(product) for product in sorted(self.gives)],
            "params": [spec.to_json() for spec in self.params],
        }


class StepRegistry:
    """Step name → `StepSpec`. Names are unique; a duplicate registration is refused."""

    def __init__(self, specs: Iterable[StepSpec[Any]] = ()) -> None:
        self._steps: dict[str, StepSpec[Any]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: StepSpec[Any]) -> StepSpec[Any]:
        """Add a step; its parameter class is checked now, not at the first pipeline."""
        if not spec.name.isidentifier():
            raise ValueError(f"step name {spec.name!r} must be an identifier")
        if spec.name in self._steps:
            raise ValueError(f"a step named {spec.name!r} is already registered")
        spec.params  # noqa: B018 - validates the parameter declarations
        self._steps[spec.name] = spec
        return spec

    def step(
        self,
        name: str,
        *,
        params: type[Any],
        needs: Iterable[Product] = (),
        gives: Iterable[Product] = (),
        clears: Iterable[Product] = (),
    ) -> Callable[[F], F]:
        """Decorator registering a step function; its docstring is the step's doc."""

        def register(function: F) -> F:
            self.register(
                StepSpec(
                    name=name,
                    doc=(function.__doc__ or "").strip(),
                    params_type=params,
                    run=function,
                    needs=frozenset(needs),
                    gives=frozenset(gives),
                    clears=frozenset(clears),
                )
            )
            return function

        return register

    def lookup(self, name: str, where: str) -> StepSpec[Any]:
        """The step named `name`, or a `PipelineError` at `where` listing close names."""
        spec = self._steps.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, self._steps, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(self._steps) or "none"
            raise PipelineError(f"{where}: unknown step {name!r} (steps: {known}){hint}")
        return spec

    def providers(self, product: Product) -> tuple[str, ...]:
        """Names of the steps that give `product`."""
        return tuple(name for name, spec in self._steps.items() if product in spec.gives)

    def schema(self) -> list[JSONObject]:
        """Every step's schema, in registration order."""
        return [spec.to_json() for spec in self._steps.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._steps

    def __iter__(self) -> Iterator[str]:
        return iter(self._steps)

    def __len__(self) -> int:
        return len(self._steps)
