"""The prune's check (darkslim.check): a float32 numpy forward on a small input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ir
import passes
from darkslim.check import CheckSizeError, check_size, heads_numpy, measure_prune_diffs
from darkslim.testing import masks, programs, random_inputs, random_variables, reference_forward
from tests.conftest import cfg_path

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
    # never above the cfg's own size: an 8x8 network is checked at 8x8, not 64x64
    assert check_size(ir.parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\nfilters=2\n"
                                   "stride=2\n")) == 8


def _parallel_cfg(blocks: int, branch: str, size: int = 256) -> ir.Graph:
    """``blocks`` downsampling blocks, each a stride-2 conv beside a ``branch``
    (``maxpool``: yolov7's MP blocks; ``reorg``: a space-to-depth) that also halves
    the map, concatenated; then a [yolo] head. Each block downsamples by 2, not 4."""
    side = {"maxpool": "[maxpool]\nsize=2\nstride=2\n",
            "reorg": "[reorg]\nstride=2\n"}[branch]
    conv = ("[convolutional]\nbatch_normalize=1\nfilters={f}\nsize={k}\nstride={s}\n"
            "pad=1\nactivation={a}\n\n")
    text = [f"[net]\nwidth={size}\nheight={size}\nchannels=3\n\n",
            conv.format(f=4, k=3, s=1, a="leaky")]
    for _ in range(blocks):
        text += [side, "\n[route]\nlayers=-2\n\n", conv.format(f=4, k=3, s=2, a="leaky"),
                 "[route]\nlayers=-1,-3\n\n", conv.format(f=4, k=1, s=1, a="leaky")]
    text += [conv.format(f=18, k=1, s=1, a="linear"),
             "[yolo]\nmask=0,1,2\nanchors=10,13,16,30,33,23\nclasses=1\nnum=3\n"]
    return ir.parse_cfg("".join(text))


@pytest.mark.parametrize(("name", "stride"), [("yolov3.cfg", 32), ("yolov3-tiny.cfg", 32),
                                              ("yolov3-spp.cfg", 32)])
def test_total_stride_of_the_real_cfgs(name, stride):
    graph = ir.parse_cfg(cfg_path(name))
    assert ir.total_stride(graph) == stride
    assert check_size(graph) == 64
    assert ir.total_stride(ir.with_input_size(graph, 256)) == stride


@pytest.mark.parametrize("branch", ["maxpool", "reorg"])
def test_parallel_downsampling_branches_count_once(branch):
    """Issue 19: multiplying every layer's stride counted each block twice (yolov7x
    was checked at 4096x4096 instead of 64x64)."""
    graph = _parallel_cfg(5, branch)
    assert ir.verify(graph)[-2].h == 256 // 32
    assert ir.total_stride(graph) == 32
    assert check_size(graph) == 64        # the old rule: 4**5 = 1024
    assert check_size(_parallel_cfg(3, branch)) == 64   # stride 8: heads 8x8 at 64


def test_total_stride_leaves_out_maps_that_do_not_follow_the_input():
    """A global average pool's 1x1 output is not a stride of 16."""
    graph = ir.parse_cfg(cfg_path("kinds-classifier-avgpool.cfg"))
    shapes = ir.verify(graph)
    assert any((s.h, s.w) == (1, 1) for s in shapes)
    assert ir.total_stride(graph) < graph.height
    assert ir.total_stride(ir.parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\n"
                                        "filters=2\nsize=1\n")) == 1


def test_check_size_is_capped():
    graph = ir.with_input_size(_parallel_cfg(5, "maxpool"), 1024)
    assert check_size(graph) == 64
    # A [connected] over the map pins the size: only the cfg's own fits, and above the
    # hard cap that is an error naming the way out, not a forward at 1024x1024.
    pinned = ir.parse_cfg("[net]\nwidth=1024\nheight=1024\nchannels=3\n"
                          "[convolutional]\nfilters=2\nsize=3\nstride=2\npad=1\n"
                          "[connected]\noutput=4\n")
    with pytest.raises(CheckSizeError, match=r"--check-size N.*--no-check"):
        check_size(pinned)
    assert check_size(pinned, maximum=1024) == 1024


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


@settings(max_examples=30)
@given(programs(max_blocks=6))
def test_check_size_runs_the_network_with_its_variables(program):
    """Whatever the graph, the check's size verifies with the variables of the cfg's
    size, is at most the cfg's size, and is a multiple of the total stride unless it
    is the cfg's own."""
    graph, _ = program
    size = check_size(graph)
    own = max(graph.height, graph.width)
    assert size <= own
    assert size == own or size % ir.total_stride(graph) == 0
    small = ir.with_input_size(graph, size)
    ir.verify(small)
    assert ir.expected_shapes(small) == ir.expected_shapes(graph)
