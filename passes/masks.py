"""Global γ threshold and per-conv channel masks.

The threshold rule is exactly the seed's, so results compare with it: gather |γ| of
every prunable channel, sort, ``thre = sorted[int(n * percent)]``, keep ``|γ| >= thre``.
A coupled unit (shortcut mode) keeps a channel when any member keeps it: the union of
its members' masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ir import Graph
from passes import tree
from passes.analysis import Prunability
from passes.errors import PruneError


@dataclass(frozen=True, slots=True)
class ChannelMasks:
    """One keep-mask per pruned conv output; members of a coupled unit share theirs.

    ``items`` holds ``(conv index, mask)`` with the mask as a tuple of bools, so masks
    are hashable, printable data. Convs absent from ``items`` keep every channel.
    """

    items: tuple[tuple[int, tuple[bool, ...]], ...]

    @classmethod
    def from_arrays(cls, masks: dict[int, np.ndarray]) -> "ChannelMasks":
        return cls(tuple(sorted((int(i), tuple(bool(b) for b in m))
                                for i, m in masks.items())))

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


@dataclass(frozen=True, slots=True)
class Threshold:
    """The chosen threshold and the highest one that empties no prunable unit."""

    value: float
    percent: float
    safe_value: float
    safe_percent: float
    n_channels: int


def _abs_gamma(graph: Graph, variables, index: int) -> np.ndarray:
    gamma = np.abs(np.asarray(tree.get(variables, index, tree.GAMMA), dtype=np.float32))
    if not np.all(np.isfinite(gamma)):
        bad = int(np.flatnonzero(~np.isfinite(gamma))[0])
        raise PruneError(f"layer {index} (cfg line {graph.layers[index].line}): BN γ "
                         f"channel {bad} is {gamma[bad]}: expected finite weights")
    return gamma


def unit_scores(graph: Graph, variables, analysis: Prunability) -> dict[tuple[int, ...], np.ndarray]:
    """Per unit, the |γ| that decides each channel (max over members: the union rule)."""
    return {unit: np.max([_abs_gamma(graph, variables, i) for i in unit], axis=0)
            for unit in analysis.units}


def compute_threshold(graph: Graph, variables, analysis: Prunability,
                      percent: float | None = None,
                      threshold: float | None = None) -> Threshold:
    """The seed's global threshold at ``percent``, or an explicit ``threshold``."""
    if (percent is None) == (threshold is None):
        raise PruneError("give exactly one of percent or threshold")
    if percent is not None and not 0 <= percent < 1:
        raise PruneError(f"--percent {percent}: expected 0 <= percent < 1")
    if not analysis.units:
        raise PruneError("no prunable layer in this graph (see `darkslim info`): "
                         "nothing to threshold")
    gammas = np.concatenate([_abs_gamma(graph, variables, i) for i in analysis.prunable])
    ordered = np.sort(gammas)
    n = len(ordered)
    scores = unit_scores(graph, variables, analysis)
    safe = float(min(s.max() for s in scores.values()))
    safe_percent = int(np.searchsorted(ordered, safe, side="left")) / n
    if threshold is None:
        value = float(ordered[int(n * percent)])
    else:
        if not math.isfinite(threshold) or threshold < 0:
            raise PruneError(f"--threshold {threshold}: expected a finite value >= 0")
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


def compute_masks(graph: Graph, variables, analysis: Prunability, threshold: float,
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
        raise PruneError(f"--min-keep {min_keep}: expected a fraction in [0, 1]")
    if round_to < 1:
        raise PruneError(f"--round-to {round_to}: expected a positive integer")
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
                f"{score.max():.6g}); lower the threshold or set --min-keep > 0")
        count = min(len(score), -(-count // round_to) * round_to)
        if count > keep.sum():
            order = np.argsort(-score, kind="stable")
            keep = np.zeros_like(keep)
            keep[order[:count]] = True
        keep = balance_mask(keep, balanced.get(unit, 1), score)
        for i in unit:
            masks[i] = keep
    return ChannelMasks.from_arrays(masks)
