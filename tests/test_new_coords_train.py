"""Training and fine-tuning a ``[yolo] new_coords=1`` network (scaled YOLOv4, YOLOv7):
the loss of `runtime.loss` on post-logistic heads, after a prune, through `fit`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import ir
import passes
from darkslim.commands.synth import synth_cfg_path
from runtime import init_variables
from runtime.data import NO_AUGMENT, load_dataset
from runtime.synth import write_synth
from runtime.train import TrainConfig, fit, init_head_biases


def new_coords(graph: ir.Graph) -> ir.Graph:
    """Every head new_coords=1 with a logistic conv before it, as yolov7-tiny.cfg has."""
    updates = {}
    for i in graph.yolo_indices():
        updates[i] = dataclasses.replace(graph.layers[i], new_coords=True, scale_x_y=2.0)
        updates[i - 1] = dataclasses.replace(graph.layers[i - 1],
                                             activation=ir.Activation.LOGISTIC)
    return graph.replace_layers(updates)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("new_coords")
    made = write_synth(root, train=32, valid=8, size=64, seed=0,
                       cfg=ir.parse_cfg(synth_cfg_path()))
    graph = new_coords(ir.narrow(ir.parse_cfg(made.cfg), 4, min_filters=4))
    return graph, load_dataset(made.data, "train")


def test_a_pruned_new_coords_network_fine_tunes(data, tmp_path):
    graph, train = data
    # A sparse-looking start (many |γ| near zero), pruned by half, then fine-tuned.
    start = init_head_biases(graph, init_variables(graph, 0))
    sparse = ir.init_variables(graph, "sparse", seed=0)
    start = {**start, "params": {k: {**v, **({"bn": sparse["params"][k]["bn"]}
                                             if "bn" in v else {})}
                                 for k, v in start["params"].items()}}
    pruned = passes.pipeline(passes.SlimChannels(percent=0.5, mode="shortcut"))
    g, v = pruned(graph, start)
    assert ir.count_params(g) < ir.count_params(graph)
    assert all(g.layers[i].new_coords for i in g.yolo_indices())
    config = TrainConfig(epochs=8, batch_size=8, lr=0.03, optimizer="adam",
                         warmup_epochs=0.5, augment=NO_AUGMENT, precise_bn=1)
    result = fit(g, v, train, config, out_dir=tmp_path / "tuned")
    losses = [row["loss"] for row in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < 0.85 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
