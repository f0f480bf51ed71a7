"""The Flax runtime against an independent numpy reference and hand-computed cases.

(Over 400 lines: one case per layer kind and key of the runtime, sharing the fixtures
at the top; the kinds added with `ir.kinds` are in tests/test_kinds_reference.py.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import frontends
import ir
import runtime
from darkslim.cli import main
from ir import layer_key
from runtime import UnsupportedLayerError
from tests.conftest import cfg_path
from tests.reference_numpy import run_reference

# ---------------------------------------------------------------------------- helpers

def at_size(graph: ir.Graph, size: int) -> ir.Graph:
    return ir.with_input_size(graph, size)


def feeds_yolo(graph: ir.Graph, index: int) -> bool:
    return index + 1 < len(graph.layers) and isinstance(graph.layers[index + 1], ir.Yolo)


def slim(graph: ir.Graph, divisor: int) -> ir.Graph:
    return ir.narrow(graph, divisor)


def random_weights(graph: ir.Graph, seed: int) -> dict:
    """Darknet-form weights (OIHW kernels) with non-trivial BN statistics."""
    rng = np.random.default_rng(seed)
    shapes = ir.verify(graph)
    weights = {}
    for i, layer in enumerate(graph.layers):
        if not isinstance(layer, ir.Conv):
            continue
        c_in = shapes[i - 1].c if i else graph.channels
        fan_in = c_in // layer.groups * layer.size ** 2
        gain = 0.5 if feeds_yolo(graph, i) else 1.0  # activations stay O(1), exp(tw) tame
        kernel = rng.normal(0, gain / np.sqrt(fan_in),
                            (layer.filters, c_in // layer.groups, layer.size, layer.size))
        w = {"kernel": kernel.astype(np.float32)}
        o = layer.filters
        if layer.batch_normalize:
            w.update(gamma=rng.uniform(0.5, 1.5, o) * rng.choice([-1, 1], o),
                     beta=rng.normal(0, 0.2, o), mean=rng.normal(0, 0.3, o),
                     var=rng.uniform(0.5, 2.0, o))
        else:
            w["bias"] = rng.normal(0, 0.2, o)
        weights[i] = {k: np.asarray(v, np.float32) for k, v in w.items()}
    return weights


def to_variables(weights: dict) -> dict:
    """Darknet-form weights to the Flax layout (OIHW -> HWIO)."""
    params, stats = {}, {}
    for i, w in weights.items():
        name = layer_key(i)
        params[name] = {"conv": {"kernel": jnp.asarray(w["kernel"].transpose(2, 3, 1, 0))}}
        if "gamma" in w:
            params[name]["bn"] = {"scale": jnp.asarray(w["gamma"]),
                                  "bias": jnp.asarray(w["beta"])}
            stats[name] = {"bn": {"mean": jnp.asarray(w["mean"]),
                                  "var": jnp.asarray(w["var"])}}
        else:
            params[name]["conv"]["bias"] = jnp.asarray(w["bias"])
    return {"params": params, "batch_stats": stats}


def run_nchw(graph, variables, x_nchw):
    out = runtime.forward(graph, variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)))
    return [np.asarray(h).transpose(0, 3, 1, 2) for h in out.heads], np.asarray(
        out.detections)


def max_rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def assert_matches_reference(graph, weights, x, tol=1e-4):
    want_heads, want_det = run_reference(graph, weights, x)
    got_heads, got_det = run_nchw(graph, to_variables(weights), x.astype(np.float32))
    assert len(got_heads) == len(want_heads)
    for got, want in zip(got_heads, want_heads):
        assert got.shape == want.shape
        assert max_rel_diff(got, want) <= tol
    assert got_det.shape == want_det.shape
    # Per column group, so objectness and class scores are not judged on the scale
    # of box sizes in pixels.
    for cols in (slice(0, 2), slice(2, 4), slice(4, None)):
        assert max_rel_diff(got_det[..., cols], want_det[..., cols]) <= tol
    return want_heads, want_det


def head_graph(body: str, channels: int, size: int = 4, out: int | None = None
               ) -> ir.Graph:
    """``body`` followed by a [yolo] reading its last layer (``out`` channels, default
    ``channels``), so the heads expose that layer's output."""
    classes = (channels if out is None else out) - 5
    text = (f"[net]\nwidth={size}\nheight={size}\nchannels={channels}\n{body}\n"
            f"[yolo]\nmask=0\nanchors=1,1\nclasses={classes}\nnum=1\n")
    return ir.parse_cfg(text)


