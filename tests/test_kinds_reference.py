"""Every layer kind against the numpy interpreter written from Darknet's C code.

`tests/reference_numpy.py` runs Darknet's forward functions loop by loop in NCHW, with
Darknet-form weights; `runtime.forward` composes the `ir.kinds` rules in Flax. They
must agree within 1e-4 of scale on the heads, the detections and the network's output
(Darknet's flat ``l.output`` of the last non-[cost] layer), on hand-written cfgs that
hold every kind (tests/cfg/kinds-*.cfg) and on one conv per activation.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import ir
import runtime
from tests.reference_numpy import run_reference_all

CFG = Path(__file__).parent / "cfg"
KIND_CFGS = sorted(p.name for p in CFG.glob("kinds-*.cfg"))


def darknet_weights(graph: ir.Graph, seed: int) -> dict:
    """Darknet-form weights: OIHW conv kernels, (outputs, inputs) [connected] weights,
    BN vectors with non-trivial statistics. Kernels feeding a head are scaled down so
    exp(tw) stays tame."""
    rng = np.random.default_rng(seed)
    shapes = ir.verify(graph)
    heads = set(graph.head_indices())
    weights = {}
    for i, layer in enumerate(graph.layers):
        c_in = shapes[i - 1] if i else ir.input_shape(graph)
        gain = 0.5 if i + 1 in heads else 1.0
        if isinstance(layer, ir.Conv):
            fan_in = c_in.c // layer.groups * layer.size ** 2
            w = {"kernel": rng.normal(0, gain / np.sqrt(fan_in), (
                layer.filters, c_in.c // layer.groups, layer.size, layer.size))}
            out, bn = layer.filters, layer.batch_normalize
        elif isinstance(layer, ir.Connected):
            fan_in = c_in.c * c_in.h * c_in.w
            w = {"weights": rng.normal(0, 1 / np.sqrt(fan_in), (layer.output, fan_in))}
            out, bn = layer.output, layer.batch_normalize
        else:
            continue
        if bn:
            w.update(gamma=rng.uniform(0.5, 1.5, out) * rng.choice([-1, 1], out),
                     beta=rng.normal(0, 0.2, out), mean=rng.normal(0, 0.3, out),
                     var=rng.uniform(0.5, 2.0, out))
        else:
            w["bias"] = rng.normal(0, 0.2, out)
        weights[i] = {k: np.asarray(v, np.float32) for k, v in w.items()}
    return weights


def to_variables(graph: ir.Graph, weights: dict) -> dict:
    """Darknet-form weights in the Flax layout (HWIO kernels, (inputs, outputs) dense)."""
    params, stats = {}, {}
    for i, w in weights.items():
        if "kernel" in w:
            part, kernel = "conv", w["kernel"].transpose(2, 3, 1, 0)
        else:
            part, kernel = "dense", w["weights"].T
        p = {part: {"kernel": jnp.asarray(kernel)}}
        if "gamma" in w:
            p["bn"] = {"scale": jnp.asarray(w["gamma"]), "bias": jnp.asarray(w["beta"])}
            stats[f"layer_{i}"] = {"bn": {"mean": jnp.asarray(w["mean"]),
                                          "var": jnp.asarray(w["var"])}}
        else:
            p[part]["bias"] = jnp.asarray(w["bias"])
        params[f"layer_{i}"] = p
    return {"params": params, "batch_stats": stats}


def rel(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| relative to the scale of ``want``."""
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


def darknet_output(graph: ir.Graph, out) -> np.ndarray:
    """runtime's ``output`` as Darknet's flat l.output: NCHW, except a [region] whose
    buffer Darknet flattens to NHWC order (and a trailing [cost]: the layer before)."""
    last = max(i for i, layer in enumerate(graph.layers) if not isinstance(layer, ir.Cost))
    y = np.asarray(out, np.float64)
    if not isinstance(graph.layers[last], ir.Region):
        y = y.transpose(0, 3, 1, 2)
    return y.reshape(y.shape[0], -1)


def check_against_reference(graph: ir.Graph, seed: int, tol: float = 1e-4) -> None:
    weights = darknet_weights(graph, seed)
    x = np.random.default_rng(seed + 1).uniform(0, 1, (2, graph.channels, graph.height,
                                                       graph.width)).astype(np.float32)
    want_heads, want_det, want_out = run_reference_all(graph, weights, x)
    got = runtime.forward(graph, to_variables(graph, weights), jnp.asarray(
        x.transpose(0, 2, 3, 1)))
    assert len(got.heads) == len(want_heads) == len(graph.head_indices())
    for k, (head, want) in enumerate(zip(got.heads, want_heads)):
        head = np.asarray(head).transpose(0, 3, 1, 2)
        assert head.shape == want.shape
        assert rel(head, want) <= tol, f"head {k}"
    det = np.asarray(got.detections, np.float64)
    assert det.shape == want_det.shape
    for cols in (slice(0, 2), slice(2, 4), slice(4, None)):  # xy, wh, scores
        if want_det.size:
            assert rel(det[..., cols], want_det[..., cols]) <= tol, f"detections {cols}"
    output = darknet_output(graph, got.output)
    assert output.shape == want_out.shape
    assert rel(output, want_out) <= tol, "output"


