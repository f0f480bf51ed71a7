"""`pipeline(*passes)`: compose passes like `optax.chain`, verifying after each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ir import Graph
from ir.shapes import verify
from passes.errors import PruneError


class Pass(Protocol):
    """A pure transform ``(graph, variables) -> (graph, variables)`` with a name."""

    name: str

    def __call__(self, graph: Graph, variables: Any) -> tuple[Graph, Any]: ...


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Passes run in order; every output graph is verified before the next pass.

    A failure is a `PruneError` naming the pass and the passes that ran before it,
    raised ``from`` the original error.
    """

    passes: tuple[Pass, ...]
    name: str = "pipeline"

    def __call__(self, graph: Graph, variables: Any) -> tuple[Graph, Any]:
        done: list[str] = []
        for p in self.passes:
            try:
                graph, variables = p(graph, variables)
                verify(graph)
            except Exception as exc:
                before = ", ".join(done) if done else "nothing"
                raise PruneError(f"pass {p.name!r} failed (after {before}): {exc}") from exc
            done.append(p.name)
        return graph, variables


def pipeline(*passes: Pass) -> Pipeline:
    """Compose passes: ``pipeline(a, b)(g, v) == b(*a(g, v))``."""
    return Pipeline(tuple(passes))
