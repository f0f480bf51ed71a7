"""Global γ threshold and per-conv channel masks.

The threshold rule is exactly the seed's, so results compare with it: gather |γ| of
every prunable channel, sort, ``thre = sorted[int(n * percent)]``, keep ``|γ| >= thre``.
A coupled unit (shortcut mode) keeps a channel when any member keeps it: the union of
its members' masks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ir import Connected, Conv, Graph, Variables
from passes import tree
from passes.analysis import Prunability
from passes.errors import PruneError


@dataclass(frozen=True, slots=True)
class GraphFingerprint:
    """What a graph looked like, layer by layer: a short digest of each layer.

    Masks carry the fingerprint of the graph they were computed on, so applying them to
    any other graph (blocks removed since, channels already sliced) is an error that
    names the first layer where the two differ, never a silent misapplication (MLIR
    invalidates an analysis when the IR changes, for the same reason).
    """

    layers: tuple[str, ...]

    @classmethod
    def of(cls, graph: Graph) -> "GraphFingerprint":
        # repr covers every compared field of a layer (path and line are neither).
        return cls(tuple(hashlib.blake2b(repr(layer).encode(), digest_size=6).hexdigest()
                         for layer in graph.layers))

    @property
    def digest(self) -> str:
        """12 hex digits for the whole graph."""
        return hashlib.blake2b("".join(self.layers).encode(), digest_size=6).hexdigest()

    def first_difference(self, other: "GraphFingerprint") -> int | None:
        """The first layer index where the two graphs differ (None when equal)."""
        for i, (a, b) in enumerate(zip(self.layers, other.layers)):
            if a != b:
                return i
        if len(self.layers) != len(other.layers):
            return min(len(self.layers), len(other.layers))
        return None

    def __repr__(self) -> str:
        return f"GraphFingerprint({self.digest}, {len(self.layers)} layers)"


@dataclass(frozen=True, slots=True)
class ChannelMasks:
    """One keep-mask per pruned conv output, bound to the graph it was computed on.

    ``items`` holds ``(conv index, mask)`` with the mask as a tuple of bools, so masks
    are hashable, printable data; members of a coupled unit share theirs. Convs absent
    from ``items`` keep every channel. ``fingerprint`` is the graph's (see
    `GraphFingerprint`); the passes that apply masks check it with `check_masks`.
    """

    items: tuple[tuple[int, tuple[bool, ...]], ...]
    fingerprint: GraphFingerprint

    @classmethod
    def from_arrays(cls, masks: dict[int, np.ndarray],
                    graph: Graph | GraphFingerprint) -> "ChannelMasks":
        """Masks from ``{conv index: bool array}`` for ``graph`` (or its fingerprint)."""
        fingerprint = graph if isinstance(graph, GraphFingerprint) else \
            GraphFingerprint.of(graph)
        return cls(tuple(sorted((int(i), tuple(bool(b) for b in m))
                                for i, m in masks.items())), fingerprint)

    def get(self, index: int) -> np.ndarray | None:
        for i, mask in self.items:
            if i == index:
                return np.asarray(mask, dtype=bool)
        return None

    def as_dict(self) -> dict[int, np.ndarray]:
        return {i: np.asarray(m, dtype=bool) for i, m in self.items}

    @property
    def is_noop(self) -> bool:
        return all(all(m) for _, m in self.items)

    @property
    def kept(self) -> int:
        """Channels kept over every masked conv."""
        return sum(sum(m) for _, m in self.items)

    @property
    def total(self) -> int:
        """Channels over every masked conv."""
        return sum(len(m) for _, m in self.items)

    @property
    def summary(self) -> str:
        """``12 convs, 400/848 channels kept, graph 3fa2c1d0e5b7``."""
        return (f"{len(self.items)} convs, {self.kept}/{self.total} channels kept, "
                f"graph {self.fingerprint.digest}")

    def __repr__(self) -> str:
        # Every bit only while that is short (a shrunk hypothesis example); yolov3 has
        # ~10k of them, and a pipeline's text never shows them (`passes.pass_text`).
        if self.total <= 64:
            return f"ChannelMasks(items={self.items!r}, graph={self.fingerprint.digest})"
        return f"ChannelMasks({self.summary})"


def check_masks(graph: Graph, masks: ChannelMasks, by: str) -> None:
    """Raise a `PruneError` naming ``by`` (the pass) and the layer when ``masks`` do
    not fit ``graph``: computed on another graph, a wrong length, an index that is not
    a conv, a conv without BatchNorm, or a mask that keeps nothing."""
    here = GraphFingerprint.of(graph)
    if masks.fingerprint != here:
        i = masks.fingerprint.first_difference(here)
        assert i is not None  # the fingerprints differ, so some layer does
        at = (f"layer {i} ([{graph.layers[i].kind}] at cfg line {graph.layers[i].line})"
              if i < len(graph.layers) else f"layer {i} (past this graph's end)")
        raise PruneError(
            f"{by}: the masks were computed on another graph ({masks.fingerprint.digest}, "
            f"{len(masks.fingerprint.layers)} layers) than this one ({here.digest}, "
            f"{len(graph.layers)} layers); they first differ at {at}. Compute masks on "
            "the graph they apply to (passes.SlimChannels does so by itself)")
    for i, mask in masks.items:
        layer = graph.layers[i] if 0 <= i < len(graph.layers) else None
        where = f"layer {i} (cfg line {layer.line})" if layer is not None else f"layer {i}"
        if layer is None:
            raise PruneError(f"{by}: mask for layer {i}: out of range (0..{len(graph) - 1})")
        if not isinstance(layer, (Conv, Connected)):
            raise PruneError(f"{by}: mask for {where}: a [{layer.kind}]; expected a "
                             "[convolutional] (or [connected]) layer")
        if not layer.batch_normalize:
            what = "conv" if isinstance(layer, Conv) else f"[{layer.kind}]"
            raise PruneError(f"{by}: mask for {where}: a {what} without BatchNorm; only BN "
                             "layers can drop channels (a dropped channel becomes act(β))")
        channels = layer.filters if isinstance(layer, Conv) else layer.output
        if len(mask) != channels:
            what = "filters" if isinstance(layer, Conv) else "outputs"
            raise PruneError(f"{by}: mask for {where}: {len(mask)} entries; expected "
                             f"{channels}, its {what}")
        if not any(mask):
            raise PruneError(f"{by}: mask for {where}: keeps none of its {channels} "
                             "channels; expected at least one")


@dataclass(frozen=True, slots=True)
class Threshold:
    """The chosen threshold and the highest one that empties no prunable unit."""

    value: float
    percent: float
    safe_value: float
    safe_percent: float
    n_channels: int


def _abs_gamma(graph: Graph, variables: Variables, index: int) -> np.ndarray:
    gamma = np.abs(np.asarray(tree.get(variables, index, tree.GAMMA), dtype=np.float32))
    if not np.all(np.isfinite(gamma)):
        bad = int(np.flatnonzero(~np.isfinite(gamma))[0])
        raise PruneError(f"layer {index} (cfg line {graph.layers[index].line}): BN γ "
                         f"channel {bad} is {gamma[bad]}: expected finite weights")
    return gamma


def unit_scores(graph: Graph, variables: Variables, analysis: Prunability
                ) -> dict[tuple[int, ...], np.ndarray]:
    """Per unit, the |γ| that decides each channel (max over members: the union rule)."""
    return {unit: np.max([_abs_gamma(graph, variables, i) for i in unit], axis=0)
            for unit in analysis.units}


def compute_threshold(graph: Graph, variables: Variables, analysis: Prunability,
                      percent: float | None = None,
                      threshold: float | None = None) -> Threshold:
    """The seed's global threshold at ``percent``, or an explicit ``threshold``."""
    if (percent is None) == (threshold is None):
        raise PruneError("give exactly one of percent or threshold", argument="percent")
    if percent is not None and not 0 <= percent < 1:
        raise PruneError(f"percent={percent}: expected 0 <= percent < 1",
                         argument="percent")
    if not analysis.units:
        raise PruneError("no prunable layer in this graph (analyze_prunability gives "
                         "the reasons): nothing to threshold")
    gammas = np.concatenate([_abs_gamma(graph, variables, i) for i in analysis.prunable])
    ordered = np.sort(gammas)
    n = len(ordered)
    # One |γ| for every channel of convs that have several: nothing to rank by.
    if percent and ordered[0] == ordered[-1] and n > len(analysis.prunable):
        raise PruneError(
            f"percent={percent}: every prunable |γ| is {ordered[0]:g}, so there is nothing "
            "to rank channels by (freshly initialised variables set γ = 1); prune "
            "sparse-trained weights, or try ir.init_variables(graph, 'sparse')",
            argument="percent")
    scores = unit_scores(graph, variables, analysis)
    safe = float(min(s.max() for s in scores.values()))
    safe_percent = int(np.searchsorted(ordered, safe, side="left")) / n
    if threshold is None:
        assert percent is not None  # exactly one of the two was given
        value = float(ordered[int(n * percent)])
    else:
        if not math.isfinite(threshold) or threshold < 0:
            raise PruneError(f"threshold={threshold}: expected a finite value >= 0",
                             argument="threshold")
        value = float(threshold)
        percent = int(np.searchsorted(ordered, value, side="left")) / n
    return Threshold(value=value, percent=float(percent), safe_value=safe,
                     safe_percent=safe_percent, n_channels=n)


