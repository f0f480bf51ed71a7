"""Property test of the user pass in examples/round_to_multiple.py, with darkslim.testing."""

from hypothesis import assume, given
from hypothesis import strategies as st

import ir
import passes
from darkslim import testing as dt
from examples.round_to_multiple import RoundToMultiple


@given(st.data(), st.sampled_from([2, 4, 8]))
def test_round_to_multiple(data, multiple):
    graph = data.draw(dt.graphs(min_blocks=1, max_blocks=5, widths=(2, 20)))
    analysis = passes.analyze_prunability(graph, "shortcut")
    assume(analysis.units)  # something to prune
    variables = data.draw(dt.variables(graph, sparsity=(0.0, 0.9)))
    masks = data.draw(dt.masks(graph, analysis))
    x = data.draw(dt.inputs(graph))
    pass_ = RoundToMultiple(masks, analysis, multiple)

    compact = dt.assert_pass_is_pure(pass_, (graph, variables))
    dt.assert_verifies(compact[0])
    rounded = pass_.rounded(variables)
    before, after = ir.verify(graph), ir.verify(compact[0])
    for unit in analysis.units:  # rounded up, keeping every channel the masks kept
        kept, full = after[unit[0]].c, before[unit[0]].c
        assert kept % multiple == 0 or kept == full
        assert (rounded.get(unit[0]) >= masks.get(unit[0])).all()
    keep_size = passes.FoldPrunedBias(rounded)(graph, variables)
    dt.assert_equivalent(keep_size, compact, x, forward=dt.reference_forward)
    dt.assert_identity_when_noop(RoundToMultiple(masks, analysis, 10**6),
                                 (graph, variables))
