"""Transforms that apply channel masks: γ zeroing, bias folding (keep-size), slicing.

Folding, in one paragraph. With γ_c = 0 a BN conv's channel c emits the constant
``act(β_c)`` everywhere. That constant travels through ``[route]`` (concat),
``[upsample]`` and ``[maxpool]`` unchanged and through ``[shortcut]`` as
``act_s(Σ inputs)``: each kind's ``dropped`` rule (`passes.rules`) says what it becomes. A
consumer conv reading it adds ``Σ_{kh,kw} W[kh, kw, c, o] · K_c`` to output o, which it
can absorb: subtracted from its BN running mean, or added to its conv bias. This is exact
for 1×1 consumers and away from the zero-padded border of k×k consumers (at the border
part of the window reads padding, not the constant).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ir import Graph, Layer, layer_inputs
from ir.shapes import verify
from ir.variables import Leaf, Variables
from passes import tree
from passes.analysis import channel_segments
from passes.arrays import namespace
from passes.masks import ChannelMasks, check_masks
from passes.rules import DropContext, pass_rule


def tensor_keeps(graph: Graph, masks: ChannelMasks) -> tuple[np.ndarray, ...]:
    """For every layer's output tensor, which of its channels survive the masks."""
    by_space = masks.as_dict()
    keeps = []
    for segs in channel_segments(graph):
        parts = [by_space[s.space][s.start:s.stop] if s.space in by_space
                 else np.ones(s.size, dtype=bool) for s in segs]
        keeps.append(np.concatenate(parts) if parts else np.ones(0, dtype=bool))
    return tuple(keeps)


def _dropped_constants(graph: Graph, variables: Variables, masks: ChannelMasks,
                       keeps: tuple[np.ndarray, ...], xp: Any) -> list[Any]:
    """Per tensor, the constant each dropped channel emits once its γ is zero (each
    kind's ``dropped`` rule), 0 where the channel is kept."""
    shapes = verify(graph)
    by_space = masks.as_dict()
    consts: list[Any] = []
    image = xp.zeros(graph.channels, xp.float32)
    no_drop = np.zeros(graph.channels, dtype=bool)
    for i, layer in enumerate(graph.layers):
        inputs = layer_inputs(graph, i)
        ctx = DropContext(
            xp=xp, consts=tuple(image if j < 0 else consts[j] for j in inputs),
            dropped=tuple(no_drop if j < 0 else ~keeps[j] for j in inputs),
            out_shape=shapes[i], own_keep=by_space.get(i),
            params=tree.leaves_of(variables, i))
        const = pass_rule(layer).dropped(layer, ctx)
        consts.append(xp.where(xp.asarray(keeps[i]), 0.0, const))
    return consts


def _input_of(graph: Graph, index: int, per_tensor: Sequence[Any], image: Any) -> Any:
    j = layer_inputs(graph, index)[0]
    return per_tensor[j] if j >= 0 else image


def _leaves_namespace(variables: Variables) -> ModuleType:
    return namespace(*(leaf for layer in variables["params"].values()
                       for part in layer.values() for leaf in part.values()))


@dataclass(frozen=True, slots=True)
class ZeroPrunedGamma:
    """The seed's "γ zeroed" network: γ of dropped channels set to 0, nothing else.

    It shows what the masks cost before any folding (the border effect included).
    """

    masks: ChannelMasks
    name: str = "zero-pruned-gamma"

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Variables]:
        check_masks(graph, self.masks, self.name)
        updates: dict[tuple[int, Leaf], Any] = {}
        for i, mask in self.masks.as_dict().items():
            if not mask.all():
                gamma = tree.get(variables, i, tree.GAMMA)
                xp = namespace(gamma)
                updates[(i, tree.GAMMA)] = xp.where(xp.asarray(mask), gamma, 0.0)
        return graph, tree.with_updates(variables, updates)


@dataclass(frozen=True, slots=True)
class FoldPrunedBias:
    """The keep-size network: shapes unchanged, dropped channels folded away.

    Each dropped channel's constant is absorbed by every consumer with variables (each
    kind's ``fold`` rule), the dropped γ and β become 0, and (with
    ``zero_dropped_inputs``) the consumers' kernel slices for dropped input channels
    become 0, so this network equals the compact one exactly (see module docstring for
    where it differs from the γ-zeroed one). Before `SliceChannels` the zeroing is
    wasted work: those slices are cut anyway.
    """

    masks: ChannelMasks
    zero_dropped_inputs: bool = True
    name: str = "fold-pruned-bias"

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Variables]:
        check_masks(graph, self.masks, self.name)
        if self.masks.is_noop:
            return graph, variables
        xp = _leaves_namespace(variables)
        keeps = tensor_keeps(graph, self.masks)
        consts = _dropped_constants(graph, variables, self.masks, keeps, xp)
        by_space = self.masks.as_dict()
        updates: dict[tuple[int, Leaf], Any] = {}
        for i, layer in enumerate(graph.layers):
            leaves = tree.leaves_of(variables, i)
            if not leaves:
                continue
            new = pass_rule(layer).fold(layer, xp, leaves, _input_of(graph, i, consts, None),
                                       _input_of(graph, i, keeps, None), by_space.get(i),
                                       self.zero_dropped_inputs)
            updates.update({(i, leaf): value for leaf, value in new.items()})
        return graph, tree.with_updates(variables, updates)


@dataclass(frozen=True, slots=True)
class SliceChannels:
    """The compact network: dropped channels removed, ``filters=`` rewritten.

    Run it after `FoldPrunedBias` (which absorbed what the dropped channels emitted);
    slicing is the only step whose output shapes depend on the data. Each kind with
    variables slices them with its ``slice`` rule.
    """

    masks: ChannelMasks
    name: str = "slice-channels"

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Variables]:
        check_masks(graph, self.masks, self.name)
        if self.masks.is_noop:
            return graph, variables
        keeps = tensor_keeps(graph, self.masks)
        image = np.ones(graph.channels, dtype=bool)
        layers: dict[int, Layer] = {}
        updates: dict[tuple[int, Leaf], Any] = {}
        for i, layer in enumerate(graph.layers):
            leaves = tree.leaves_of(variables, i)
            if not leaves:
                continue
            new_layer, new = pass_rule(layer).slice(layer, namespace(*leaves.values()), leaves,
                                                    _input_of(graph, i, keeps, image),
                                                    keeps[i])
            layers[i] = new_layer
            updates.update({(i, leaf): value for leaf, value in new.items()})
        return graph.replace_layers(layers), tree.with_updates(variables, updates)
