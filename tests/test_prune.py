"""Pruning passes: keep-size = compact, masks, floors, folding exactness, errors."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ir
import passes
import runtime
from darkslim.testing.strategies import random_variables
from ir import layer_key
from tests.conftest import cfg_path


def at_size(graph: ir.Graph, size: int) -> ir.Graph:
    return ir.with_input_size(graph, size)


def narrow(graph: ir.Graph, factor: int) -> ir.Graph:
    return ir.narrow(graph, factor, min_filters=2)


def small(name: str) -> ir.Graph:
    graph = ir.parse_cfg(cfg_path(name))
    if name != "yolov3-tiny.cfg":
        graph = narrow(graph, 8)
    return at_size(graph, 64)


def outputs(prog, x):
    out = runtime.forward(*prog, jnp.asarray(x))
    return [np.asarray(h) for h in out.heads]


def max_rel_diff(prog_a, prog_b, x) -> float:
    a, b = outputs(prog_a, x), outputs(prog_b, x)
    return max(float(np.abs(ha - hb).max() / max(np.abs(hb).max(), 1e-6))
               for ha, hb in zip(a, b))


REAL = ["yolov3.cfg", "yolov3-tiny.cfg", "yolov3-spp.cfg", "yolov3-hand.cfg",
        "prune_yolov3-hand.cfg"]


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("mode", ["regular", "shortcut"])
def test_keep_size_equals_compact_on_real_cfgs(name, mode):
    graph = small(name)
    variables = random_variables(graph, seed=3, sparsity=0.6)
    result = passes.prune(graph, variables, passes.PruneConfig(percent=0.5, mode=mode))
    assert ir.count_params(result.compact[0]) < ir.count_params(graph)
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    assert max_rel_diff(result.keep_size, result.compact, x) <= 1e-4
    for layer in result.compact[0].layers:
        if isinstance(layer, ir.Conv):
            assert layer.filters >= 1


def test_shortcut_group_shares_one_mask():
    graph = small("yolov3.cfg")
    variables = random_variables(graph, seed=1, sparsity=0.5)
    result = passes.prune(graph, variables, passes.PruneConfig(percent=0.4, mode="shortcut"))
    masks = result.masks.as_dict()
    assert result.analysis.groups
    for group in result.analysis.groups:
        first = masks[group[0]]
        assert all(np.array_equal(masks[m], first) for m in group)
        # The union rule: a channel survives when any member's |γ| reaches the threshold.
        gammas = np.stack([np.abs(variables["params"][layer_key(m)]["bn"]["scale"])
                           for m in group])
        expected = (gammas >= result.threshold.value).any(axis=0)
        # ... and the min_keep floor (default 1%, at least one channel) tops it up with
        # the channels of highest union |γ|, never dropping one the rule keeps.
        floor = max(1, math.ceil(0.01 * len(first)))
        assert (first >= expected).all()
        assert first.sum() == max(expected.sum(), floor)
        if first.sum() > expected.sum():
            union = gammas.max(axis=0)
            assert union[first].min() >= union[~first].max()


def test_all_keep_masks_return_the_same_objects():
    graph = small("yolov3-tiny.cfg")
    variables = random_variables(graph, seed=0)
    analysis = passes.analyze_prunability(graph)
    keep_all = passes.ChannelMasks.from_arrays(
        {i: np.ones(graph.layers[i].filters, bool) for i in analysis.prunable}, graph)
    for pass_ in (passes.FoldPrunedBias(keep_all), passes.SliceChannels(keep_all)):
        g, v = pass_(graph, variables)
        assert g is graph and v is variables


def test_percent_zero_keeps_everything():
    graph = small("yolov3-tiny.cfg")
    variables = random_variables(graph, seed=0)
    result = passes.prune(graph, variables, passes.PruneConfig(percent=0.0))
    assert result.compact[0] == graph


def test_threshold_is_the_seeds_rule():
    graph = small("yolov3-hand.cfg")
    variables = random_variables(graph, seed=5, sparsity=0.5)
    analysis = passes.analyze_prunability(graph)
    gammas = np.concatenate([np.abs(variables["params"][layer_key(i)]["bn"]["scale"])
                             for i in analysis.prunable])
    ordered = np.sort(gammas)
    t = passes.compute_threshold(graph, variables, analysis, percent=0.3)
    assert t.value == ordered[int(len(ordered) * 0.3)]
    highest = min(np.abs(variables["params"][layer_key(i)]["bn"]["scale"]).max()
                  for i in analysis.prunable)
    assert t.safe_value == pytest.approx(highest)
    assert t.safe_percent == pytest.approx(np.flatnonzero(ordered == ordered[
        np.searchsorted(ordered, highest)])[0] / len(ordered))


def test_min_keep_floor_and_round_to():
    graph = small("yolov3-tiny.cfg")
    variables = random_variables(graph, seed=2, sparsity=0.9)
    analysis = passes.analyze_prunability(graph)
    masks = passes.compute_masks(graph, variables, analysis, threshold=1e9, min_keep=0.25)
    for mask in masks.as_dict().values():
        assert mask.sum() == int(np.ceil(0.25 * len(mask)))
    rounded = passes.compute_masks(graph, variables, analysis, threshold=0.01, round_to=8)
    for mask in rounded.as_dict().values():
        assert mask.sum() % 8 == 0 or mask.sum() == len(mask)


def test_folding_is_exact_away_from_the_border():
    """Border effect: a dropped channel's constant reaches a 3×3 consumer through zero
    padding at the border, so γ-zeroed and compact differ only in the border ring."""
    text = ("[net]\nwidth=16\nheight=16\nchannels=3\n"
            "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=1\nactivation=leaky\n"
            "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=linear\n"
            "[convolutional]\nfilters=7\nsize=1\nactivation=linear\n"
            "[yolo]\nmask=0\nanchors=4,4\nclasses=2\nnum=1\n")
    graph = ir.parse_cfg(text)
    variables = random_variables(graph, seed=0)
    masks = passes.ChannelMasks.from_arrays({0: np.array([1, 0, 1, 0, 1, 1, 0, 1], bool)},
                                         graph)
    zeroed = passes.ZeroPrunedGamma(masks)(graph, variables)
    compact = passes.pipeline(passes.FoldPrunedBias(masks), passes.SliceChannels(masks))(
        graph, variables)
    x = np.random.default_rng(1).random((1, 16, 16, 3), dtype=np.float32)
    a, b = outputs(zeroed, x)[0][0], outputs(compact, x)[0][0]
    diff = np.abs(a - b)
    assert diff[1:-1, 1:-1].max() < 1e-4
    assert diff[0].max() > 1e-3 and diff[-1].max() > 1e-3  # the ring really differs


@pytest.mark.parametrize("activation", [a.value for a in ir.Activation
                                        if not a.across_channels])
def test_folding_any_activation_through_shortcut_route_upsample(activation):
    # forward_shortcut_layer has no hard_mish case (Darknet outputs 0): refused there.
    short = "linear" if activation == "hard_mish" else activation
    text = ("[net]\nwidth=8\nheight=8\nchannels=3\n"
            f"[convolutional]\nbatch_normalize=1\nfilters=6\nsize=1\nactivation={activation}\n"
            "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=1\nactivation=leaky\n"
            f"[convolutional]\nbatch_normalize=1\nfilters=6\nsize=1\nactivation={activation}\n"
            f"[shortcut]\nfrom=-3\nactivation={short}\n"
            "[maxpool]\nsize=2\nstride=2\n[upsample]\nstride=2\n[route]\nlayers=-1,-5\n"
            "[convolutional]\nfilters=7\nsize=1\nactivation=linear\n"
            "[yolo]\nmask=0\nanchors=4,4\nclasses=2\nnum=1\n")
    graph = ir.parse_cfg(text)
    variables = random_variables(graph, seed=4)
    analysis = passes.analyze_prunability(graph, "shortcut")
    assert analysis.unit_of(0) == (0, 2)
    mask = np.array([1, 0, 0, 1, 1, 0], bool)
    masks = passes.ChannelMasks.from_arrays(
        {0: mask, 2: mask, 1: np.array([1, 0, 1, 1], bool)}, graph)
    zeroed = passes.ZeroPrunedGamma(masks)(graph, variables)
    keep = passes.FoldPrunedBias(masks)(graph, variables)
    compact = passes.SliceChannels(masks)(*keep)
    x = np.random.default_rng(2).random((1, 8, 8, 3), dtype=np.float32)
    # 1×1 consumers only: folding is exact everywhere, border included.
    assert max_rel_diff(zeroed, compact, x) <= 1e-4
    assert max_rel_diff(keep, compact, x) <= 1e-5
    assert [layer.filters for layer in compact[0].layers
            if isinstance(layer, ir.Conv)] == [3, 3, 3, 7]


def test_published_pruned_hand_cfg_is_reachable_by_slicing():
    """Weights sliced to Lam1360's published pruned cfg load and run."""
    full = ir.parse_cfg(cfg_path("yolov3-hand.cfg"))
    target = ir.parse_cfg(cfg_path("prune_yolov3-hand.cfg"))
    assert len(full.layers) == len(target.layers)
    masks = {}
    for i, (a, b) in enumerate(zip(full.layers, target.layers)):
        if isinstance(a, ir.Conv) and a.filters != b.filters:
            masks[i] = np.arange(a.filters) < b.filters
    analysis = passes.analyze_prunability(full, ignore=(84, 96))
    assert set(masks) <= set(analysis.prunable)
    graph, target = at_size(full, 64), at_size(target, 64)
    variables = random_variables(graph, seed=0)
    channel_masks = passes.ChannelMasks.from_arrays(masks, graph)
    g, v = passes.pipeline(passes.FoldPrunedBias(channel_masks),
                           passes.SliceChannels(channel_masks))(graph, variables)
    assert g == target
    out = runtime.forward(g, v, jnp.zeros((1, 64, 64, 3)))
    assert [h.shape[-1] for h in out.heads] == [18, 18, 18]


