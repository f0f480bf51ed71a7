"""The variables pytree every frontend reads into and writes from.

Flax linen's layout, keyed by absolute layer index::

    {"params": {"layer_7": {"conv": {"kernel": (kh, kw, in/groups, out)},
                            "bn": {"scale": (out,), "bias": (out,)}}},
     "batch_stats": {"layer_7": {"bn": {"mean": (out,), "var": (out,)}}}}

A conv without BatchNorm has ``conv.bias`` instead of ``bn``. Only ``[convolutional]``
layers carry variables. BatchNorm statistics mean what they mean with the runtime's
eps (`RUNTIME_BN_EPS`); frontends of sources with another eps convert on the way in
and out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import ir
from frontends.errors import WeightsError

RUNTIME_BN_EPS = 1e-5
"""The BatchNorm eps the variables pytree assumes (Darknet's and the runtime's)."""

Variables = dict[str, Any]

# Darknet sections that carry weights in a .weights file besides [convolutional];
# darkslim cannot read or write those yet, so it refuses rather than misreading bytes.
_WEIGHTED_SECTIONS = frozenset({
    "connected", "conn", "batchnorm", "local", "deconvolutional", "deconv", "crnn",
    "rnn", "gru", "lstm", "conv_lstm", "implicit_add", "implicit_mul",
})


def layer_key(index: int) -> str:
    return f"layer_{index}"


def where(graph: ir.Graph, index: int) -> str:
    """``layer 7 ([convolutional] at yolov3.cfg:61)``: how errors point at a layer."""
    layer = graph.layers[index]
    path = layer.path if layer.path != "<text>" else graph.path
    return f"layer {index} ([{layer.kind}] at {path}:{layer.line})"


def conv_in_channels(graph: ir.Graph) -> dict[int, int]:
    """Input channels of every conv, by layer index (a conv reads the layer before it)."""
    shapes = ir.verify(graph)
    return {i: (shapes[i - 1].c if i else graph.channels) for i in graph.conv_indices()}


def unsupported_weighted_layers(graph: ir.Graph) -> tuple[int, ...]:
    """Layers that hold weights in Darknet but have no variables here."""
    found = []
    for i, layer in enumerate(graph.layers):
        if isinstance(layer, ir.Section) and layer.type in _WEIGHTED_SECTIONS:
            found.append(i)
        elif (isinstance(layer, ir.Shortcut)
              and dict(layer.extra).get("weights_type", "none") != "none"):
            found.append(i)
    return tuple(found)


def expected_shapes(graph: ir.Graph) -> dict:
    """The shape of every variable, as a pytree shaped like the variables themselves.

    ``jax.tree.map(np.shape, variables) == expected_shapes(graph)`` holds for variables
    that fit the graph (tuples are the leaves here).

    >>> g = ir.parse_cfg("[net]\\nchannels=3\\n[convolutional]\\nfilters=4\\nsize=3\\n")
    >>> expected_shapes(g)["params"]["layer_0"]["conv"]["kernel"]
    (3, 3, 3, 4)
    """
    params: dict[str, dict] = {}
    stats: dict[str, dict] = {}
    for i, cin in conv_in_channels(graph).items():
        conv = graph.layers[i]
        out = conv.filters
        kernel = (conv.size, conv.size, cin // conv.groups, out)
        if conv.batch_normalize:
            params[layer_key(i)] = {"conv": {"kernel": kernel},
                                    "bn": {"scale": (out,), "bias": (out,)}}
            stats[layer_key(i)] = {"bn": {"mean": (out,), "var": (out,)}}
        else:
            params[layer_key(i)] = {"conv": {"kernel": kernel, "bias": (out,)}}
    return {"params": params, "batch_stats": stats}


def _leaves(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def flat_shapes(graph: ir.Graph) -> dict[tuple[str, ...], tuple[int, ...]]:
    """`expected_shapes` flattened: ``{("params", "layer_0", "conv", "kernel"): shape}``."""
    return dict(_leaves(expected_shapes(graph)))


def check_variables(graph: ir.Graph, variables: Variables, source: str,
                    error: type[ValueError] = WeightsError) -> None:
    """Raise ``error`` listing the first few variables missing, unexpected or misshapen.

    Args:
        source: the file the variables came from or go to, for the message.
    """
    if (not isinstance(variables, Mapping)
            or not set(variables) <= {"params", "batch_stats"}):
        found = (sorted(variables) if isinstance(variables, Mapping)
                 else type(variables).__name__)
        raise error(f"{source}: expected a variables dict with 'params' and 'batch_stats', "
                    f"found {found}")
    expected = flat_shapes(graph)
    found = {path: tuple(np.shape(value)) for path, value in _leaves(variables)}
    problems = []
    for path, shape in expected.items():
        if path not in found:
            problems.append((path, f"missing, expected shape {shape}"))
        elif found[path] != shape:
            problems.append((path, f"expected shape {shape}, found {found[path]}"))
    for path, shape in found.items():
        if path not in expected:
            problems.append((path, f"unexpected (shape {shape}): the cfg has no such "
                                   "variable"))
    if problems:
        raise error(_list_problems(graph, source, problems))


def _list_problems(graph: ir.Graph, source: str, problems, limit: int = 5) -> str:
    lines = []
    for path, what in problems[:limit]:
        index = _index_of(path)
        at = where(graph, index) if index is not None and index < len(graph.layers) else ""
        lines.append(f"  {'/'.join(path)}{' (' + at + ')' if at else ''}: {what}")
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return (f"{source}: {len(problems)} variable(s) do not fit {graph.path}:\n"
            + "\n".join(lines) + more)


def _index_of(path: tuple[str, ...]) -> int | None:
    for part in path:
        if part.startswith("layer_") and part[6:].isdigit():
            return int(part[6:])
    return None


def default_variables(graph: ir.Graph, seed: int = 0,
                      layers: frozenset[int] | None = None) -> Variables:
    """Freshly initialised variables (numpy, float32), for layers a file does not hold.

    Kernels are He-normal (std ``sqrt(2 / fan_in)``) drawn from a generator seeded by
    ``(seed, layer index)``, so a layer's initial value does not depend on the others;
    γ = 1, β = 0, mean = 0, var = 1, conv bias = 0.

    Args:
        layers: initialise only these conv layer indices (default: all convs).
    """
    params: dict[str, dict] = {}
    stats: dict[str, dict] = {}
    for key, tree in expected_shapes(graph)["params"].items():
        index = int(key[6:])
        if layers is not None and index not in layers:
            continue
        shape = tree["conv"]["kernel"]
        fan_in = shape[0] * shape[1] * shape[2]
        rng = np.random.default_rng([seed, index])
        kernel = rng.standard_normal(shape, dtype=np.float32) * np.float32(
            np.sqrt(2.0 / fan_in))
        out = shape[3]
        if "bn" in tree:
            params[key] = {"conv": {"kernel": kernel},
                           "bn": {"scale": np.ones(out, np.float32),
                                  "bias": np.zeros(out, np.float32)}}
            stats[key] = {"bn": {"mean": np.zeros(out, np.float32),
                                 "var": np.ones(out, np.float32)}}
        else:
            params[key] = {"conv": {"kernel": kernel, "bias": np.zeros(out, np.float32)}}
    return {"params": params, "batch_stats": stats}


def as_float32(value: Any) -> np.ndarray:
    """A numpy float32 array of ``value`` (a numpy or jax array), copying only if needed."""
    return np.asarray(value, dtype=np.float32)


@dataclass(frozen=True)
class LoadedWeights:
    """What `frontends.load_variables` returns.

    Attributes:
        variables: the variables pytree (numpy float32 arrays), every conv filled in.
        format: ``"darknet"``, ``"torch"`` or ``"msgpack"``.
        loaded_convs: how many convs the file held (fewer than ``total_convs`` for a
            backbone such as ``darknet53.conv.74``; the rest are `default_variables`).
        total_convs: how many convs the cfg has.
        header: the file's own facts, kept so that writing back reproduces them:
            a `frontends.darknet.DarknetHeader`, a `frontends.torch_ckpt.CheckpointMeta`,
            or None (msgpack).
        warnings: things the user must hear about (partial files, BatchNorm eps
            conversions that are not exact, torch's zero-padded maxpool), one per string.
    """

    variables: Variables
    format: str
    loaded_convs: int
    total_convs: int
    header: Any = None
    warnings: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return self.loaded_convs < self.total_convs