def head_of(graph: ir.Graph, x_nhwc: np.ndarray, variables=None) -> np.ndarray:
    variables = {} if variables is None else variables
    return np.asarray(runtime.forward(graph, variables, jnp.asarray(x_nhwc)).heads[0])


# ------------------------------------------------------------ against the reference

@pytest.fixture(scope="module")
def tiny():
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 160)
    weights = random_weights(graph, seed=1)
    x = np.random.default_rng(2).uniform(0, 1, (1, 3, 160, 160)).astype(np.float32)
    return graph, weights, x


def test_yolov3_tiny_matches_reference(tiny):
    graph, weights, x = tiny
    heads, det = assert_matches_reference(graph, weights, x)
    assert [h.shape for h in heads] == [(1, 255, 5, 5), (1, 255, 10, 10)]
    assert det.shape == (1, 3 * (25 + 100), 85)
    # The weights are not degenerate: heads vary and some objectness is confident.
    assert np.std(heads[0]) > 0.1 and det[..., 4].max() > 0.5 > det[..., 4].min()


def test_reduced_yolov3_spp_matches_reference():
    graph = slim(at_size(ir.parse_cfg(cfg_path("yolov3-spp.cfg")), 128), 8)
    assert graph.layers[0].filters == 4 and graph.layers[-2].filters == 255
    weights = random_weights(graph, seed=3)
    x = np.random.default_rng(4).uniform(0, 1, (2, 3, 128, 128)).astype(np.float32)
    heads, det = assert_matches_reference(graph, weights, x)
    assert [h.shape[2] for h in heads] == [4, 8, 16]
    assert det.shape == (2, 3 * (16 + 64 + 256), 85)


def test_batch_size_does_not_change_results(tiny):
    graph, weights, _ = tiny
    variables = to_variables(weights)
    x = np.random.default_rng(5).uniform(0, 1, (3, 160, 160, 3)).astype(np.float32)
    batched = runtime.forward(graph, variables, jnp.asarray(x))
    for b in range(3):
        single = runtime.forward(graph, variables, jnp.asarray(x[b:b + 1]))
        for got, want in zip(batched.heads, single.heads):
            np.testing.assert_allclose(got[b:b + 1], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched.detections[b:b + 1], single.detections,
                                   rtol=1e-5, atol=1e-5)


def test_scale_x_y_and_grouped_conv_match_reference():
    graph = ir.parse_cfg(
        "[net]\nwidth=12\nheight=8\nchannels=4\n"
        "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\n"
        "groups=2\nactivation=mish\n"
        "[convolutional]\nfilters=14\nsize=1\nstride=1\nactivation=linear\n"
        "[yolo]\nmask=1,2\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\nscale_x_y=1.1\n"
        # A route reading a [yolo] layer gets Darknet's activated copy of its input.
        "[route]\nlayers=-1\n"
        "[yolo]\nmask=0,1\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n")
    weights = random_weights(graph, seed=6)
    x = np.random.default_rng(7).uniform(0, 1, (2, 4, 8, 12)).astype(np.float32)
    heads, det = assert_matches_reference(graph, weights, x)
    assert det.shape == (2, 2 * 2 * 4 * 6, 7)
    assert heads[1][:, 4].min() > 0 and heads[1][:, 2].min() < 0  # sigmoid vs raw


# -------------------------------------------------------------- hand-computed layers

