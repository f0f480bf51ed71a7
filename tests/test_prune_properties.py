"""Properties of the pruning passes over random Darknet graphs (darkslim.testing)."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ir
import passes
from darkslim.testing import (
    assert_equivalent,
    assert_identity_when_noop,
    assert_pass_is_pure,
    assert_verifies,
    graphs,
    masks,
    programs,
    random_inputs,
    random_variables,
    reference_forward,
)

MODES = st.sampled_from(["regular", "shortcut"])


def analysis_and_masks(data, graph, mode):
    analysis = passes.analyze_prunability(graph, mode)
    assume(analysis.units)  # nothing to prune tests nothing
    return analysis, data.draw(masks(graph, analysis), label="masks")


@settings(max_examples=25)
@given(programs(max_blocks=6), MODES, st.data())
def test_keep_size_equals_compact(program, mode, data):
    graph, variables = program
    analysis, channel_masks = analysis_and_masks(data, graph, mode)
    keep = passes.FoldPrunedBias(channel_masks)(graph, variables)
    compact = passes.pipeline(passes.FoldPrunedBias(channel_masks),
                              passes.SliceChannels(channel_masks))(graph, variables)
    assert_verifies(keep[0])
    shapes = assert_verifies(compact[0])
    for i in analysis.prunable:  # a conv's filters, a [connected]'s outputs
        assert shapes[i].c == int(channel_masks.get(i).sum()) >= 1
    assert_equivalent(keep, compact, random_inputs(graph, seed=1, batch=2), rtol=1e-4,
                      forward=reference_forward)


def pointwise(graph: ir.Graph) -> ir.Graph:
    """The same graph with every conv 1×1: no zero-padded border anywhere."""
    layers = tuple(dataclasses.replace(layer, size=1, pad=False, padding=0)
                   if isinstance(layer, ir.Conv) else layer for layer in graph.layers)
    return dataclasses.replace(graph, layers=layers)


@settings(max_examples=25)
@given(graphs(max_blocks=6), MODES, st.integers(0, 2**16), st.data())
def test_folding_is_exact_without_borders(graph, mode, seed, data):
    """With 1×1 convs only, the γ-zeroed network (dropped channels still emit
    act(β)) computes exactly what the compact one does: the folding is right."""
    graph = pointwise(graph)
    variables = random_variables(graph, seed, sparsity=0.3)
    _, channel_masks = analysis_and_masks(data, graph, mode)
    zeroed = passes.ZeroPrunedGamma(channel_masks)(graph, variables)
    compact = passes.pipeline(passes.FoldPrunedBias(channel_masks),
                              passes.SliceChannels(channel_masks))(graph, variables)
    assert_equivalent(zeroed, compact, random_inputs(graph, seed=2), rtol=1e-4,
                      forward=reference_forward)


@settings(max_examples=40)
@given(programs(max_blocks=8), st.data())
def test_coupled_units_share_one_mask(program, data):
    graph, variables = program
    analysis, channel_masks = analysis_and_masks(data, graph, "shortcut")
    # Every [shortcut] couples the convs whose outputs it adds (through other
    # shortcuts): they are in one unit, or none of them is prunable.
    unit_of = {i: unit for unit in analysis.units for i in unit}
    for members in shortcut_members(graph):
        units = {unit_of.get(i) for i in members}
        assert len(units) == 1, (members, units)
    # The masks a threshold chooses follow the units: one mask per unit, never empty.
    t = passes.compute_threshold(graph, variables, analysis, percent=0.5)
    chosen = passes.compute_masks(graph, variables, analysis, t.value).as_dict()
    assert set(chosen) == set(unit_of)
    for unit in analysis.units:
        assert all(np.array_equal(chosen[m], chosen[unit[0]]) for m in unit)
        assert chosen[unit[0]].any()  # never emptied
    # The drawn masks, sliced: the convs of a unit keep the same channel count.
    compact, _ = passes.SliceChannels(channel_masks)(graph, variables)
    shapes = ir.verify(compact)
    for unit in analysis.units:
        assert len({shapes[i].c for i in unit}) == 1
    by_layer = channel_masks.as_dict()
    for unit, groups in analysis.balanced:  # [route] groups=: same count per slice
        for mask in (chosen[unit[0]], by_layer[unit[0]]):
            kept = mask.reshape(groups, -1).sum(axis=1)
            assert (kept == kept[0]).all(), (unit, groups, mask)


def shortcut_members(graph: ir.Graph) -> list[set[int]]:
    """For each [shortcut] whose inputs all come from convs (directly or through other
    shortcuts), those convs."""
    def producers(j: int) -> set[int] | None:
        layer = graph.layers[j]
        if isinstance(layer, ir.Conv):
            return {j}
        if isinstance(layer, ir.Shortcut):
            found = [producers(i) for i in layer.inputs]
            return None if None in found else set().union(*found)
        return None

    out = []
    for j, layer in enumerate(graph.layers):
        if isinstance(layer, ir.Shortcut):
            members = producers(j)
            if members is not None and len(members) > 1:
                out.append(members)
    return out


@settings(max_examples=25)
@given(programs(max_blocks=6), MODES)
def test_all_keep_masks_are_the_identity(program, mode):
    graph, variables = program
    analysis = passes.analyze_prunability(graph, mode)
    shapes = ir.verify(graph)
    keep_all = passes.ChannelMasks.from_arrays(
        {i: np.ones(shapes[i].c, bool) for i in analysis.prunable}, graph)
    for pass_ in (passes.FoldPrunedBias(keep_all), passes.SliceChannels(keep_all),
                  passes.ZeroPrunedGamma(keep_all)):
        assert_identity_when_noop(pass_, program)


@settings(max_examples=20)
@given(programs(max_blocks=5), MODES, st.data())
def test_passes_are_pure_and_compose(program, mode, data):
    graph, variables = program
    _, channel_masks = analysis_and_masks(data, graph, mode)
    fold, cut = passes.FoldPrunedBias(channel_masks), passes.SliceChannels(channel_masks)
    assert_pass_is_pure(fold, program)
    assert_pass_is_pure(cut, program)
    g1, v1 = passes.pipeline(fold, cut)(graph, variables)
    g2, v2 = cut(*fold(graph, variables))
    assert_verifies(g1)
    assert g1 == g2
    assert ir.write_cfg(g1) == ir.write_cfg(g2)
    flat1 = {k: np.asarray(x) for k, x in _flat(v1)}
    flat2 = {k: np.asarray(x) for k, x in _flat(v2)}
    assert flat1.keys() == flat2.keys()
    assert all(np.array_equal(flat1[k], flat2[k]) for k in flat1)


def _flat(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flat(v, prefix + (k,))
    else:
        yield prefix, tree


@settings(max_examples=25)
@given(programs(max_blocks=6, styles=("classifier",)), MODES, st.data())
def test_keep_size_equals_compact_on_classifiers(program, mode, data):
    """Classifiers: [connected] after a global [avgpool] loses the input rows of
    dropped channels; a BN [connected] is pruned by its own γ; the softmax agrees."""
    graph, variables = program
    analysis, channel_masks = analysis_and_masks(data, graph, mode)
    keep = passes.FoldPrunedBias(channel_masks)(graph, variables)
    compact = passes.pipeline(passes.FoldPrunedBias(channel_masks),
                              passes.SliceChannels(channel_masks))(graph, variables)
    assert_verifies(compact[0])
    assert_equivalent(keep, compact, random_inputs(graph, seed=3, batch=2), rtol=1e-4,
                      forward=reference_forward)


@settings(max_examples=25)
@given(programs(max_blocks=6, kinds=("conv", "route_groups", "residual", "sam", "se",
                                      "dropout", "local_avgpool", "dilated"),
                head_kinds=("new_coords", "gaussian", "region")), MODES, st.data())
def test_keep_size_equals_compact_through_the_new_couplings(program, mode, data):
    """Denser in what issue 11 made prunable: [route] groups (balanced masks),
    [sam] and [scale_channels] (coupled), pass-through kinds, the new heads."""
    graph, variables = program
    analysis, channel_masks = analysis_and_masks(data, graph, mode)
    keep = passes.FoldPrunedBias(channel_masks)(graph, variables)
    compact = passes.pipeline(passes.FoldPrunedBias(channel_masks),
                              passes.SliceChannels(channel_masks))(graph, variables)
    assert_verifies(compact[0])
    assert_equivalent(keep, compact, random_inputs(graph, seed=4, batch=2), rtol=1e-4,
                      forward=reference_forward)


def test_the_generated_graphs_reach_the_new_pruning_paths():
    """The graphs the properties above draw do prune through what issue 11 opened:
    group-balanced [route] groups, [sam] and [scale_channels] couplings, BN [connected]
    units and [connected] after a global [avgpool] (its input rows sliced)."""
    seen: set[str] = set()

    @settings(max_examples=300, derandomize=True, database=None)
    @given(graphs(max_blocks=6))
    def record(graph):
        analysis = passes.analyze_prunability(graph, "shortcut")
        prunable = set(analysis.prunable)
        if analysis.balanced:
            seen.add("balanced")
        for i, layer in enumerate(graph.layers):
            reads = set(ir.layer_inputs(graph, i)) & prunable
            if isinstance(layer, (ir.Sam, ir.ScaleChannels)) and reads:
                seen.add(type(layer).__name__)
            if isinstance(layer, ir.Connected):
                if i in prunable:
                    seen.add("connected unit")
                if isinstance(graph.layers[i - 1], ir.AvgPool) and any(
                        seg.space in prunable
                        for seg in passes.channel_segments(graph)[i - 1]):
                    seen.add("connected after avgpool")

    record()
    assert seen == {"balanced", "Sam", "ScaleChannels", "connected unit",
                    "connected after avgpool"}, seen
