"""Layer pruning: residual-block analysis, ranking, removal, composition (the CLI:
test_cli_prune.py)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import frontends
import ir
import passes
from darkslim.testing import (
    assert_equivalent,
    assert_identity_when_noop,
    assert_pass_is_pure,
    assert_roundtrip_cfg,
    assert_roundtrip_weights,
    assert_verifies,
    programs,
    random_inputs,
    random_variables,
    reference_forward,
    tree_diff,
)
from ir.activations import ACTIVATIONS
from passes import tree
from tests.conftest import cfg_path
from tests.test_prune import small  # filters // 8 except the convs feeding [yolo], at 64

REAL = ["yolov3.cfg", "yolov3-spp.cfg"]


def zero_blocks(variables, blocks):
    """γ = β = 0 in each block's conv feeding the shortcut: the block adds act(0)."""
    updates = {}
    for b in blocks:
        for leaf in (tree.GAMMA, tree.BETA):
            updates[(b.gamma_conv, leaf)] = np.zeros_like(tree.get(variables, b.gamma_conv,
                                                                   leaf))
    return tree.with_updates(variables, updates)


def probe(graph: ir.Graph, index: int) -> ir.Graph:
    """``graph`` up to layer ``index``, plus a [yolo] whose raw head is that layer's
    output, so a forward pass returns it. Earlier heads become identity maxpools
    (size 1), which keeps every index."""
    c = ir.verify(graph)[index].c
    head = ir.Yolo(mask=(0,), anchors=((10.0, 10.0),), classes=c - 5, num=1)
    layers = tuple(ir.MaxPool(size=1, stride=1) if isinstance(layer, ir.Yolo) else layer
                   for layer in graph.layers[:index + 1])
    return dataclasses.replace(graph, layers=(*layers, head))


def cfg_text(*sections: str, size: int = 16) -> ir.Graph:
    return ir.parse_cfg(f"[net]\nwidth={size}\nheight={size}\nchannels=3\n\n"
                        + "\n\n".join(sections) + "\n")


CONV = "[convolutional]\nbatch_normalize=1\nfilters={}\nsize={}\nstride=1\npad=1\nactivation=leaky"


def conv(filters: int = 4, size: int = 1) -> str:
    return CONV.format(filters, size)


# ---------------------------------------------------------------------------- analysis


@pytest.mark.parametrize("name,count", [("yolov3.cfg", 23), ("yolov3-spp.cfg", 23),
                                        ("yolov3-hand.cfg", 23), ("yolov3-tiny.cfg", 0)])
def test_real_cfgs_have_the_expected_removable_blocks(name, count):
    graph = ir.parse_cfg(cfg_path(name))
    analysis = passes.analyze_blocks(graph)
    assert len(analysis.blocks) == count
    assert analysis.reasons == ()
    for b in analysis.blocks:
        assert isinstance(graph.layers[b.shortcut], ir.Shortcut)
        assert graph.layers[b.shortcut].inputs == (b.shortcut - 1, b.source)
        assert b.convs == (b.shortcut - 2, b.shortcut - 1)  # darknet53: 1x1 then 3x3
        assert b.gamma_conv == b.shortcut - 1
    assert passes.find_residual_blocks(graph) == analysis.blocks


def test_each_unremovable_shortcut_says_why():
    graph = cfg_text(
        conv(4),                                                      # 0
        conv(2), conv(4, 3), "[shortcut]\nfrom=-3\nactivation=leaky",  # 1-3
        conv(2), conv(4, 3), "[shortcut]\nfrom=-3\nactivation=linear",  # 4-6 removable
        "[shortcut]\nfrom=-1\nactivation=linear",                      # 7
        conv(4), "[maxpool]\nsize=2\nstride=1", "[shortcut]\nfrom=-3",  # 8-10
        conv(4), conv(4), "[shortcut]\nfrom=-3",                        # 11-13 read below
        conv(4), "[shortcut]\nfrom=-2,-5",                              # 14-15
        conv(8), "[shortcut]\nfrom=-2",                                 # 16-17
        conv(4), "[shortcut]\nfrom=-2\nweights_type=per_feature",       # 18-19
        "[route]\nlayers=11,-1",                                        # 20
    )
    analysis = passes.analyze_blocks(graph)
    assert [b.shortcut for b in analysis.blocks] == [6]
    reasons = dict(analysis.reasons)
    assert set(reasons) == {3, 7, 10, 13, 15, 17, 19}
    assert "activation=leaky" in reasons[3]
    assert "from=-1 adds layer 6 to itself" in reasons[7]
    assert "layer 9 between from=7 and the shortcut is a [maxpool]" in reasons[10]
    assert "[route] layer 20 (cfg line" in reasons[13] and "reads layer 11" in reasons[13]
    assert "adds 3 inputs" in reasons[15]
    assert "adds 8 channels (layer 16) to 4 (layer 15)" in reasons[17]
    assert "weights_type=per_feature" in reasons[19]
    assert all(r.startswith(f"[shortcut] layer {s} (cfg line") for s, r in reasons.items())