def test_maxpool_size2_stride1_pads_right_and_bottom_with_minus_inf():
    graph = head_graph("[maxpool]\nsize=2\nstride=1", channels=5, size=3)
    plane = np.array([[-1., -9., -3.],
                      [-4., -5., -2.],
                      [-7., -8., -6.]])
    x = np.repeat(plane[None, :, :, None], 5, axis=3).astype(np.float32)
    # Each cell is the max of itself, its right, lower and lower-right neighbours
    # that exist; missing ones never win (zero padding would give 0 on the border).
    want = np.array([[-1., -2., -2.],
                     [-4., -2., -2.],
                     [-7., -6., -6.]])
    got = head_of(graph, x)
    assert got.shape == (1, 3, 3, 5)
    np.testing.assert_array_equal(got[0, :, :, 0], want)
    np.testing.assert_array_equal(got[0, :, :, 4], want)


def test_maxpool_size3_stride2_pads_both_sides():
    graph = head_graph("[maxpool]\nsize=3\nstride=2", channels=5, size=4)
    plane = np.arange(16, dtype=np.float32).reshape(4, 4) * -1  # 0, -1, ..., -15
    x = np.repeat(plane[None, :, :, None], 5, axis=3)
    # pad_total = 2: one row/column on each side; out = (4 + 2 - 3) // 2 + 1 = 2;
    # windows cover rows/cols {-1,0,1} and {1,2,3}: the max is the top-left cell
    # inside the image.
    want = np.array([[0., -1.], [-4., -5.]])
    np.testing.assert_array_equal(head_of(graph, x)[0, :, :, 0], want)


def test_route_groups_takes_the_group_id_slice_of_each_input():
    x = np.random.default_rng(8).normal(size=(2, 3, 3, 10)).astype(np.float32)
    body = ("[maxpool]\nsize=1\nstride=1\n"
            "[upsample]\nstride=1\n"
            "[route]\nlayers=0,1\ngroups=2\ngroup_id={}\n")
    for group_id, cols in ((0, slice(0, 5)), (1, slice(5, 10))):
        graph = head_graph(body.format(group_id), channels=10, size=3)
        want = np.concatenate([x[..., cols], x[..., cols]], axis=-1)
        np.testing.assert_array_equal(head_of(graph, x), want)


def test_shortcut_with_fewer_channels_adds_over_the_common_ones():
    x = np.random.default_rng(9).normal(size=(1, 2, 2, 10)).astype(np.float32)
    graph = head_graph("[maxpool]\nsize=1\nstride=1\n"
                       "[route]\nlayers=0\ngroups=2\ngroup_id=1\n"  # x[..., 5:]
                       "[route]\nlayers=0\n"                         # x
                       "[shortcut]\nfrom=1\nactivation=linear\n", channels=10, size=2)
    # The previous layer (10 channels) keeps its count; the 5 extra channels pass.
    want = x.copy()
    want[..., :5] += x[..., 5:]
    np.testing.assert_allclose(head_of(graph, x), want, rtol=1e-6)


def test_shortcut_with_more_channels_drops_the_extra_ones():
    x = np.random.default_rng(10).normal(size=(1, 2, 2, 10)).astype(np.float32)
    graph = head_graph("[maxpool]\nsize=1\nstride=1\n"
                       "[route]\nlayers=0\ngroups=2\ngroup_id=1\n"  # x[..., 5:]
                       "[shortcut]\nfrom=0\nactivation=leaky\n", channels=10, size=2,
                       out=5)
    s = x[..., 5:] + x[..., :5]
    want = np.where(s > 0, s, 0.1 * s)
    np.testing.assert_allclose(head_of(graph, x), want, rtol=1e-6)


FORMULAS = {
    "linear": lambda x: x,
    "leaky": lambda x: np.where(x > 0, x, 0.1 * x),
    "relu": lambda x: np.maximum(x, 0),
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
}


def _scalar(f):
    """A scalar formula of activations.h, applied element by element."""
    return np.vectorize(f, otypes=[np.float64])


def _stair(x):
    n = math.floor(x)
    return math.floor(x / 2) if n % 2 == 0 else (x - n) + math.floor(x / 2)