def balance_mask(keep: np.ndarray, groups: int, score: np.ndarray | None = None
                 ) -> np.ndarray:
    """``keep`` made group-balanced: split into ``groups`` equal slices, each keeps the
    same number of channels, the most any slice keeps, chosen by ``score`` within the
    slice (kept channels first when no score is given). A ``[route] groups=`` slice of
    the pruned tensor then still reads exactly the kept channels of its slice.

    >>> balance_mask(np.array([1, 1, 0, 0, 1, 0], bool), 2).astype(int).tolist()
    [1, 1, 0, 1, 1, 0]
    """
    if groups == 1:
        return keep
    parts = keep.reshape(groups, -1)
    count = max(int(parts.sum(axis=1).max()), 1)
    rank = (parts.astype(np.float64) if score is None
            else np.where(parts, np.inf, score.reshape(groups, -1)))
    order = np.argsort(-rank, axis=1, kind="stable")[:, :count]
    balanced = np.zeros_like(parts)
    np.put_along_axis(balanced, order, True, axis=1)
    return balanced.reshape(-1)


def compute_masks(graph: Graph, variables: Variables, analysis: Prunability, threshold: float,
                  min_keep: float = 0.01, round_to: int = 1) -> ChannelMasks:
    """Keep ``|γ| >= threshold`` per unit, with a floor and optional rounding; units
    read in slices by a ``[route] groups=`` get group-balanced masks (`balance_mask`).

    Args:
        min_keep: fraction of each unit kept at least (the top-|γ| channels), never
            fewer than one channel; ``0`` disables the floor, and then a threshold
            that would empty a unit is a `PruneError`.
        round_to: round each unit's kept count up to a multiple of this.
    """
    if not 0 <= min_keep <= 1:
        raise PruneError(f"min_keep={min_keep}: expected a fraction in [0, 1]",
                         argument="min_keep")
    if round_to < 1:
        raise PruneError(f"round_to={round_to}: expected a positive integer",
                         argument="round_to")
    masks: dict[int, np.ndarray] = {}
    balanced = dict(analysis.balanced)
    for unit, score in unit_scores(graph, variables, analysis).items():
        keep = score >= threshold
        floor = max(1, math.ceil(min_keep * len(score))) if min_keep > 0 else 0
        count = max(int(keep.sum()), floor)
        if count == 0:
            first = unit[0]
            raise PruneError(
                f"layer {first} (cfg line {graph.layers[first].line}): threshold "
                f"{threshold:.6g} keeps none of its {len(score)} channels (max |γ| "
                f"{score.max():.6g}); lower the threshold or set min_keep > 0",
                argument="threshold")
        count = min(len(score), -(-count // round_to) * round_to)
        if count > keep.sum():
            order = np.argsort(-score, kind="stable")
            keep = np.zeros_like(keep)
            keep[order[:count]] = True
        keep = balance_mask(keep, balanced.get(unit, 1), score)
        for i in unit:
            masks[i] = keep
    return ChannelMasks.from_arrays(masks, graph)