# ---------------------------------------------------------------------------- ranking


def test_ranking_by_gamma_and_custom_scores():
    graph = small("yolov3.cfg")
    variables = random_variables(graph, seed=2)
    blocks = passes.find_residual_blocks(graph)
    gammas = {b.shortcut: np.abs(tree.get(variables, b.gamma_conv, tree.GAMMA))
              for b in blocks}
    ranked = passes.rank_blocks(graph, variables)
    assert [sb.score for sb in ranked] == sorted(sb.score for sb in ranked)
    for sb in ranked:
        assert sb.score == pytest.approx(float(gammas[sb.block.shortcut].mean()))
    by_max = passes.rank_blocks(graph, variables, score=lambda g: float(np.abs(g).max()))
    assert [sb.block for sb in by_max] != [sb.block for sb in ranked]
    chosen = passes.choose_blocks(graph, variables, n=5)
    assert {sb.block for sb in chosen} == {sb.block for sb in ranked[:5]}
    assert [sb.block.shortcut for sb in chosen] == sorted(sb.block.shortcut for sb in chosen)
    cut = ranked[7].score
    below = passes.choose_blocks(graph, variables, threshold=cut)
    assert {sb.block for sb in below} == {sb.block for sb in ranked[:7]}


# ---------------------------------------------------------------------------- removal


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("k", [1, 8, 23])
def test_removing_k_blocks_gives_a_valid_network(name, k, tmp_path):
    graph = small(name)
    variables = random_variables(graph, seed=k, sparsity=0.5)
    g, v = passes.RemoveBlocks(n=k)(graph, variables)
    assert len(g.layers) == len(graph.layers) - 3 * k
    assert len(passes.find_residual_blocks(g)) == 23 - k
    assert_verifies(g)
    assert_roundtrip_cfg(g)
    (tmp_path / "g.cfg").write_text(ir.write_cfg(g))
    frontends.save_variables(g, v, tmp_path / "g.weights")
    reread = ir.parse_cfg(tmp_path / "g.cfg")
    loaded = frontends.load_variables(reread, tmp_path / "g.weights")
    assert loaded.loaded_convs == loaded.total_convs == len(g.conv_indices())
    assert tree_diff(v, loaded.variables) is None
    out = reference_forward(reread, loaded.variables, random_inputs(g, seed=0))
    before = reference_forward(graph, variables, random_inputs(graph, seed=0))
    assert [h.shape for h in out.heads] == [h.shape for h in before.heads]
    assert all(np.isfinite(h).all() for h in out.heads)
    assert ir.count_params(g) < ir.count_params(graph)


@pytest.mark.parametrize("name", REAL)
def test_blocks_that_add_zero_are_removed_exactly(name):
    """γ = β = 0 in the conv feeding the shortcut and leaky(0) = 0: the block adds
    exactly zero, so the network without it computes the same (runtime, jit)."""
    graph = small(name)
    variables = random_variables(graph, seed=4)
    blocks = passes.find_residual_blocks(graph)
    zeroed = [blocks[i] for i in (0, 1, 3, 7, 11, 12, 19, 22)]  # chained ones too
    variables = zero_blocks(variables, zeroed)
    pass_ = passes.RemoveBlocks(n=8)
    assert [sb.block for sb in pass_.select(graph, variables)] == zeroed  # score 0
    removed = pass_(graph, variables)
    assert_equivalent((graph, variables), removed, random_inputs(graph, seed=1, batch=2),
                      rtol=1e-6)


