"""`SlimChannels`: network slimming as one pass that owns its analysis.

From the graph it receives it analyses prunability, thresholds |γ| globally, computes
masks, folds what the dropped channels emitted into their consumers and slices. So it
composes with anything, in any order, any number of times (after `RemoveBlocks`, the
analysis is of the graph without the blocks). Its `SlimReport` says what it decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ir import Graph, Layer, Variables
from passes.analysis import Mode, analyze_prunability
from passes.errors import PruneError
from passes.fold import FoldPrunedBias, SliceChannels
from passes.masks import compute_masks, compute_threshold
from passes.pipeline import PassResult
from passes.reports import Counts, SlimReport, channel_layers, width
from passes.text import pass_text

Ignore = tuple[int, ...] | Callable[[int, Layer], bool]


def check_selection(spec: Any) -> Callable[[str, str], PruneError]:
    """Check the options every channel-selecting pass shares (``ignore``, ``mode``,
    ``min_keep``) on a frozen pass dataclass, normalising ``ignore`` to a tuple of ints;
    return the ``bad(argument, expected)`` error maker for the pass's own options."""
    def bad(argument: str, expected: str) -> PruneError:
        return PruneError(f"{argument}={getattr(spec, argument)!r}: expected {expected}",
                          argument=argument, pass_name=spec.name)

    if not callable(spec.ignore):
        try:
            object.__setattr__(spec, "ignore", tuple(int(i) for i in spec.ignore))
        except (TypeError, ValueError):
            raise bad("ignore", "conv layer indices or a predicate") from None
    if spec.mode not in ("regular", "shortcut"):
        raise bad("mode", "'regular' or 'shortcut'")
    if not (isinstance(spec.min_keep, (int, float)) and 0 <= spec.min_keep <= 1):
        raise bad("min_keep", "a fraction in [0, 1]")
    return bad


@dataclass(frozen=True, slots=True, kw_only=True)
class SlimChannels:
    """Drop the channels whose |γ| falls below a global threshold.

    Give exactly one of:
        percent: the fraction of prunable channels to drop (the seed's global rule:
            ``thre = sorted(|γ|)[int(n * percent)]``, keep ``|γ| >= thre``);
        threshold: drop channels with ``|γ| < threshold``.

    Args:
        mode: ``regular`` keeps shortcut-coupled convs whole (the seed); ``shortcut``
            prunes each coupled group with one shared mask (the union of its members').
        ignore: conv indices to keep whole, or a predicate ``(index, layer) -> bool``.
        min_keep: keep at least this fraction of every unit, and at least one channel
            (``0``: no floor, and a threshold that empties a unit is an error).
        round_to: round each unit's kept count up to a multiple of this.

    >>> import passes
    >>> str(passes.pipeline(SlimChannels(percent=0.5, mode="shortcut")))
    'slim-channels{percent=0.5,mode=shortcut}'
    """

    name: ClassVar[str] = "slim-channels"
    percent: float | None = None
    threshold: float | None = None
    mode: Mode = "regular"
    ignore: Ignore = ()
    min_keep: float = 0.01
    round_to: int = 1

    def __post_init__(self) -> None:
        bad = check_selection(self)
        if (self.percent is None) == (self.threshold is None):
            raise PruneError("give exactly one of percent or threshold",
                             argument="percent", pass_name=self.name)
        if self.percent is not None and not (isinstance(self.percent, (int, float))
                                             and 0 <= self.percent < 1):
            raise bad("percent", "0 <= percent < 1")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and math.isfinite(self.threshold)
                                               and self.threshold >= 0):
            raise bad("threshold", "a finite value >= 0")
        if not (isinstance(self.round_to, int) and self.round_to >= 1):
            raise bad("round_to", "a positive integer")

    def run(self, graph: Graph, variables: Variables) -> PassResult:
        """Analyse, threshold, mask, fold and slice; the report holds the decisions."""
        analysis = analyze_prunability(graph, self.mode, self.ignore)
        threshold = compute_threshold(graph, variables, analysis, self.percent,
                                      self.threshold)
        masks = compute_masks(graph, variables, analysis, threshold.value,
                              self.min_keep, self.round_to)
        # Folding before slicing: the kernel slices it would zero are cut anyway.
        folded = FoldPrunedBias(masks, zero_dropped_inputs=False)(graph, variables)
        out_graph, out_vars = SliceChannels(masks)(*folded)
        by_conv = masks.as_dict()
        channels = tuple((i, int(by_conv[i].sum()) if i in by_conv else
                          width(graph.layers[i]), width(graph.layers[i]))
                         for i in channel_layers(graph))
        report = SlimReport(
            name=self.name, text=pass_text(self), before=Counts.of(graph),
            after=Counts.of(out_graph), mode=self.mode, min_keep=float(self.min_keep),
            round_to=self.round_to, ignore=None if callable(self.ignore) else self.ignore,
            threshold=threshold, units=analysis.units, channels=channels, masks=masks)
        return PassResult(out_graph, out_vars, report)

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Variables]:
        result = self.run(graph, variables)
        return result.graph, result.variables
