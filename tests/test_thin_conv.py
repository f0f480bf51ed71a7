"""`runtime.model.thin_input_conv`: the inference path for convs whose window holds at
most 27 inputs equals ``lax.conv_general_dilated`` on every geometry Darknet has, and
leaves every other conv to it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import ir
import runtime
from darkslim.testing import reference_forward
from runtime.model import THIN_WINDOW, thin_input_conv

DN = ("NHWC", "HWIO", "NHWC")


@st.composite
def thin_convs(draw):
    size = draw(st.sampled_from([1, 2, 3]))
    cin = draw(st.integers(1, THIN_WINDOW // (size * size)))
    return dict(size=size, cin=cin, cout=draw(st.integers(1, 9)),
                stride=draw(st.integers(1, 3)), dilation=draw(st.integers(1, 2)),
                pad=(draw(st.integers(0, 2)), draw(st.integers(0, 2)),
                     draw(st.integers(0, 2)), draw(st.integers(0, 2))),
                h=draw(st.integers(5, 13)), w=draw(st.integers(5, 13)),
                batch=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=60, deadline=None)
@given(thin_convs())
def test_thin_input_conv_equals_xla_convolution(c):
    rng = np.random.default_rng(c["seed"])
    x = jnp.asarray(rng.normal(size=(c["batch"], c["h"], c["w"], c["cin"])), jnp.float32)
    k = jnp.asarray(rng.normal(size=(c["size"], c["size"], c["cin"], c["cout"])), jnp.float32)
    top, bottom, left, right = c["pad"]
    args = (x, k, (c["stride"], c["stride"]), ((top, bottom), (left, right)))
    kw = dict(rhs_dilation=(c["dilation"], c["dilation"]),
              dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, k.shape, DN))
    want = jax.lax.conv_general_dilated(*args, **kw, precision="highest")
    got = thin_input_conv(*args, **kw)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_other_convs_are_left_to_xla():
    x, k = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 4, 2))   # 36 inputs per window
    dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, DN)
    lowered = jax.jit(lambda x, k: thin_input_conv(x, k, (1, 1), ((1, 1), (1, 1)),
                                                   dimension_numbers=dn)).lower(x, k)
    assert "convolution" in lowered.as_text()
    thin = jax.jit(lambda x, k: thin_input_conv(x[..., :3], k[:, :, :3], (1, 1),
                                                ((1, 1), (1, 1)), dimension_numbers=dn)
                   ).lower(x, k)
    assert "convolution" not in thin.as_text()


def test_a_network_runs_its_first_conv_thin_and_equals_the_reference():
    graph = ir.parse_cfg("[net]\nwidth=20\nheight=16\nchannels=3\n[convolutional]\n"
                         "batch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\n"
                         "activation=leaky\n[convolutional]\nfilters=5\nsize=3\nstride=1\n"
                         "pad=1\nactivation=linear\n")
    variables = runtime.init_variables(graph, 0)
    x = np.random.default_rng(1).random((2, 16, 20, 3), dtype=np.float32)
    hlo = runtime.forward.lower(graph, variables, x).compile().as_text()
    assert hlo.count("convolution(") == 1                 # the second conv: 72 inputs
    out = runtime.forward(graph, variables, x)
    np.testing.assert_allclose(np.asarray(out.output),
                               reference_forward(graph, variables, x).output,
                               rtol=1e-4, atol=1e-5)