def test_a_route_across_removed_blocks_reads_the_same_tensor():
    """yolov3's [route] layers=-1,61 (layer 86) reads layer 85 and the shortcut 61.
    Remove a block before 61 and the block closed by 61 itself: the route must still
    read what it read (61 now reads as that block's source, which equals it)."""
    graph = small("yolov3.cfg")
    route = 86
    assert graph.layers[route].inputs == (85, 61)
    variables = zero_blocks(random_variables(graph, seed=5),
                            [passes.analyze_blocks(graph).block(s) for s in (40, 61)])
    for chosen in [(40,), (40, 61)]:
        g, v = passes.RemoveBlocks(blocks=chosen)(graph, variables)
        analysis = passes.analyze_blocks(graph)
        mapping = passes.layer_map(graph, [analysis.block(s) for s in chosen])
        new_route = mapping[route]
        assert new_route == route - 3 * len(chosen)
        assert g.layers[new_route].inputs == (mapping[85], mapping[61])
        if 61 in chosen:
            assert mapping[61] == mapping[58]  # the source of the block closed by 61
        assert_equivalent((probe(graph, route), variables), (probe(g, new_route), v),
                          random_inputs(graph, seed=3), rtol=1e-6,
                          forward=reference_forward)
        # Not vacuous: the same probe one layer off reads a different tensor.
        with pytest.raises(AssertionError):
            shifted = dataclasses.replace(g.layers[new_route],
                                          inputs=(new_route - 1, mapping[61] - 1))
            g_bad = g.replace_layers({new_route: shifted})
            assert_equivalent((probe(graph, route), variables),
                              (probe(g_bad, new_route), v),
                              random_inputs(graph, seed=3), rtol=1e-6,
                              forward=reference_forward)


def test_explicit_blocks_noop_purity_and_errors():
    graph = small("yolov3.cfg")
    variables = random_variables(graph, seed=6)
    program = (graph, variables)
    assert_identity_when_noop(passes.RemoveBlocks(n=0), program)
    assert_identity_when_noop(passes.RemoveBlocks(blocks=()), program)
    assert_pass_is_pure(passes.RemoveBlocks(n=3), program)
    # Chained blocks: 11 adds back 8, the shortcut of the block before it.
    chained = passes.analyze_blocks(graph)
    assert chained.block(11).source == 8 and chained.block(8).source == 5
    g, _ = passes.RemoveBlocks(blocks=(8, 11))(*program)
    mapping = passes.layer_map(graph, [chained.block(8), chained.block(11)])
    assert mapping[11] == mapping[8] == mapping[5] == 5 and mapping[12] == 6
    assert g.layers[6] == graph.layers[12]
    assert g.layers[9] == dataclasses.replace(graph.layers[15], inputs=(8, 6))
    with pytest.raises(passes.PruneError, match=r"block 5: not removable: layer 5 is a "
                       r"\[convolutional\]"):
        passes.RemoveBlocks(blocks=(5,))(*program)
    with pytest.raises(passes.PruneError, match=r"^n=24: expected 0 <= n <= 23"):
        passes.RemoveBlocks(n=24)(*program)
    with pytest.raises(passes.PruneError, match="exactly one of blocks, n or threshold"):
        passes.RemoveBlocks(n=2, threshold=0.5)(*program)
    bad = tree.with_updates(variables, {(3, tree.GAMMA): np.full(
        graph.layers[3].filters, np.nan, np.float32)})
    with pytest.raises(passes.PruneError, match=r"layer 3 \(cfg line \d+\): BN γ channel 0"):
        passes.RemoveBlocks(n=2)(graph, bad)


def test_remove_blocks_in_a_pipeline_with_jax_arrays():
    graph = small("yolov3-spp.cfg")
    variables = random_variables(graph, seed=8)
    on_device = {c: {k: {p: {n: jnp.asarray(a) for n, a in leaves.items()}
                         for p, leaves in layer.items()} for k, layer in layers.items()}
                 for c, layers in variables.items()}
    g, v = passes.pipeline(passes.RemoveBlocks(n=4))(graph, on_device)
    g2, v2 = passes.RemoveBlocks(n=4)(graph, variables)
    assert g == g2
    assert tree_diff(v2, v) is None


# ------------------------------------------------------------------------- composition