# The rest of activations.h, transcribed scalar by scalar.
FORMULAS.update({
    "hard_mish": _scalar(lambda x: x if x > 0 else (x * x / 2 + x if x > -2 else 0.0)),
    "loggy": _scalar(lambda x: 2 / (1 + math.exp(-x)) - 1),
    "relu6": _scalar(lambda x: min(max(x, 0.0), 6.0)),
    "elu": _scalar(lambda x: x if x >= 0 else math.exp(x) - 1),
    "selu": _scalar(lambda x: 1.0507 * x if x >= 0 else 1.0507 * 1.6732 * (math.exp(x) - 1)),
    "gelu": _scalar(lambda x: 0.5 * x * (1 + math.tanh(0.797885 * x + 0.035677 * x ** 3))),
    "relie": _scalar(lambda x: x if x > 0 else 0.01 * x),
    "plse": _scalar(lambda x: 0.01 * (x + 4) if x < -4 else
                    (0.01 * (x - 4) + 1 if x > 4 else 0.125 * x + 0.5)),
    "hardtan": _scalar(lambda x: -1.0 if x < -1 else (1.0 if x > 1 else x)),
    "lhtan": _scalar(lambda x: 0.001 * x if x < 0 else (0.001 * (x - 1) + 1 if x > 1 else x)),
    "ramp": _scalar(lambda x: x * (x > 0) + 0.1 * x),
    "revleaky": _scalar(lambda x: x if x > 0 else 0.1 * x),
    "tanh": _scalar(lambda x: 2 / (1 + math.exp(-2 * x)) - 1),
    "stair": _scalar(_stair),
})


def _normalize_channels(x):
    out = np.zeros_like(x)
    for pixel in np.ndindex(*x.shape[:-1]):
        v = x[pixel]
        out[pixel] = np.where(v > 0, v, 0) / (1e-4 + v[v > 0].sum())
    return out


def _normalize_channels_softmax(x, use_max=False):
    out = np.zeros_like(x)
    for pixel in np.ndindex(*x.shape[:-1]):
        v = x[pixel]
        e = np.exp(v - (v.max() if use_max else 0))
        out[pixel] = e / (1e-4 + e.sum())  # activations.c: `float sum = eps;` (0.0001)
    return out


FORMULAS.update({
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": _normalize_channels_softmax,
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels_softmax(x, True),
})


