"""Layer references through block removal (issue 19): every layer index a layer holds
(``[route] layers``, ``from=`` of ``[shortcut]``, ``[sam]``, ``[scale_channels]``, a
conv's ``share_index``) is renumbered by its kind's ``renumber`` rule, and `ir.verify`
checks every one of them, so a stale reference can neither verify nor be written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import ir
import passes
from darkslim.testing import (
    assert_equivalent,
    assert_roundtrip_cfg,
    assert_verifies,
    graph_features,
    graphs,
    programs,
    random_inputs,
    random_variables,
    reference_forward,
)
from ir.activations import ACTIVATIONS
from passes import tree

CONV = ("[convolutional]\nbatch_normalize=1\nfilters={filters}\nsize={size}\npad=1\n"
        "activation={act}")


def conv(filters: int = 4, size: int = 1, act: str = "leaky", extra: str = "") -> str:
    return CONV.format(filters=filters, size=size, act=act) + (f"\n{extra}" if extra else "")


def cfg(*sections: str, size: int = 8) -> ir.Graph:
    return ir.parse_cfg(f"[net]\nwidth={size}\nheight={size}\nchannels=3\n\n"
                        + "\n\n".join(sections) + "\n")


#: conv 0, then a removable residual block 1..3 (conv 1x1, conv 3x3, [shortcut] from=-3).
BLOCK = (conv(4), conv(2), conv(4, 3), "[shortcut]\nfrom=-3\nactivation=linear")


def zeroed(graph: ir.Graph, variables, blocks):
    """γ = β = 0 where each block's γ lives (its gamma_conv, or the conv that one
    shares): with act(0) = 0 the block adds exactly zero."""
    updates = {}
    for b in blocks:
        owner = ir.variables_owner(graph.layers[b.gamma_conv], b.gamma_conv)
        for leaf in (tree.GAMMA, tree.BETA):
            updates[(owner, leaf)] = np.zeros_like(tree.get(variables, owner, leaf))
    return tree.with_updates(variables, updates)


def removes_exactly(graph: ir.Graph, shortcuts: tuple[int, ...], seed: int = 0):
    """RemoveBlocks(blocks=shortcuts) on ``graph`` with those blocks zeroed: the result
    verifies, writes and re-parses to itself, and computes what the graph computed."""
    analysis = passes.analyze_blocks(graph)
    blocks = [analysis.block(s) for s in shortcuts]
    variables = zeroed(graph, random_variables(graph, seed=seed), blocks)
    g, v = passes.RemoveBlocks(blocks=shortcuts)(graph, variables)
    assert_verifies(g)
    assert_roundtrip_cfg(g)
    assert_equivalent((graph, variables), (g, v), random_inputs(graph, seed=seed),
                      rtol=1e-9, forward=reference_forward)
    return g, v


# ------------------------------------------------------------------ the cases


def test_a_share_index_after_a_removed_block_is_renumbered():
    """Before: the conv kept share_index=4 at index 2; verify passed and the written
    cfg did not parse again (``share_index=4: layer 4 is not before this layer``)."""
    graph = cfg(*BLOCK, conv(4, 3), conv(4, 3, "relu", "share_index=-1\ndilation=2"))
    assert graph.layers[5].share == 4
    g, _ = removes_exactly(graph, (3,))
    assert len(g.layers) == 3 and g.layers[2].share == 1
    assert "share_index=1" in ir.write_cfg(g)


@pytest.mark.parametrize("reader", [
    (conv(4, 1, "logistic"), "[sam]\nfrom=-2\nactivation=linear"),
    ("[avgpool]", conv(4, 1, "logistic"), "[scale_channels]\nfrom=-3"),
    (conv(1, 1, "logistic"), "[scale_channels]\nfrom=-2\nscale_wh=1"),
], ids=["sam", "scale_channels", "scale_channels-wh"])
def test_sam_and_scale_channels_after_a_removed_block_are_renumbered(reader):
    """Before: RemoveBlocks left their inputs at the old indices (the graph failed to
    verify: ``[sam] (layer 2) reads layer 4, which is not before it``)."""
    graph = cfg(*BLOCK, *reader)
    last = len(graph.layers) - 1
    assert graph.layers[last].inputs == (last - 1, 3)
    g, _ = removes_exactly(graph, (3,))
    assert g.layers[-1].inputs == (last - 4, 0)  # the shortcut's readers read its source


def test_a_block_whose_conv_is_shared_from_outside_is_kept():
    graph = cfg(*BLOCK, conv(2, 1, "leaky", "share_index=1"))
    analysis = passes.analyze_blocks(graph)
    assert analysis.blocks == ()
    assert ("[convolutional] layer 4 (cfg line" in analysis.reason(3)
            and "runs with the weights of layer 1 (share_index), inside the block (1..3)"
            in analysis.reason(3))
    with pytest.raises(passes.PruneError, match=r"block 3: not removable: .*share_index"):
        passes.RemoveBlocks(blocks=(3,))(graph, random_variables(graph))
    # A block not from analyze_blocks: a clear error, never a stale index.
    forced = passes.ResidualBlock(source=0, shortcut=3, convs=(1, 2), gamma_conv=2)
    with pytest.raises(passes.PruneError, match=r"^\[convolutional\] layer 4 \(cfg line "
                       r"\d+\) refers to layer 1, which removing block 1\.\.3 deletes"):
        passes.remove_blocks(graph, random_variables(graph), [forced])


def test_a_shared_conv_inside_a_block_goes_with_it_and_ranks_by_its_owner():
    graph = cfg(conv(4), conv(4, 3), conv(4, 3, "mish", "share_index=1\ndilation=3"),
                "[shortcut]\nfrom=-2\nactivation=linear", conv(4))
    (block,) = passes.find_residual_blocks(graph)
    assert (block.source, block.convs, block.gamma_conv) == (1, (2,), 2)
    variables = random_variables(graph, seed=3)
    assert "layer_2" not in variables["params"]
    (scored,) = passes.rank_blocks(graph, variables)
    assert scored.score == pytest.approx(passes.mean_abs_gamma(
        tree.get(variables, 1, tree.GAMMA)))
    g, _ = removes_exactly(graph, (3,))
    assert [layer.share for layer in g.layers] == [None, None, None]


# ------------------------------------------------------------------ verify


def _with_share(graph: ir.Graph, index: int, share: int) -> ir.Graph:
    return graph.replace_layers({index: dataclasses.replace(graph.layers[index],
                                                            share=share)})


def test_verify_checks_every_reference_a_layer_holds():
    graph = cfg(conv(4, 3), conv(8), "[maxpool]\nsize=1\nstride=1", conv(4), conv(4, 3),
                conv(4, 3, "leaky", "share_index=-1"))
    line = graph.layers[5].line
    assert ir.layer_refs(graph, 5) == (4,) and ir.spec_of(graph.layers[5]).refs(
        graph.layers[5]) == (4,)
    assert ir.verify(graph)[5] == ir.Shape(4, 8, 8)
    cases = {
        9: r"refers to layer 9, which is not a layer before it",
        5: r"refers to layer 5, which is not a layer before it",
        -1: r"refers to layer -1, which is not a layer before it",
        2: r"share_index=2: layer 2 is a \[maxpool\] \(cfg line \d+\) that has none "
           r"weights",
        1: r"share_index=1: would run with layer 1's variables .*\(1, 1, 4, 8\).*: "
           r"expected .*\(3, 3, 4, 4\)",
        0: r"share_index=0: would run with layer 0's variables .*\(3, 3, 3, 4\).*: "
           r"expected .*\(3, 3, 4, 4\)",
        3: r"share_index=3: would run with layer 3's variables .*\(1, 1, 8, 4\).*: "
           r"expected .*\(3, 3, 4, 4\)",
    }
    for share, message in cases.items():
        with pytest.raises(ir.CfgError, match=rf"^<text>:{line}: \[convolutional\] "
                           rf"\(layer 5\) {message}"):
            ir.verify(_with_share(graph, 5, share))
    chained = cfg(conv(4), conv(4, 3), conv(4, 3, "leaky", "share_index=-1"),
                  conv(4, 3, "leaky", "share_index=-1"))
    with pytest.raises(ir.CfgError, match=r"\(layer 3\) share_index=2: layer 2 is a "
                       r"\[convolutional\] \(cfg line \d+\) that shares layer 1's weights: "
                       r"expected a \[convolutional\] with weights of its own"):
        ir.verify(chained)


def test_verify_checks_explicit_inputs_too():
    graph = cfg(*BLOCK, conv(4, 1, "logistic"), "[sam]\nfrom=-2")
    stale = graph.replace_layers({5: dataclasses.replace(graph.layers[5], inputs=(4, 7))})
    with pytest.raises(ir.CfgError, match=rf"^<text>:{graph.layers[5].line}: \[sam\] "
                       r"\(layer 5\) reads layer 7, which is not before it"):
        ir.verify(stale)


# ------------------------------------------------------------------ properties


def _shift(graph: ir.Graph, k: int) -> ir.Graph:
    """``graph`` behind ``k`` identity layers ([dropout]), every held index renumbered
    by its kind's rule."""
    layers = tuple(ir.spec_of(layer).renumber(layer, lambda j: j + k)
                   for layer in graph.layers)
    return dataclasses.replace(graph, layers=(*(ir.Dropout(probability=0.5),) * k, *layers))


