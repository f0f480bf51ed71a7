"""The inference forward's compile options (`runtime.xla_options`): on CPU, convolutions
are left to XLA's own multi-threaded kernels instead of YNNPACK's fusion, which ran one
thread for most of yolov3's conv shapes (benchmarks/README.md); a user's XLA_FLAGS win."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import ir
import runtime
from runtime.xla_options import compiler_options

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
    assert hlo.count("convolution(") == 2  # the 1×1 conv is a dot
    assert "__ynn_fusion" not in hlo


def test_a_user_choice_in_xla_flags_is_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_convolution")
    assert compiler_options() == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert compiler_options() == {
        "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