@pytest.mark.parametrize("name", [a.value for a in ir.Activation])
def test_activation_matches_its_formula(name):
    graph = head_graph(f"[convolutional]\nfilters=5\nsize=1\nactivation={name}",
                       channels=5, size=4)
    identity = {"params": {"layer_0": {"conv": {"kernel": jnp.eye(5)[None, None],
                                                "bias": jnp.zeros(5)}}}}
    x = np.linspace(-6, 6, 80, dtype=np.float32).reshape(1, 4, 4, 5)
    np.testing.assert_allclose(head_of(graph, x, identity), FORMULAS[name](
        x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_upsample_repeats_nearest():
    graph = head_graph("[upsample]\nstride=2", channels=5, size=2)
    x = np.arange(20, dtype=np.float32).reshape(1, 2, 2, 5)
    got = head_of(graph, x)
    assert got.shape == (1, 4, 4, 5)
    np.testing.assert_array_equal(got[0, :, :, 0], [[0, 0, 5, 5], [0, 0, 5, 5],
                                                    [10, 10, 15, 15], [10, 10, 15, 15]])


# -------------------------------------------------------------------- flax contract

def test_init_variables_follow_the_project_layout():
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=3\npad=1\n"
                         "groups=3\nactivation=leaky\n"
                         "[maxpool]\nsize=2\nstride=2\n"
                         "[convolutional]\nfilters=18\nsize=1\nactivation=linear\n"
                         "[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3\nclasses=1\nnum=3\n")
    variables = runtime.init_variables(graph, seed=0)
    shapes = jax.tree_util.tree_map(lambda a: a.shape, variables)
    assert shapes == {
        "params": {"layer_0": {"conv": {"kernel": (3, 3, 1, 6)},
                               "bn": {"scale": (6,), "bias": (6,)}},
                   "layer_2": {"conv": {"kernel": (1, 1, 6, 18), "bias": (18,)}}},
        "batch_stats": {"layer_0": {"bn": {"mean": (6,), "var": (6,)}}}}

    def kernel(v):
        return np.asarray(v["params"]["layer_0"]["conv"]["kernel"])
    np.testing.assert_array_equal(kernel(variables),
                                  kernel(runtime.init_variables(graph, seed=0)))
    other = runtime.init_variables(graph, seed=1)
    assert not np.array_equal(kernel(variables), kernel(other))
    limit = np.sqrt(2 / (3 * 3 * 1))  # Darknet: U(±sqrt(2 / fan_in)), fan_in = 3·3·3/3
    assert limit / 2 < np.max(np.abs(kernel(variables))) <= limit
    np.testing.assert_array_equal(variables["batch_stats"]["layer_0"]["bn"]["var"], 1)
    flax_init = runtime.DarknetModule(graph).init(jax.random.key(0),
                                                  jnp.zeros((1, 8, 8, 3)))
    assert jax.tree.structure(flax_init) == jax.tree.structure(variables)


def test_train_mode_updates_running_stats_like_darknet():
    graph = head_graph("[convolutional]\nbatch_normalize=1\nfilters=5\nsize=1\n"
                       "activation=linear", channels=5)
    weights = random_weights(graph, seed=11)
    variables = to_variables(weights)
    x = np.random.default_rng(12).normal(1.0, 2.0, (4, 4, 4, 5)).astype(np.float32)
    _, updated = runtime.DarknetModule(graph).apply(variables, jnp.asarray(x), train=True,
                                                    mutable=["batch_stats"])
    conv = np.einsum("nhwc,oc->nhwo", x, weights[0]["kernel"][:, :, 0, 0])
    new = updated["batch_stats"]["layer_0"]["bn"]
    np.testing.assert_allclose(new["mean"], 0.99 * weights[0]["mean"]
                               + 0.01 * conv.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.99 * weights[0]["var"]
                               + 0.01 * conv.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)


def test_gradients_flow_through_every_layer_kind():
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\n"
                         "activation=mish\n"
                         "[maxpool]\nsize=2\nstride=1\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=2\n"
                         "pad=1\nactivation=leaky\n"
                         "[upsample]\nstride=2\n"
                         "[shortcut]\nfrom=-3\nactivation=swish\n"
                         "[route]\nlayers=-1,0\ngroups=2\ngroup_id=1\n"
                         "[convolutional]\nfilters=7\nsize=1\nactivation=linear\n"
                         "[yolo]\nmask=0\nanchors=2,3\nclasses=2\nnum=1\nscale_x_y=1.05\n")
    variables = to_variables(random_weights(graph, seed=15))
    x = jnp.asarray(np.random.default_rng(16).uniform(0, 1, (2, 8, 8, 3)), jnp.float32)

    def loss(params):
        out, _ = runtime.DarknetModule(graph).apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
            mutable=["batch_stats"])
        return jnp.sum(out.detections[..., 4:]) + jnp.sum(out.heads[0] ** 2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for name in ("layer_0", "layer_2", "layer_6"):
        kernel = np.asarray(grads[name]["conv"]["kernel"])
        assert np.all(np.isfinite(kernel)) and np.abs(kernel).max() > 0


def test_input_with_wrong_channels_fails_clearly():
    graph = head_graph("[upsample]\nstride=1", channels=5)
    with pytest.raises(ValueError, match=r"expected NHWC \(N, H, W, 5\)"):
        runtime.forward(graph, {}, jnp.zeros((1, 4, 4, 3)))


# ------------------------------------------------------------------ unsupported layers

def test_unsupported_section_names_section_layer_and_line():
    text = ("[net]\nwidth=8\nheight=8\n\n"
            "[convolutional]\nfilters=3\nsize=1\nactivation=leaky\n\n"
            "[crnn]\noutput=3\n\n"                                    # line 10
            "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n"
            "[yolo]\nmask=0\nanchors=1,1\nclasses=1\nnum=1\n")
    graph = ir.parse_cfg(text)
    for call in (lambda: runtime.init_variables(graph),
                 lambda: runtime.forward(graph, {}, jnp.zeros((1, 8, 8, 3)))):
        with pytest.raises(UnsupportedLayerError) as info:
            call()
        assert str(info.value) == ("<text>:10: [crnn] (layer 1) not supported yet by "
                                   "the runtime")
        assert isinstance(info.value, ir.CfgError) and info.value.line == 10


def test_unsupported_section_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "model.cfg"
    path.write_text("[net]\nwidth=8\nheight=8\n[maxpool]\nsize=1\n[lstm]\n"
                    "output=4\n")
    with pytest.raises(UnsupportedLayerError,
                       match=r"model\.cfg:6: \[lstm\] \(layer 1\)"):
        runtime.check_supported(ir.parse_cfg(path))


@pytest.mark.parametrize("body, found", [
    ("[convolutional]\nfilters=5\nsize=3\npad=1\nantialiasing=1", "antialiasing=1"),
    ("[convolutional]\nfilters=5\nsize=3\nstride=1\nstride_x=2", "stride_x=2"),
    ("[convolutional]\nfilters=5\nsize=1\nbinary=1", "binary=1"),
    ("[maxpool]\nsize=2\nstride=1\nantialiasing=1", "antialiasing=1"),
    ("[upsample]\nstride=-2", "stride=-2"),
])
def test_semantics_changing_keys_are_refused(body, found):
    graph = head_graph(body, channels=5, size=4)
    with pytest.raises(UnsupportedLayerError, match=rf":5: \[\w+\] \(layer 0\) {found} "):
        runtime.check_supported(graph)


def test_harmless_extra_keys_are_accepted():
    graph = head_graph("[convolutional]\nfilters=5\nsize=1\ndilation=1\nstride_x=1\n"
                       "stopbackward=1", channels=5, size=4)
    runtime.check_supported(graph)


# ----------------------------------------------------------------------- darkslim run

def test_run_command_writes_nchw_heads_and_detections(tmp_path, tiny):
    graph, weights, x = tiny
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(ir.write_cfg(graph))
    frontends.save_variables(graph, to_variables(weights), tmp_path / "tiny.weights")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(cfg), str(tmp_path / "tiny.weights"), "--input",
                 str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    want_heads, want_det = run_reference(graph, weights, x)
    with np.load(out) as saved:
        assert sorted(saved.files) == ["detections", "head_0", "head_1", "output"]
        for k, want in enumerate(want_heads):
            assert saved[f"head_{k}"].shape == want.shape
            assert max_rel_diff(saved[f"head_{k}"], want) <= 1e-4
        assert saved["detections"].shape == want_det.shape
        assert max_rel_diff(saved["detections"][..., 4:], want_det[..., 4:]) <= 1e-4
        # `output` is the last layer's own map: the second [yolo], NCHW, its
        # objectness and classes through the logistic, w and h raw.
        head = want_heads[-1].reshape(x.shape[0], 3, -1, *want_heads[-1].shape[2:])
        output = saved["output"].reshape(head.shape)
        assert max_rel_diff(output[:, :, 4:], 1 / (1 + np.exp(-head[:, :, 4:]))) <= 1e-4
        assert max_rel_diff(output[:, :, 2:4], head[:, :, 2:4]) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.npz", "tiny.cfg", "tiny.weights", "x.npy"]  # no temp file left behind


def test_run_command_bn_eps_reaches_the_forward_pass(tmp_path):
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=3\npad=1\n"
                         "activation=leaky\n"
                         "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n"
                         "[yolo]\nmask=0\nanchors=2,3\nclasses=1\nnum=1\n")
    weights = random_weights(graph, seed=13)
    cfg = tmp_path / "m.cfg"
    cfg.write_text(ir.write_cfg(graph))
    frontends.save_variables(graph, to_variables(weights), tmp_path / "m.msgpack")
    x = np.random.default_rng(14).uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for eps in (1e-5, 0.5):
        argv = ["run", str(cfg), str(tmp_path / "m.msgpack"), "--input",
                str(tmp_path / "x.npy"), "--out", str(tmp_path / "o.npz")]
        assert main(argv + ([] if eps == 1e-5 else ["--bn-eps", str(eps)])) == 0
        (want,), _ = run_reference(graph, weights, x, bn_eps=eps)
        assert max_rel_diff(np.load(tmp_path / "o.npz")["head_0"], want) <= 1e-4


