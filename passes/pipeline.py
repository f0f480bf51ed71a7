"""`pipeline(*passes)`: compose passes like `optax.chain`, verifying after each.

`Pipeline.run` returns the final program and one report per pass (what each decided,
see `passes.reports`); calling the pipeline returns just ``(graph, variables)``. A
pipeline prints as text (``remove-blocks{n=8},slim-channels{percent=0.5}``) and
`passes.parse_pipeline` reads that text back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ir import Graph, Variables
from passes.errors import PruneError
from passes.program import verify_program
from passes.reports import Counts, PassReport
from passes.text import pass_text


class Pass(Protocol):
    """A pure transform ``(graph, variables) -> (graph, variables)`` with a name.

    A pass that decides something also has ``run(graph, variables) -> PassResult``
    whose report says what it decided; `Pipeline.run` uses it when present.
    """

    @property
    def name(self) -> str: ...  # a frozen field or a class attribute

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Any]: ...


@dataclass(frozen=True, slots=True)
class PassResult:
    """One pass's output and its report."""

    graph: Graph
    variables: Any
    report: PassReport


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """A pipeline's output and one report per pass, in order.

    ``inputs`` holds the program each pass received, when `Pipeline.run` was asked to
    keep them (``keep_inputs=True``; the CLI's checks compare a pass's input with its
    output), else it is empty.
    """

    graph: Graph
    variables: Any
    reports: tuple[PassReport, ...]
    inputs: tuple[tuple[Graph, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Passes run in order; `verify_program` checks every pass's output (the graph and
    every variable's shape) before the next pass runs.

    A failure is a `PruneError` naming the pass and the passes that ran before it,
    raised ``from`` the original error.
    """

    passes: tuple[Pass, ...]
    name: str = "pipeline"

    def __post_init__(self) -> None:
        flat: list[Pass] = []
        for p in self.passes:  # nested pipelines run their passes in line
            flat.extend(p.passes if isinstance(p, Pipeline) else (p,))
        object.__setattr__(self, "passes", tuple(flat))

    def run(self, graph: Graph, variables: Variables, *, keep_inputs: bool = False
            ) -> PipelineResult:
        """Run every pass; the result holds the final program and each pass's report."""
        verify_program(graph, variables, "the pipeline's input")
        done: list[str] = []
        reports: list[PassReport] = []
        inputs: list[tuple[Graph, Any]] = []
        before = Counts.of(graph)
        for p in self.passes:
            if keep_inputs:
                inputs.append((graph, variables))
            try:
                if hasattr(p, "run"):
                    result = p.run(graph, variables)
                    out_graph, out_vars, report = result.graph, result.variables, result.report
                else:
                    (out_graph, out_vars), report = p(graph, variables), None
                verify_program(out_graph, out_vars, f"the output of {p.name!r}")
            except Exception as exc:
                ran = ", ".join(done) if done else "nothing"
                raise PruneError(f"pass {p.name!r} failed (after {ran}): {exc}",
                                 argument=getattr(exc, "argument", None),
                                 pass_name=p.name) from exc
            if report is None:
                report = PassReport(name=p.name, text=pass_text(p), before=before,
                                    after=Counts.of(out_graph))
            graph, variables, before = out_graph, out_vars, report.after
            reports.append(report)
            done.append(p.name)
        return PipelineResult(graph, variables, tuple(reports), tuple(inputs))

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Any]:
        result = self.run(graph, variables)
        return result.graph, result.variables

    def __str__(self) -> str:
        return ",".join(pass_text(p) for p in self.passes)


def pipeline(*passes: Pass) -> Pipeline:
    """Compose passes: ``pipeline(a, b)(g, v) == b(*a(g, v))``. Nested pipelines are
    flattened, so the text form reads back to an equal pipeline."""
    return Pipeline(tuple(passes))