def test_pipeline_composes_and_names_failing_pass():
    graph = small("yolov3-tiny.cfg")
    variables = random_variables(graph, seed=0, sparsity=0.5)
    analysis = passes.analyze_prunability(graph)
    t = passes.compute_threshold(graph, variables, analysis, percent=0.5)
    masks = passes.compute_masks(graph, variables, analysis, t.value)
    fold, cut = passes.FoldPrunedBias(masks), passes.SliceChannels(masks)
    g1, v1 = passes.pipeline(fold, cut)(graph, variables)
    g2, v2 = cut(*fold(graph, variables))
    assert g1 == g2
    assert all(np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(v1), jax.tree_util.tree_leaves(v2)))

    class Broken:
        name = "broken"

        def __call__(self, graph, variables):
            layer = dataclasses.replace(graph.layers[-2], filters=3)
            return graph.replace_layers({len(graph.layers) - 2: layer}), variables

    with pytest.raises(passes.PruneError, match=r"pass 'broken' failed \(after "
                       r"fold-pruned-bias, slice-channels\)") as info:
        passes.pipeline(fold, cut, Broken())(graph, variables)
    assert isinstance(info.value.__cause__, ir.CfgError)


def test_bad_requests_are_prune_errors():
    graph = small("yolov3-tiny.cfg")
    variables = random_variables(graph, seed=0, sparsity=0.5)
    with pytest.raises(passes.PruneError, match=r"^percent=1.0: expected 0 <= percent < 1") \
            as info:
        passes.prune(graph, variables, passes.SlimChannels(percent=1.0))
    assert info.value.argument == "percent" and info.value.pass_name == "slim-channels"
    with pytest.raises(passes.PruneError, match=r"^percent=-0.1"):
        passes.SlimChannels(percent=-0.1)
    with pytest.raises(passes.PruneError, match=r"^min_keep=2"):
        passes.SlimChannels(percent=0.5, min_keep=2)
    with pytest.raises(passes.PruneError, match=r"^ignore=1: layer 1 is a \[maxpool\]"):
        passes.SlimChannels(percent=0.5, ignore=(1,))(graph, variables)
    with pytest.raises(passes.PruneError, match=r"layer 0 \(cfg line 25\): threshold 100 "
                       r"keeps none of its 16 channels"):
        passes.prune(graph, variables, passes.SlimChannels(threshold=100.0, min_keep=0.0))
    nan = jax_tree_set(variables, "layer_2", np.nan)
    with pytest.raises(passes.PruneError, match=r"layer 2 \(cfg line 37\): BN γ channel 0 is nan"):
        passes.prune(graph, nan, passes.SlimChannels(percent=0.5))