def test_run_command_letterboxes_an_image(tmp_path):
    import cv2

    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n"
                         "[convolutional]\nfilters=5\nsize=1\nactivation=linear\n"
                         "[yolo]\nmask=0\nanchors=1,1\nclasses=0\nnum=1\n")
    cfg = tmp_path / "m.cfg"
    cfg.write_text(ir.write_cfg(graph))
    kernel = np.zeros((1, 1, 3, 5), np.float32)
    kernel[0, 0, :, :3] = np.eye(3)  # channels 0..2 of the head are the image's RGB
    variables = {"params": {"layer_0": {"conv": {"kernel": kernel,
                                                 "bias": np.zeros(5, np.float32)}}}}
    frontends.save_variables(graph, variables, tmp_path / "m.msgpack")
    image = np.zeros((4, 8, 3), np.uint8)
    image[..., 2] = 255  # pure blue in RGB; OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "im.png"), image[..., ::-1])
    out = tmp_path / "o.npz"
    assert main(["run", str(cfg), str(tmp_path / "m.msgpack"), "--input",
                 str(tmp_path / "im.png"), "--out", str(out)]) == 0
    head = np.load(out)["head_0"][0]  # NCHW (5, 8, 8)
    np.testing.assert_allclose(head[:3, 2:6, :], np.broadcast_to(
        np.array([0., 0., 1.])[:, None, None], (3, 4, 8)), atol=1e-6)
    np.testing.assert_allclose(head[:3, :2, :], 0.5)  # gray letterbox bars
    np.testing.assert_allclose(head[:3, 6:, :], 0.5)


