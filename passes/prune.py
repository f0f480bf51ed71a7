"""`prune`: one `SlimChannels` run that keeps what the seed's three-way check needs.

The check compares the original network, the γ-zeroed one, the keep-size one (masks
applied, constants folded, shapes unchanged) and the compact one; `PruneResult` holds
the first and last and derives the other two from the report's masks on first access.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ir import Graph, Variables
from passes.analysis import Prunability, analyze_prunability
from passes.fold import FoldPrunedBias, ZeroPrunedGamma
from passes.masks import ChannelMasks, Threshold
from passes.reports import SlimReport
from passes.slim import SlimChannels

PruneConfig = SlimChannels
"""The older name of `SlimChannels` (its options are the same fields)."""


@dataclass(frozen=True)
class PruneResult:
    """Everything a prune produced: the original and compact networks and the report.

    ``keep_size`` and ``gamma_zeroed`` (each a full copy of the weights, which most
    callers never need) are derived from the report's masks on first access and kept.
    """

    config: SlimChannels
    report: SlimReport
    original: tuple[Graph, Any]
    compact: tuple[Graph, Any]

    @property
    def masks(self) -> ChannelMasks:
        return self.report.masks

    @property
    def threshold(self) -> Threshold:
        return self.report.threshold

    @functools.cached_property
    def analysis(self) -> Prunability:
        """The prunability analysis of the original graph (reasons included)."""
        return analyze_prunability(self.original[0], self.config.mode, self.config.ignore)

    @functools.cached_property
    def keep_size(self) -> tuple[Graph, Any]:
        """Masks applied, constants folded, shapes unchanged; equals ``compact``."""
        return FoldPrunedBias(self.masks)(*self.original)

    @functools.cached_property
    def gamma_zeroed(self) -> tuple[Graph, Any]:
        """The seed's check network: only the dropped γ set to zero."""
        return ZeroPrunedGamma(self.masks)(*self.original)


def prune(graph: Graph, variables: Variables, config: SlimChannels) -> PruneResult:
    """Run ``config`` (a `SlimChannels`) on ``(graph, variables)``, keeping the original.

    >>> result = prune(graph, variables, SlimChannels(percent=0.5))
    >>> compact_graph, compact_vars = result.compact
    """
    result = config.run(graph, variables)
    assert isinstance(result.report, SlimReport)  # what SlimChannels reports
    return PruneResult(config=config, report=result.report, original=(graph, variables),
                       compact=(result.graph, result.variables))
