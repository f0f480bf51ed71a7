"""`prune`: the network-slimming pipeline from options to keep-size and compact nets."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from ir import Graph, Layer
from passes.analysis import Mode, Prunability, analyze_prunability
from passes.fold import FoldPrunedBias, SliceChannels, ZeroPrunedGamma
from passes.masks import ChannelMasks, Threshold, compute_masks, compute_threshold
from passes.pipeline import pipeline


@dataclass(frozen=True, slots=True)
class PruneConfig:
    """Options of a prune, as plain data (printable, comparable, serialisable).

    Give ``percent`` (the seed's global rule) or ``threshold``.
    """

    percent: float | None = None
    threshold: float | None = None
    mode: Mode = "regular"
    ignore: tuple[int, ...] | Callable[[int, Layer], bool] = ()
    min_keep: float = 0.01
    round_to: int = 1


@dataclass(frozen=True)
class PruneResult:
    """Everything a prune produced.

    ``compact`` is computed eagerly; the two networks with the original shapes,
    ``keep_size`` and ``gamma_zeroed``, are derived on first access and kept (each a
    full copy of the weights, which most callers never need).
    """

    config: PruneConfig
    analysis: Prunability
    threshold: Threshold
    masks: ChannelMasks
    original: tuple[Graph, Any]
    compact: tuple[Graph, Any]

    @functools.cached_property
    def keep_size(self) -> tuple[Graph, Any]:
        """Masks applied, constants folded, shapes unchanged; equals ``compact``."""
        return pipeline(FoldPrunedBias(self.masks))(*self.original)

    @functools.cached_property
    def gamma_zeroed(self) -> tuple[Graph, Any]:
        """The seed's check network: only the dropped γ set to zero."""
        return ZeroPrunedGamma(self.masks)(*self.original)


def prune(graph: Graph, variables: Any, config: PruneConfig) -> PruneResult:
    """Analyse, threshold, mask, fold and slice ``(graph, variables)``.

    >>> result = prune(graph, variables, PruneConfig(percent=0.5))
    >>> compact_graph, compact_vars = result.compact
    """
    analysis = analyze_prunability(graph, config.mode, config.ignore)
    threshold = compute_threshold(graph, variables, analysis, config.percent,
                                  config.threshold)
    masks = compute_masks(graph, variables, analysis, threshold.value,
                          config.min_keep, config.round_to)
    compact = pipeline(FoldPrunedBias(masks, zero_dropped_inputs=False),
                       SliceChannels(masks))(graph, variables)
    return PruneResult(config=config, analysis=analysis, threshold=threshold,
                       masks=masks, original=(graph, variables), compact=compact)