def test_fresh_darknet_variables_are_refused_sparse_ones_prune():
    """γ = 1 everywhere (Darknet's init) gives nothing to rank: an error, not a no-op."""
    graph = small("yolov3-tiny.cfg")
    with pytest.raises(passes.PruneError, match=r"every prunable \|γ\| is 1.*'sparse'"):
        passes.SlimChannels(percent=0.5)(graph, ir.init_variables(graph, "darknet"))
    g, _ = passes.SlimChannels(percent=0.5)(graph, ir.init_variables(graph, "sparse"))
    assert ir.count_params(g) < ir.count_params(graph)


def test_stale_masks_name_the_pass_and_the_first_differing_layer():
    """Masks computed on yolov3, applied after a block was removed (issue 14)."""
    graph = ir.parse_cfg(cfg_path("yolov3.cfg"))
    variables = ir.init_variables(graph, "sparse", seed=1)
    analysis = passes.analyze_prunability(graph)
    t = passes.compute_threshold(graph, variables, analysis, percent=0.5)
    m = passes.compute_masks(graph, variables, analysis, t.value)
    stale = passes.pipeline(passes.RemoveBlocks(blocks=(40,)), passes.FoldPrunedBias(m),
                            passes.SliceChannels(m))
    with pytest.raises(passes.PruneError, match=r"pass 'fold-pruned-bias' failed \(after "
                       r"remove-blocks\): .*computed on another graph .*107 layers.*104 "
                       r"layers.*first differ at layer 59 \(\[convolutional\] at cfg "
                       r"line \d+\)"):
        stale(graph, variables)
    # Computed on the graph they apply to, the same masks are fine.
    passes.pipeline(passes.FoldPrunedBias(m), passes.SliceChannels(m))(graph, variables)


