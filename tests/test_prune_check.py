"""The prune's check (darkslim.check): a float32 numpy forward on a small input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ir
import passes
from darkslim.check import check_size, heads_numpy, measure_prune_diffs
from darkslim.testing import masks, programs, random_inputs, random_variables, reference_forward

SYNTH = ir.parse_cfg(__import__("pathlib").Path(__file__).resolve().parents[1]
                     / "darkslim" / "data" / "synth-tiny.cfg")


@settings(max_examples=25)
@given(programs(max_blocks=6), st.integers(0, 2**16))
def test_heads_equal_the_reference_interpreter(program, seed):
    graph, variables = program
    x = random_inputs(graph, seed=seed, batch=2)
    ours = heads_numpy(graph, variables, x)
    out = reference_forward(graph, variables, x)
    # the detection heads, or the last layer's output for a network without one
    reference = out.heads if graph.head_indices() else (out.output,)
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


@settings(max_examples=25)
@given(programs(max_blocks=6), st.sampled_from(["regular", "shortcut"]), st.data())
def test_zeroing_inputs_is_the_keep_size_network(program, mode, data):
    """Zeroing dropped input channels of the activations computes what the keep-size
    network (kernel slices zeroed) computes, without copying its kernels."""
    graph, variables = program
    analysis = passes.analyze_prunability(graph, mode)
    assume(analysis.units)
    channel_masks = data.draw(masks(graph, analysis))
    keep = passes.FoldPrunedBias(channel_masks)(graph, variables)
    _, folded = passes.FoldPrunedBias(channel_masks, zero_dropped_inputs=False)(graph, variables)
    x = random_inputs(graph, seed=3)
    lazily = heads_numpy(graph, folded, x, zero_inputs=passes.tensor_keeps(graph, channel_masks))
    for a, b in zip(lazily, heads_numpy(*keep, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_check_size_is_the_smallest_multiple_of_the_stride():
    assert check_size(SYNTH) == 64        # four stride-2 maxpools: 16
    assert check_size(SYNTH, 65) == 80
    assert check_size(ir.parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\nfilters=2\n"
                                   "stride=2\n")) == 64


@pytest.fixture(scope="module")
def pruned():
    variables = random_variables(SYNTH, seed=5, sparsity=0.6)
    return passes.prune(SYNTH, variables, passes.PruneConfig(percent=0.5))


def test_the_check_reports_rounding_and_the_border_by_ring(pruned):
    diffs = measure_prune_diffs(SYNTH, pruned)
    assert diffs["check_size"] == [64, 64]
    assert diffs["max_abs_diff_keepsize_vs_compact"] < 1e-4
    rings = [head["max_abs_diff_by_ring"] for head in diffs["border_effect"]]
    assert [head["grid"] for head in diffs["border_effect"]] == [[4, 4], [8, 8]]
    assert [len(r) for r in rings] == [2, 4]
    assert diffs["max_abs_diff_gamma_zeroed_vs_compact"] == max(max(r) for r in rings) > 1e-3


def test_the_check_sees_a_broken_compact_network(pruned):
    """It can fail: a compact network off by a bias is reported, not rounded away."""
    graph, variables = pruned.compact
    i = graph.conv_indices()[0]
    bias = variables["params"][f"layer_{i}"]["bn"]["bias"]
    broken = passes.tree.with_updates(variables, {(i, passes.tree.BETA): bias + 0.5})
    result = dataclasses.replace(pruned, compact=(graph, broken))
    assert measure_prune_diffs(SYNTH, result)["max_abs_diff_keepsize_vs_compact"] > 1e-2


def test_the_border_vanishes_with_pointwise_convs():
    """1×1 convs read no padding: γ-zeroed equals compact in every ring."""
    layers = tuple(dataclasses.replace(layer, size=1, pad=False, padding=0)
                   if isinstance(layer, ir.Conv) else layer for layer in SYNTH.layers)
    graph = dataclasses.replace(SYNTH, layers=layers)
    result = passes.prune(graph, random_variables(graph, seed=2, sparsity=0.6),
                          passes.PruneConfig(percent=0.5))
    diffs = measure_prune_diffs(graph, result, size=128)
    assert diffs["max_abs_diff_gamma_zeroed_vs_compact"] < 1e-4
