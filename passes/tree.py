"""Out-of-place access to the Flax variables pytree of a Darknet graph.

Layout (owned by `ir.variables`): ``variables[collection][layer_key(i)][part][name]``
with collection ``params`` (``conv/kernel`` HWIO, ``conv/bias``, ``bn/scale``,
``bn/bias``) or ``batch_stats`` (``bn/mean``, ``bn/var``); the leaves are named by the
`ir.variables` constants re-exported here (``tree.GAMMA``, ...).
"""

from __future__ import annotations

from typing import Any, Mapping

from ir.variables import BETA as BETA
from ir.variables import CONV_BIAS as CONV_BIAS
from ir.variables import GAMMA as GAMMA
from ir.variables import KERNEL as KERNEL
from ir.variables import MEAN as MEAN
from ir.variables import VAR as VAR
from ir.variables import Leaf as Leaf
from ir.variables import Variables as Variables
from ir.variables import layer_index, layer_key


def get(variables: Variables, index: int, leaf: Leaf) -> Any:
    collection, part, name = leaf
    return variables[collection][layer_key(index)][part][name]


def leaves_of(variables: Variables, index: int) -> dict[Leaf, Any]:
    """Layer ``index``'s variables as ``{(collection, part, name): array}``; empty for a
    layer without variables. The kinds' fold and slice rules read and return these."""
    key = layer_key(index)
    return {(collection, part, name): leaf
            for collection, layers in variables.items() if key in layers
            for part, leaves in layers[key].items() for name, leaf in leaves.items()}


def with_updates(variables: Variables, updates: Mapping[tuple[int, Leaf], Any]
                 ) -> dict[str, Any]:
    """A new variables dict with ``updates[(index, leaf)]`` set; untouched subtrees are
    shared, nothing is mutated. Returns ``variables`` itself when there are no updates."""
    if not updates:
        return variables  # type: ignore[return-value]
    new = {collection: dict(layers) for collection, layers in variables.items()}
    for (index, (collection, part, name)), value in updates.items():
        key = layer_key(index)
        layer = dict(new[collection][key])
        layer[part] = {**layer[part], name: value}
        new[collection][key] = layer
    return new


def drop_layers(variables: Variables, keep: Mapping[int, int]) -> dict[str, Any]:
    """Variables renumbered by ``keep`` (old index -> new index); other layers vanish."""
    new: dict[str, Any] = {}
    for collection, layers in variables.items():
        renumbered: dict[str, Any] = {}
        for k, v in layers.items():
            old = layer_index(k)
            if old is not None and old in keep:
                renumbered[layer_key(keep[old])] = v
        new[collection] = renumbered
    return new