@pytest.mark.parametrize("masks,message", [
    ({0: np.ones(15, bool)}, r"mask for layer 0 \(cfg line 25\): 15 entries; expected 16"),
    ({1: np.ones(16, bool)}, r"mask for layer 1 \(cfg line 33\): a \[maxpool\]; expected "
                             r"a \[convolutional\]"),
    ({15: np.ones(255, bool)}, r"mask for layer 15 \(cfg line \d+\): a conv without "
                               "BatchNorm"),
    ({99: np.ones(3, bool)}, r"mask for layer 99: out of range \(0..23\)"),
    ({0: np.zeros(16, bool)}, r"mask for layer 0 \(cfg line 25\): keeps none of its 16"),
])
@pytest.mark.parametrize("make", [passes.FoldPrunedBias, passes.SliceChannels,
                                  passes.ZeroPrunedGamma])
def test_bad_masks_name_the_pass_and_the_layer(masks, message, make):
    graph = small("yolov3-tiny.cfg")
    variables = random_variables(graph, seed=0)
    pass_ = make(passes.ChannelMasks.from_arrays(masks, graph))
    with pytest.raises(passes.PruneError, match=rf"^{pass_.name}: {message}"):
        pass_(graph, variables)


def test_pipelines_verify_every_variable_after_each_pass():
    """A pass that sets filters=8 but keeps the 16-wide kernel fails, naming the pass
    and the layer (the graph alone verifies)."""
    graph = small("yolov3-tiny.cfg")
    variables = random_variables(graph, seed=0)

    class Narrow:
        name = "narrow"

        def __call__(self, g, v):
            return g.replace_layers({0: dataclasses.replace(g.layers[0], filters=8)}), v

    ir.verify(Narrow()(graph, variables)[0])
    with pytest.raises(passes.PruneError, match=r"pass 'narrow' failed \(after "
                       r"slim-channels\): the output of 'narrow': \d+ variable\(s\) do not "
                       r"fit .*\n  params/layer_0/conv/kernel \(layer 0 \(\[convolutional\] "
                       r"at .*\)\): expected shape \(3, 3, 3, 8\), found \(3, 3, 3, 16\)"):
        passes.pipeline(passes.SlimChannels(percent=0.0), Narrow())(graph, variables)
    with pytest.raises(passes.PruneError, match=r"(?s)the pipeline's input: .*layer_0/conv/kernel"):
        passes.pipeline(passes.SlimChannels(percent=0.0))(*Narrow()(graph, variables))


def jax_tree_set(variables, key, value):
    params = dict(variables["params"])
    layer = dict(params[key])
    scale = np.array(layer["bn"]["scale"])
    scale[0] = value
    layer["bn"] = {**layer["bn"], "scale": scale}
    params[key] = layer
    return {**variables, "params": params}


@pytest.mark.parametrize("activation", [a.value for a in ir.Activation if a.across_channels])
def test_activations_across_channels_block_their_conv(activation):
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=1\n"
                         f"activation={activation}\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=1\n"
                         "activation=leaky\n")
    analysis = passes.analyze_prunability(graph)
    assert analysis.prunable == (1,)
    assert "normalises across channels" in analysis.reason(0)