@pytest.mark.parametrize("name", KIND_CFGS)
def test_every_kind_matches_the_c_reference(name):
    check_against_reference(ir.parse_cfg(CFG / name), seed=len(name))


def test_the_cfgs_hold_every_kind():
    kinds = {type(layer) for name in KIND_CFGS for layer in ir.parse_cfg(CFG / name).layers}
    import typing
    # tests/test_runtime.py has the classic ones, tests/test_detection_kind.py YOLOv1's
    classic = {ir.Shortcut, ir.Upsample, ir.Detection}
    assert set(typing.get_args(ir.Layer)) - {ir.Section} - classic <= kinds


def test_classifier_output_is_its_softmax():
    graph = ir.parse_cfg(CFG / "kinds-classifier.cfg")
    weights = darknet_weights(graph, 3)
    x = np.random.default_rng(4).uniform(0, 1, (2, 3, 24, 24)).astype(np.float32)
    _, det, out = run_reference_all(graph, weights, x)
    assert det.shape == (2, 0, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)  # one softmax group


CONV_ACTIVATION = """[net]
width=8
height=8
channels=3
[convolutional]
batch_normalize=1
filters=6
size=3
stride=1
pad=1
activation={act}
[convolutional]
batch_normalize=1
filters=6
size=1
activation=leaky
[shortcut]
from=-2
activation={short}
[convolutional]
batch_normalize=1
filters=1
size=1
activation=logistic
[scale_channels]
from=-2
scale_wh=1
activation={array}
[convolutional]
filters=6
size=1
activation=linear
[yolo]
mask=0
anchors=3,4
classes=1
num=1
"""


@pytest.mark.parametrize("activation", [a.value for a in ir.Activation])
def test_every_activation_matches_the_c_reference(activation):
    """Each activation on the conv path (its special cases), and on the shortcut and
    activate_array paths where darkslim executes it (elsewhere it refuses it)."""
    short = activation if activation in ("swish", "mish") or not ir.Activation(
        activation).across_channels and activation != "hard_mish" else "linear"
    array = activation if activation not in {
        "swish", "mish", "hard_mish", "relu6", "normalize_channels",
        "normalize_channels_softmax", "normalize_channels_softmax_maxval"} else "linear"
    text = CONV_ACTIVATION.format(act=activation, short=short, array=array)
    check_against_reference(ir.parse_cfg(text), seed=7)


@pytest.mark.parametrize("kind,activation", [
    ("shortcut", "hard_mish"), ("shortcut", "normalize_channels"), ("sam", "mish"),
    ("scale_channels", "swish"), ("connected", "normalize_channels_softmax")])
def test_activations_darknet_zeroes_are_refused(kind, activation):
    """Darknet's forward for these kinds has no case for the activation and outputs 0:
    darkslim refuses to run them, naming the line, and blocks pruning through them."""
    body = {"shortcut": "from=-2", "sam": "from=-2", "scale_channels": "from=-2\nscale_wh=1",
            "connected": "output=4"}[kind]
    scale = ("[convolutional]\nbatch_normalize=1\nsize=1\nactivation=logistic\nfilters="
             + ("1\n" if kind == "scale_channels" else "4\n"))
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\n"
                         "batch_normalize=1\nfilters=4\nsize=1\nactivation=leaky\n"
                         f"{scale}[{kind}]\n{body}\nactivation={activation}\n")
    assert activation in ir.unsupported_reason(graph.layers[2])
    with pytest.raises(runtime.UnsupportedLayerError, match=rf"\[{kind}\] \(layer 2\)"):
        runtime.check_supported(graph)
    import passes
    assert "does not execute" in passes.analyze_prunability(graph).reason(1)


@pytest.mark.parametrize("activation", ["normalize_channels", "normalize_channels_softmax",
                                        "normalize_channels_softmax_maxval"])
def test_normalize_channels_eps_is_darknets(activation):
    """activations.c starts each sum at eps = 0.0001: with small exponentials (inputs
    around -10) the outputs are far from summing to 1."""
    from ir.activations import activate_xp
    from tests.reference_numpy import activate
    x = np.random.default_rng(0).normal(-10, 1, (2, 5, 3, 4))
    want = activate(x, activation, "convolutional")
    got = activate_xp(np, ir.Activation(activation), x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=1e-9, atol=1e-12)