def test_blocks_and_channels_commute_in_regular_mode():
    """Regular mode keeps shortcut groups whole, so with an explicit threshold the
    kept channels do not depend on the removed blocks: remove∘prune == prune∘remove."""
    graph = small("yolov3.cfg")
    variables = random_variables(graph, seed=9, sparsity=0.5)
    blocks = passes.RemoveBlocks(blocks=(8, 15, 40, 61, 74))
    config = passes.PruneConfig(threshold=0.05)
    g1, v1 = blocks(*passes.prune(graph, variables, config).compact)
    g2, v2 = passes.prune(*blocks(graph, variables), config).compact
    assert g1 == g2 and g1 != graph
    assert tree_diff(v1, v2) is None


@pytest.mark.parametrize("mode", ["regular", "shortcut"])
def test_blocks_then_channels_and_channels_then_blocks(mode):
    graph = small("yolov3-spp.cfg")
    variables = random_variables(graph, seed=10, sparsity=0.5)
    config = passes.PruneConfig(percent=0.5, mode=mode)
    x = random_inputs(graph, seed=2)
    # Blocks first: the channel prune's keep-size and compact networks still agree.
    result = passes.prune(*passes.RemoveBlocks(n=6)(graph, variables), config)
    assert_equivalent(result.keep_size, result.compact, x, forward=reference_forward)
    # Channels first, then blocks that were zeroed beforehand: the removal is exact.
    blocks = passes.find_residual_blocks(graph)[::4]
    zeroed = zero_blocks(variables, blocks)
    compact = passes.prune(graph, zeroed, config).compact
    shortcuts = tuple(b.shortcut for b in blocks)
    removed = passes.pipeline(passes.RemoveBlocks(blocks=shortcuts))(*compact)
    assert_verifies(removed[0])
    assert_roundtrip_cfg(removed[0])
    assert ir.count_flops(removed[0]) < ir.count_flops(compact[0])
    assert_equivalent(compact, removed, x, rtol=1e-6, forward=reference_forward)


# ---------------------------------------------------------------------------- property

NO_LOGISTIC = tuple(a for a in ir.Activation if not a.across_channels
                    and ACTIVATIONS[a](np, np.zeros(1))[0] == 0)
# Residual stages alone, and mixed with routes (which may read inside a block), SPP,
# upsample + concat and heads in the middle. Only activations with act(0) = 0 (not the
# logistic, plse, ...) so a block with γ = β = 0 adds exactly zero.
RESIDUAL_PROGRAMS = st.one_of(
    programs(min_blocks=2, max_blocks=6, activations=NO_LOGISTIC,
             kinds=("conv", "residual")),
    programs(min_blocks=3, max_blocks=8, activations=NO_LOGISTIC,
             kinds=("conv", "residual", "route", "spp", "upsample", "head")))


@settings(max_examples=120)  # three in four graphs draw no removable block
@given(RESIDUAL_PROGRAMS, st.data())
def test_removing_random_blocks_from_random_graphs(program, data):
    graph, variables = program
    blocks = passes.find_residual_blocks(graph)
    if not blocks:
        event("no removable block")
        assert_identity_when_noop(passes.RemoveBlocks(n=0), program)
        return
    picked = data.draw(st.lists(st.sampled_from(blocks), min_size=1, unique=True),
                       label="blocks")
    event(f"removed {len(picked)} of {len(blocks)}")
    shortcuts = tuple(b.shortcut for b in picked)
    g, v = passes.RemoveBlocks(blocks=shortcuts)(graph, variables)
    assert len(g.layers) == len(graph.layers) - sum(len(b.layers) for b in picked)
    assert_verifies(g)
    assert_roundtrip_cfg(g)
    assert_roundtrip_weights(g, v, "darknet")
    survivors = {b.shortcut for b in blocks} - set(shortcuts)
    mapping = passes.layer_map(graph, picked)
    assert {b.shortcut for b in passes.find_residual_blocks(g)} >= {
        mapping[s] for s in survivors}
    # The block adds exactly zero when its last conv has γ = β = 0 (act(0) = 0).
    zeroed = zero_blocks(variables, picked)
    x = random_inputs(graph, seed=0)
    assert_equivalent((graph, zeroed), passes.RemoveBlocks(blocks=shortcuts)(graph, zeroed),
                      x, rtol=1e-9, forward=reference_forward)