def test_run_command_reports_a_bad_input(tmp_path, capsys):
    graph = head_graph("[upsample]\nstride=1", channels=5)
    cfg = tmp_path / "m.cfg"
    cfg.write_text(ir.write_cfg(graph))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4, 4), np.float32))
    assert main(["run", str(cfg), "w.msgpack", "--input", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "o.npz")]) == 2
    err = " ".join(capsys.readouterr().err.split())  # undo rich's line wrapping
    assert "x.npy: array of shape (1, 3, 4, 4): expected NCHW (N, 5, H, W)" in err
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["run", str(cfg), "w.msgpack", "--input", str(tmp_path / "bad.png"),
                 "--out", str(tmp_path / "o.npz")]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


# -------------------------------------------------------------------------- letterbox

def test_letterbox_keeps_aspect_and_pads_gray():
    image = np.full((50, 100, 3), 255, np.uint8)
    boxed, scale, (pad_x, pad_y) = runtime.letterbox(image, (64, 32))
    assert boxed.shape == (64, 32, 3) and boxed.dtype == np.float32
    assert scale == pytest.approx(0.32) and (pad_x, pad_y) == (0, 24)
    np.testing.assert_allclose(boxed[24:40], 1.0)
    np.testing.assert_allclose(boxed[:24], 0.5)
    np.testing.assert_allclose(boxed[40:], 0.5)


def test_load_image_names_an_unreadable_file(tmp_path):
    with pytest.raises(runtime.ImageError, match="missing.jpg"):
        runtime.load_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png"):
        runtime.load_image(tmp_path / "empty.png")
