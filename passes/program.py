"""`verify_program`: a graph and its variables checked together.

`ir.verify` checks a graph on its own; a pass can still leave variables that no longer
fit it (a conv cut to ``filters=8`` that kept its 16-wide kernel). Pipelines run this
after every pass, as xDSL verifies after each rewrite.
"""

from __future__ import annotations

from ir import Graph, Shape, Variables
from ir.shapes import verify
from ir.variables import describe_misfits, misfits
from passes.errors import PruneError


def verify_program(graph: Graph, variables: Variables, source: str = "variables"
                   ) -> tuple[Shape, ...]:
    """Verify ``graph`` (`ir.verify`) and that every variable has the shape it expects.

    Args:
        source: what the variables are, for the message (e.g. the pass that made them).

    Returns:
        The inferred shapes, as `ir.verify` returns them.

    Raises:
        CfgError: the graph does not verify.
        PruneError: a variable is missing, unexpected or misshapen; the message names
            each layer (first five).
    """
    shapes = verify(graph)
    problems = misfits(graph, variables)
    if problems:
        raise PruneError(describe_misfits(graph, source, problems))
    return shapes
