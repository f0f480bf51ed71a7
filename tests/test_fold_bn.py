"""FoldBatchNorm: the folded network computes what the BN network computes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings

import passes
from darkslim.testing import reference_forward
from darkslim.testing.strategies import programs


@settings(max_examples=15, deadline=None)
@given(data=programs(sparsity=0.0))
def test_folded_network_computes_the_same(data):
    graph, variables = data
    x = np.random.default_rng(0).random((1, graph.height, graph.width, graph.channels),
                                        dtype=np.float32)
    folded_graph, folded = passes.FoldBatchNorm()(graph, variables)
    assert not any(getattr(layer, "batch_normalize", False) for layer in folded_graph.layers)
    want = reference_forward(graph, variables, x)
    got = reference_forward(folded_graph, folded, x)
    for a, b in zip(want.heads, got.heads):
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(b, a, atol=1e-5 * scale)


def test_no_batch_norm_returns_the_same_objects():
    import ir
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\nfilters=4\n")
    variables = {"params": {"layer_0": {"conv": {"kernel": np.ones((1, 1, 3, 4), np.float32),
                                                 "bias": np.zeros(4, np.float32)}}}}
    g, v = passes.FoldBatchNorm()(graph, variables)
    assert g is graph and v is variables
