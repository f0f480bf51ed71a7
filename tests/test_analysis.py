"""Prunability analysis on the real cfgs: seed parity, groups, reasons."""

from __future__ import annotations

import numpy as np
import pytest

import ir
import passes
from darkslim.testing.strategies import random_variables
from tests.conftest import cfg_path


def seed_prune_idx(graph: ir.Graph, extra_ignore=(84, 96)) -> list[int]:
    """The seed's `parse_module_defs`, transcribed from the walkthrough: every BN conv
    except the conv before each [shortcut], its `from` conv (or, when `from` is a
    shortcut, the conv before that one), and the hard-coded 84 and 96."""
    layers = graph.layers
    cbl = [i for i, layer in enumerate(layers)
           if isinstance(layer, ir.Conv) and layer.batch_normalize]
    ignore = set(extra_ignore)
    for i, layer in enumerate(layers):
        if isinstance(layer, ir.Shortcut):
            ignore.add(i - 1)
            identity = layer.inputs[1]
            if isinstance(layers[identity], ir.Conv):
                ignore.add(identity)
            elif isinstance(layers[identity], ir.Shortcut):
                ignore.add(identity - 1)
    return [i for i in cbl if i not in ignore]


def test_regular_mode_matches_seed_on_hand_cfg():
    graph = ir.parse_cfg(cfg_path("yolov3-hand.cfg"))
    analysis = passes.analyze_prunability(graph, "regular", ignore=(84, 96))
    assert list(analysis.prunable) == seed_prune_idx(graph)
    # Written down from the walkthrough: 42 prunable CBL layers on yolov3-hand.
    assert len(analysis.prunable) == 42
    assert analysis.prunable[:6] == (0, 2, 6, 9, 13, 16)


def test_without_ignore_the_upsample_feeders_are_prunable():
    graph = ir.parse_cfg(cfg_path("yolov3-hand.cfg"))
    analysis = passes.analyze_prunability(graph, "regular")
    assert {84, 96} <= set(analysis.prunable)


@pytest.mark.parametrize("name", ["yolov3.cfg", "yolov3-spp.cfg", "yolov3-tiny.cfg"])
def test_yolo_feeders_and_plain_convs_are_not_prunable(name):
    graph = ir.parse_cfg(cfg_path(name))
    analysis = passes.analyze_prunability(graph, "shortcut")
    for y in graph.yolo_indices():
        assert y - 1 not in analysis.prunable
        assert "no BatchNorm" in analysis.reason(y - 1)


def test_shortcut_groups_of_yolov3():
    graph = ir.parse_cfg(cfg_path("yolov3.cfg"))
    analysis = passes.analyze_prunability(graph, "shortcut")
    # Darknet-53 has five residual stages with 1, 2, 8, 8, 4 blocks.
    sizes = sorted(len(g) for g in analysis.groups)
    assert sizes == [2, 3, 5, 9, 9]
    assert (1, 3) in analysis.groups
    for group in analysis.groups:
        assert analysis.unit_of(group[0]) == group
    regular = passes.analyze_prunability(graph, "regular")
    for group in analysis.groups:
        assert all("regular mode keeps coupled groups whole" in regular.reason(i)
                   for i in group)


def test_spp_route_concat_is_understood():
    graph = ir.parse_cfg(cfg_path("yolov3-spp.cfg"))
    analysis = passes.analyze_prunability(graph, "regular")
    spp_route = next(i for i, layer in enumerate(graph.layers)
                     if isinstance(layer, ir.Route) and len(layer.inputs) == 4)
    feeding_conv = spp_route - 6
    assert isinstance(graph.layers[feeding_conv], ir.Conv)
    assert feeding_conv in analysis.prunable


def test_unknown_section_blocks_with_reason():
    graph = ir.parse_cfg("[net]\nwidth=16\nheight=16\n[convolutional]\nbatch_normalize=1\n"
                         "filters=4\nsize=1\nactivation=leaky\n[crnn]\noutput=4\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=4\nactivation=leaky\n")
    analysis = passes.analyze_prunability(graph)
    assert analysis.prunable == (2,)
    assert "read by [crnn] layer 1" in analysis.reason(0)


def test_grouped_route_gets_group_balanced_masks():
    graph = ir.parse_cfg("[net]\nwidth=16\nheight=16\n[convolutional]\nbatch_normalize=1\n"
                         "filters=4\nactivation=leaky\n[route]\nlayers=-1\ngroups=2\n"
                         "group_id=1\n[convolutional]\nbatch_normalize=1\nfilters=4\n"
                         "activation=leaky\n")
    analysis = passes.analyze_prunability(graph)
    assert analysis.prunable == (0, 2) and analysis.balanced == (((0,), 2),)
    variables = random_variables(graph, seed=0)
    gamma = np.array([0.9, 0.8, 0.01, 0.3], np.float32)  # group 0 keeps 2, group 1 keeps 1
    variables["params"]["layer_0"]["bn"]["scale"] = gamma
    masks = passes.compute_masks(graph, variables, analysis, threshold=0.1, min_keep=0)
    # Each half keeps as many as the fuller one: group 1 keeps its best too.
    assert masks.get(0).tolist() == [True, True, True, True]
    gamma[:] = [0.9, 0.01, 0.02, 0.3]
    masks = passes.compute_masks(graph, variables, analysis, threshold=0.1, min_keep=0)
    assert masks.get(0).tolist() == [True, False, False, True]


def test_ignore_predicate_and_bad_index():
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    every = passes.analyze_prunability(graph)
    some = passes.analyze_prunability(graph, ignore=lambda i, layer: i < 4)
    assert set(every.prunable) - set(some.prunable) == {0, 2}
    with pytest.raises(passes.PruneError, match=r"^ignore=1: layer 1 is a \[maxpool\]"):
        passes.analyze_prunability(graph, ignore=(1,))
