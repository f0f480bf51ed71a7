"""The variables pytree as the frontends read and write it.

The layout (keys, shapes, the fit check, initialisers) is owned by `ir.variables`;
this module re-exports what the frontends use and adds what only they need: which
Darknet sections carry weights darkslim cannot read, and `LoadedWeights`. BatchNorm
statistics mean what they mean with the runtime's eps (`RUNTIME_BN_EPS`); frontends of
sources with another eps convert on the way in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import ir
from frontends.errors import WeightsError
from ir.variables import Variables as Variables
from ir.variables import check_variables as _check_variables
from ir.variables import conv_in_channels as conv_in_channels
from ir.variables import expected_shapes as expected_shapes
from ir.variables import flat_shapes as flat_shapes
from ir.variables import init_variables
from ir.variables import layer_key as layer_key
from ir.variables import where as where

RUNTIME_BN_EPS = 1e-5
"""The BatchNorm eps the variables pytree assumes (Darknet's and the runtime's)."""

# Darknet sections that carry weights in a .weights file besides [convolutional];
# darkslim cannot read or write those yet, so it refuses rather than misreading bytes.
_WEIGHTED_SECTIONS = frozenset({
    "batchnorm", "local", "deconvolutional", "deconv", "crnn",
    "rnn", "gru", "lstm", "conv_lstm", "implicit_add", "implicit_mul",
})


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


def check_variables(graph: ir.Graph, variables: Variables, source: str,
                    error: type[ValueError] = WeightsError) -> None:
    """`ir.variables.check_variables` raising the frontends' `WeightsError` by default."""
    _check_variables(graph, variables, source, error)


def default_variables(graph: ir.Graph, seed: int = 0,
                      layers: frozenset[int] | None = None,
                      initialiser: str = "darknet") -> Variables:
    """Freshly initialised numpy variables (`ir.variables.init_variables`), for layers
    a file does not hold, or for trying things out.

    ``"darknet"`` (the default, what fills the rest of a partial file) sets every γ to
    1, which gives a prune nothing to rank; ``"sparse"`` draws γ the way sparse
    training leaves them.

    Args:
        layers: initialise only these conv layer indices (default: all convs).
    """
    return init_variables(graph, initialiser, seed, layers)


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
