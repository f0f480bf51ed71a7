"""The runtime's compile options (`runtime.xla_options`): on CPU, convolutions are left
to XLA's own multi-threaded kernels instead of YNNPACK's fusion, which ran one thread
for most of yolov3's conv shapes (benchmarks/README.md), while reductions stay with
YNNPACK, whose sums keep a train step's update as close to float64 as XLA's default
does; a user's XLA_FLAGS win."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ir
import runtime
from darkslim.commands.synth import synth_cfg_path
from runtime.synth import write_synth
from runtime.xla_options import YNN_FUSIONS, compiler_options

CFG = """[net]
width=16
height=16
channels=3
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=leaky
"""

needs_cpu = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compile options")


@needs_cpu
def test_forward_convolutions_are_not_ynnpack_fusions():
    graph = ir.parse_cfg(CFG)
    variables = runtime.init_variables(graph)
    hlo = runtime.forward.lower(graph, variables, jnp.ones((1, 16, 16, 3))).compile().as_text()
    assert hlo.count("convolution(") == 1  # RGB 3×3: thin_input_conv; the 1×1: a dot
    assert "__ynn_fusion" not in hlo


def _train_step(graph, dtype, images, targets):
    variables = jax.tree.map(lambda a: np.asarray(a, dtype), runtime.init_variables(graph))
    tx = optax.sgd(0.01, momentum=0.9)
    state = runtime.step.init_train_state(variables, tx)
    step = runtime.make_train_step(graph, tx)
    new, _ = step(state, images.astype(dtype), targets.astype(dtype))
    return step, state, new


@needs_cpu
def test_train_step_convolutions_are_not_ynnpack_fusions_but_reductions_are():
    graph = ir.parse_cfg(CFG)
    step, state, _ = _train_step(graph, np.float32, np.ones((2, 16, 16, 3)),
                                 np.full((2, 1, 5), -1.0))
    hlo = step.lower(state, jnp.ones((2, 16, 16, 3)), jnp.full((2, 1, 5), -1.0)
                     ).compile().as_text()
    fused = [line for line in hlo.splitlines() if "__ynn_fusion" in line]
    assert fused, "the BatchNorm statistics and gradient sums are YNNPACK reductions"
    assert not any("convolution" in line for line in fused)


@needs_cpu
def test_a_float32_train_step_stays_close_to_float64(tmp_path):
    # The demo's network narrowed to 4-16 filters with anchors k-means'd on a 64 px
    # synthetic set, BatchNorm in train mode and the YOLO loss: each leaf's update
    # within 1% of the float64 step's (relative to its largest element; measured 5e-5).
    # With XLA's own reductions instead of YNNPACK's it was 5.5% off.
    data = write_synth(tmp_path, train=8, valid=0, size=64, seed=0,
                       cfg=ir.parse_cfg(synth_cfg_path()))
    graph = ir.narrow(ir.parse_cfg(data.cfg), 4, min_filters=4)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 64, 64, 3)).astype(np.float32)
    targets = np.full((4, 2, 5), -1.0, np.float32)
    targets[:, 0] = [[0, .3, .4, .2, .3], [1, .6, .5, .4, .3], [2, .5, .5, .3, .3],
                     [0, .7, .2, .2, .2]]
    _, before, after32 = _train_step(graph, np.float32, images, targets)
    with jax.enable_x64(True):
        _, _, after64 = _train_step(graph, np.float64, images, targets)
        updates64 = [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in
                     zip(jax.tree.leaves(after64.params), jax.tree.leaves(before.params))]
    updates32 = [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in
                 zip(jax.tree.leaves(after32.params), jax.tree.leaves(before.params))]
    worst = max(float(np.abs(u32 - u64).max() / np.abs(u64).max())
                for u32, u64 in zip(updates32, updates64) if np.abs(u64).max() > 0)
    assert worst < 0.01


def test_a_user_choice_in_xla_flags_is_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_convolution")
    assert compiler_options() == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert compiler_options() == {"xla_cpu_experimental_ynn_fusion_type": YNN_FUSIONS}
