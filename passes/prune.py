"""`prune`: the network-slimming pipeline from options to keep-size and compact nets."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """Everything a prune produced; the three networks share the original shapes
    except ``compact``."""

    config: PruneConfig
    analysis: Prunability
    threshold: Threshold
    masks: ChannelMasks
    gamma_zeroed: tuple[Graph, Any]
    keep_size: tuple[Graph, Any]
    compact: tuple[Graph, Any]
    extra: dict = field(default_factory=dict)


def prune(graph: Graph, variables: Any, config: PruneConfig) -> PruneResult:
    """Analyse, threshold, mask, fold and slice ``(graph, variables)``.

    >>> result = prune(graph, variables, PruneConfig(percent=0.5))  # doctest: +SKIP
    >>> compact_graph, compact_vars = result.compact                 # doctest: +SKIP
    """
    analysis = analyze_prunability(graph, config.mode, config.ignore)
    threshold = compute_threshold(graph, variables, analysis, config.percent,
                                  config.threshold)
    masks = compute_masks(graph, variables, analysis, threshold.value,
                          config.min_keep, config.round_to)
    keep_size = FoldPrunedBias(masks)(graph, variables)
    compact = pipeline(FoldPrunedBias(masks), SliceChannels(masks))(graph, variables)
    return PruneResult(config=config, analysis=analysis, threshold=threshold,
                       masks=masks, gamma_zeroed=ZeroPrunedGamma(masks)(graph, variables),
                       keep_size=keep_size, compact=compact)