@settings(max_examples=200)
@given(graphs(max_blocks=6, widths=(2, 6), sizes=(8, 16)), st.integers(1, 3))
def test_every_kind_renumbers_every_index_it_holds(graph, k):
    """Shift a graph by ``k`` layers through the renumber rules: each layer then reads
    and names exactly the shifted indices (the implicit previous layer included), so
    no kind holds an index its rule misses."""
    event(", ".join(sorted(graph_features(graph) & {"Sam", "ScaleChannels", "Shortcut",
                                                    "conv:share", "route:groups"})))
    shifted = _shift(graph, k)
    for i in range(len(graph.layers)):
        want = tuple(j + k if j >= 0 else k - 1 for j in ir.layer_refs(graph, i))
        assert ir.layer_refs(shifted, i + k) == want, (i, graph.layers[i])
        layer = graph.layers[i]
        assert ir.variables_owner(shifted.layers[i + k], i + k) == \
            ir.variables_owner(layer, i) + k
    assert ir.verify(shifted)[k:] == ir.verify(graph)


NO_LOGISTIC = tuple(a for a in ir.Activation if not a.across_channels
                    and ACTIVATIONS[a](np, np.zeros(1))[0] == 0)
#: Every reference-bearing kind beside residual blocks, small enough for 500 examples.
REFERENCES = ("residual", "route", "route_groups", "sam", "se", "share")


@settings(max_examples=500)
@given(programs(min_blocks=3, max_blocks=7, widths=(2, 4), sizes=(8, 8), kinds=REFERENCES,
                activations=NO_LOGISTIC, heads=(1, 1), classes=(1, 1), sparsity=0.0),
       st.data())
def test_removing_random_blocks_keeps_every_reference(program, data):
    graph, variables = program
    blocks = passes.find_residual_blocks(graph)
    event(", ".join(sorted(graph_features(graph) & {"Sam", "ScaleChannels", "conv:share",
                                                    "route:groups"})))
    if not blocks:
        event("no removable block")
        return
    picked = data.draw(st.lists(st.sampled_from(blocks), min_size=1, unique=True),
                       label="blocks")
    shortcuts = tuple(sorted(b.shortcut for b in picked))
    exact = all(b.gamma_conv is not None for b in picked)
    if exact:  # γ = β = 0 and act(0) = 0: the blocks add zero
        variables = zeroed(graph, variables, picked)
    event("exact" if exact else "runs")
    g, v = passes.RemoveBlocks(blocks=shortcuts)(graph, variables)
    assert len(g.layers) == len(graph.layers) - sum(len(b.layers) for b in picked)
    for _i, layer in enumerate(graph.layers[shortcuts[0] + 1:], shortcuts[0] + 1):
        if ir.spec_of(layer).refs(layer):  # a reference the removal renumbers
            event(f"renumbered [{layer.kind}]" + (" share" if getattr(layer, "share", None)
                                                  is not None else ""))
    assert_verifies(g)
    text = ir.write_cfg(g)
    assert ir.parse_cfg(text) == g and ir.write_cfg(ir.parse_cfg(text)) == text
    ir.check_variables(g, v, "RemoveBlocks")
    x = random_inputs(graph, seed=0)
    if exact:
        assert_equivalent((graph, variables), (g, v), x, rtol=1e-9,
                          forward=reference_forward)
    else:
        out = reference_forward(g, v, x)
        assert all(np.isfinite(h).all() for h in out.heads)

