"""`SlimToLatency`: network slimming to a latency budget predicted by a `LatencyTable`.

Where `SlimChannels` drops every channel below one global |γ| threshold, this pass
decides per prunable unit how many channels to keep so the predicted whole-network
time fits a budget (``target_ms``, or the unpruned prediction / ``target_speedup``)
while keeping the most γ-importance (Σ|γ| of the kept channels). Greedy, as NetAdapt
and HALP do it: from the full network, repeatedly take the step -- one unit down by
``round_to`` channels (the counts the engine runs fast), never below its floor -- that
loses the least importance per predicted millisecond saved, until the prediction is
within budget. Within a unit the channels go in |γ| order, lowest first, so the masks
are the ones a threshold would give for that count.

Prunability is `SlimChannels`'s (same analysis, modes, ignore, min_keep floor, group-
balanced masks for ``[route] groups=``), and the output is the same `ChannelMasks`,
folded and sliced the same way, so everything downstream works unchanged. The report
(`LatencyReport`) holds the table's key, the predictions before and after and the
channels chosen per layer. A budget even the floors cannot meet is a `PruneError`
naming the best reachable time and speed-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

import ir
from ir import Graph, Variables
from passes import tree
from passes.analysis import Mode, Prunability, analyze_prunability, channel_segments
from passes.errors import PruneError
from passes.fold import FoldPrunedBias, SliceChannels
from passes.latency import LatencyTable
from passes.masks import ChannelMasks, Threshold, balance_mask, compute_threshold
from passes.pipeline import PassResult
from passes.reports import Counts, LatencyReport, channel_layers, width
from passes.slim import Ignore, check_selection
from passes.text import pass_text


@dataclass(frozen=True, slots=True, kw_only=True)
class SlimToLatency:
    """Keep the most Σ|γ| whose predicted latency fits a budget.

    Give exactly one of:
        target_speedup: predicted unpruned time / predicted pruned time, > 1;
        target_ms: the predicted time of the pruned network, in milliseconds.

    Args:
        engine: the engine the table is measured on (the CLI measures it).
        mode, ignore, min_keep: as `SlimChannels`.
        round_to: channels move in steps of this (and counts stay multiples of it
            unless at a floor or the full width); default (None) the table's
            ``multiple``, the engine's channel block (16 on onnxruntime with AVX-512:
            fewer channels than a multiple of 16 run no faster, measured).
        table: the `LatencyTable` of the graph this pass runs on; no text form
            (``darkslim prune`` measures or loads it and fills it in).

    >>> import passes
    >>> str(passes.pipeline(SlimToLatency(target_speedup=2.0)))
    'slim-to-latency{target_speedup=2.0}'
    """

    name: ClassVar[str] = "slim-to-latency"
    target_speedup: float | None = None
    target_ms: float | None = None
    engine: str = "onnxruntime"
    mode: Mode = "regular"
    ignore: Ignore = ()
    min_keep: float = 0.01
    round_to: int | None = None
    table: LatencyTable | None = field(default=None, metadata={"text": False})

    def __post_init__(self) -> None:
        bad = check_selection(self)
        if (self.target_speedup is None) == (self.target_ms is None):
            raise PruneError("give exactly one of target_speedup or target_ms",
                             argument="target_speedup", pass_name=self.name)
        if self.target_speedup is not None and not (
                isinstance(self.target_speedup, (int, float))
                and math.isfinite(self.target_speedup) and self.target_speedup > 1):
            raise bad("target_speedup", "a finite speed-up > 1, such as 2")
        if self.target_ms is not None and not (
                isinstance(self.target_ms, (int, float)) and math.isfinite(self.target_ms)
                and self.target_ms > 0):
            raise bad("target_ms", "a finite time > 0 in milliseconds")
        if not isinstance(self.engine, str) or not self.engine:
            raise bad("engine", "an engine name such as onnxruntime")
        if self.round_to is not None and not (isinstance(self.round_to, int)
                                              and self.round_to >= 1):
            raise bad("round_to", "a positive integer")
        if self.table is not None and not isinstance(self.table, LatencyTable):
            raise bad("table", "a passes.LatencyTable")
        if self.table is not None and self.table.key.engine != self.engine:
            raise PruneError(f"table measured on {self.table.key.engine!r}; this pass "
                             f"targets engine={self.engine!r}", argument="engine",
                             pass_name=self.name)

    def run(self, graph: Graph, variables: Variables) -> PassResult:
        """Choose counts, mask, fold and slice; the report holds the decisions."""
        if self.table is None:
            raise PruneError(
                f"{self.name}: no latency table: measure one on the graph it runs on "
                "(darkslim.latency_table.load_or_measure, or `darkslim prune "
                "--target-speedup X --engine E`) and give it as table=",
                argument="table", pass_name=self.name)
        table = self.table
        table.check_graph(graph)
        analysis = analyze_prunability(graph, self.mode, self.ignore)
        if not analysis.units:
            raise PruneError(f"{self.name}: no prunable layer in this graph "
                             "(analyze_prunability gives the reasons)")
        choice = choose_counts(graph, variables, table, analysis.units,
                               target_speedup=self.target_speedup,
                               target_ms=self.target_ms, min_keep=self.min_keep,
                               round_to=self.round_to or max(table.multiple, 1))
        balanced = dict(analysis.balanced)
        greedy: dict[tuple[int, ...], np.ndarray] = {}
        for unit, count in zip(analysis.units, choice.counts):
            score = choice.importance[unit]
            keep = np.zeros(len(score), bool)
            keep[np.argsort(-score, kind="stable")[:count]] = True
            greedy[unit] = balance_mask(keep, balanced.get(unit, 1), score)
        # A global threshold's masks are candidates too: the pass never keeps less Σ|γ|
        # than the best threshold whose prediction fits the budget (greedy steps of
        # round_to can, on a few graphs).
        best = best_global(graph, variables, table, analysis, choice.target_ms,
                           self.min_keep)
        method = "greedy"
        if best is not None and _kept(best, choice.importance) > _kept(greedy,
                                                                      choice.importance):
            greedy, method = best, "global-threshold"
        masks: dict[int, np.ndarray] = {}
        dropped_max = 0.0
        for unit, keep in greedy.items():
            if not keep.all():
                dropped_max = max(dropped_max, float(_unit_gamma(graph, variables, unit)
                                                     [~keep].max()))
            for i in unit:
                masks[i] = keep
        channel_masks = ChannelMasks.from_arrays(masks, graph)
        folded = FoldPrunedBias(channel_masks, zero_dropped_inputs=False)(graph, variables)
        out_graph, out_vars = SliceChannels(channel_masks)(*folded)
        before, after = table.predict(graph), table.predict(out_graph)
        by_conv = channel_masks.as_dict()
        channels = tuple((i, int(by_conv[i].sum()) if i in by_conv else
                          width(graph.layers[i]), width(graph.layers[i]))
                         for i in channel_layers(graph))
        safe = compute_threshold(graph, variables, analysis, threshold=0.0)
        kept, total = channel_masks.kept, channel_masks.total
        threshold = Threshold(value=dropped_max, percent=1 - kept / total if total else 0.0,
                              safe_value=safe.safe_value, safe_percent=safe.safe_percent,
                              n_channels=safe.n_channels)
        report = LatencyReport(
            name=self.name, text=pass_text(self), before=Counts.of(graph),
            after=Counts.of(out_graph), mode=self.mode, min_keep=float(self.min_keep),
            round_to=self.round_to or max(table.multiple, 1),
            ignore=None if callable(self.ignore) else self.ignore,
            threshold=threshold, units=analysis.units, channels=channels,
            masks=channel_masks, table=table.key, target_ms=choice.target_ms,
            predicted_before_ms=before.total_ms, predicted_after_ms=after.total_ms,
            method=method,
            layers_ms=tuple((i, a, b) for i, (a, b) in
                            enumerate(zip(before.layers_ms, after.layers_ms))))
        return PassResult(out_graph, out_vars, report)

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Variables]:
        result = self.run(graph, variables)
        return result.graph, result.variables


def _kept(masks: dict[tuple[int, ...], np.ndarray],
          importance: dict[tuple[int, ...], np.ndarray]) -> float:
    return float(sum(importance[unit][keep].sum() for unit, keep in masks.items()))


def predict_masks(graph: Graph, table: LatencyTable,
                  masks: dict[tuple[int, ...], np.ndarray]) -> float:
    """The table's prediction for ``graph`` sliced by ``masks`` (per unit), from the
    channel segments, without slicing: what ``table.predict`` of the compact graph
    gives."""
    segments = channel_segments(graph)
    by_space = {i: keep for unit, keep in masks.items() for i in unit}

    def channels(tensor: int) -> int:
        return sum(int(by_space[s.space][s.start:s.stop].sum()) if s.space in by_space
                   else s.size for s in segments[tensor])

    image = ir.input_shape(graph).c
    c_in, c_out = [], []
    for i in range(len(graph.layers)):
        inputs = ir.layer_inputs(graph, i)
        c_in.append(image if not inputs or inputs[0] < 0 else channels(inputs[0]))
        c_out.append(channels(i))
    return table.predict_channels(c_in, c_out).total_ms


def best_global(graph: Graph, variables: Variables, table: LatencyTable,
                analysis: Prunability, budget: float, min_keep: float
                ) -> dict[tuple[int, ...], np.ndarray] | None:
    """The masks of the lowest global |γ| threshold (`SlimChannels`'s rule: unit score
    = max |γ| over members, the ``min_keep`` floor, group-balanced) whose predicted
    latency fits ``budget``; None when none does. The prediction falls as the
    threshold rises (the masks only lose channels), so a bisection over the distinct
    unit scores finds it."""
    from passes.masks import compute_masks, unit_scores

    values = np.unique(np.concatenate([s for s in unit_scores(graph, variables,
                                                              analysis).values()]))

    def at(k: int) -> dict[tuple[int, ...], np.ndarray]:
        masks = compute_masks(graph, variables, analysis, float(values[k]),
                              max(min_keep, 1e-12))
        by_conv = masks.as_dict()
        return {unit: by_conv[unit[0]] for unit in analysis.units}

    lo, hi = 0, len(values) - 1
    if predict_masks(graph, table, at(hi)) > budget:
        return None
    while lo < hi:  # the smallest k that fits
        mid = (lo + hi) // 2
        if predict_masks(graph, table, at(mid)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return at(lo)


def _unit_gamma(graph: Graph, variables: Variables, unit: tuple[int, ...]) -> np.ndarray:
    gammas = [np.abs(np.asarray(tree.get(variables, i, tree.GAMMA), np.float64))
              for i in unit]
    return np.asarray(np.max(gammas, axis=0))


def unit_importance(graph: Graph, variables: Variables, unit: tuple[int, ...]
                    ) -> np.ndarray:
    """Per channel of a unit, Σ over its members of |γ| (what keeping it keeps)."""
    gammas = [np.abs(np.asarray(tree.get(variables, i, tree.GAMMA), np.float64))
              for i in unit]
    for i, g in zip(unit, gammas):
        if not np.all(np.isfinite(g)):
            raise PruneError(f"layer {i} (cfg line {graph.layers[i].line}): BN γ is not "
                             "finite: expected finite weights")
    return np.asarray(np.sum(gammas, axis=0))


@dataclass(frozen=True)
class CountChoice:
    """What `choose_counts` decided: kept channels per unit, the budget, and the
    prediction (uncalibrated sums times the table's calibration) of that choice."""

    counts: tuple[int, ...]
    target_ms: float
    predicted_ms: float
    importance: dict[tuple[int, ...], np.ndarray]


class _Model:
    """Every layer's channels as a function of the units' kept counts, from the
    channel segments of the graph (a partial range of a space scales with its count)."""

    def __init__(self, graph: Graph, table: LatencyTable, units: tuple[tuple[int, ...], ...]):
        self.table = table
        self.segments = channel_segments(graph)
        self.unit_of = {i: u for u, unit in enumerate(units) for i in unit}
        self.full = [width(graph.layers[unit[0]]) for unit in units]
        image_c = ir.input_shape(graph).c
        self.first_input = []
        for i in range(len(graph.layers)):
            inputs = ir.layer_inputs(graph, i)
            self.first_input.append(inputs[0] if inputs and inputs[0] >= 0 else None)
        self.image_c = image_c
        self.affected: list[set[int]] = [set() for _ in units]
        for i in range(len(graph.layers)):
            j = self.first_input[i]
            for seg in self.segments[i] + (self.segments[j] if j is not None else ()):
                if seg.space in self.unit_of:
                    self.affected[self.unit_of[seg.space]].add(i)

    def channels(self, tensor: int | None, counts: list[int]) -> float:
        if tensor is None:
            return float(self.image_c)
        c = 0.0
        for seg in self.segments[tensor]:
            u = self.unit_of.get(seg.space)
            c += seg.size if u is None else counts[u] * seg.size / self.full[u]
        return c

    def layer_ms(self, i: int, counts: list[int]) -> float:
        return self.table.layer_ms(i, self.channels(self.first_input[i], counts),
                                   self.channels(i, counts))


def _next_count(count: int, floor: int, step: int) -> int | None:
    """The next lower count: the largest multiple of ``step`` below ``count``, at
    least ``floor`` (None when at the floor)."""
    if count <= floor:
        return None
    return max(floor, (count - 1) // step * step)


def choose_counts(graph: Graph, variables: Variables, table: LatencyTable,
                  units: tuple[tuple[int, ...], ...], *, target_speedup: float | None = None,
                  target_ms: float | None = None, min_keep: float = 0.01,
                  round_to: int = 8) -> CountChoice:
    """Kept channels per unit (greedy, see the module docstring).

    Raises:
        PruneError: the budget is below what every unit at its floor reaches (the
            message names that time and its speed-up).
    """
    model = _Model(graph, table, units)
    n_layers = len(graph.layers)
    counts = list(model.full)
    layer_ms = [model.layer_ms(i, counts) for i in range(n_layers)]
    before = table.calibrate(sum(layer_ms))
    if target_speedup is not None:
        budget = before / target_speedup
    else:
        assert target_ms is not None  # the pass checks exactly one is given
        budget = float(target_ms)
    # Floors are rounded up to the step too: a count off the engine's block costs a
    # layout change in the whole network that the table does not see.
    floors = [min(n, -(-max(1, math.ceil(min_keep * n)) // round_to) * round_to)
              for n in model.full]
    floor_ms = table.calibrate(sum(model.layer_ms(i, floors) for i in range(n_layers)))
    if floor_ms > budget * (1 + 1e-9):
        asked = (f"target_speedup={target_speedup:g} ({budget:.2f} ms)"
                 if target_speedup is not None else f"target_ms={target_ms:g}")
        raise PruneError(
            f"{asked}: cannot be met: with every prunable unit at its floor (min_keep="
            f"{min_keep:g}) the predicted latency is {floor_ms:.2f} ms, a speed-up of "
            f"{before / floor_ms:.2f}x over {before:.2f} ms; that is the best reachable",
            argument="target_speedup" if target_speedup is not None else "target_ms")
    importance = {unit: unit_importance(graph, variables, unit) for unit in units}
    # Σ|γ| of the top-k channels, k = 0..n, per unit.
    cumulative = [np.concatenate([[0.0], np.cumsum(np.sort(importance[unit])[::-1])])
                  for unit in units]
    neighbours = [{v for v in range(len(units)) if model.affected[u] & model.affected[v]}
                  for u in range(len(units))]
    candidates: dict[int, tuple[tuple[bool, float, float], int, dict[int, float]]] = {}

    def evaluate(u: int) -> None:
        lower = _next_count(counts[u], floors[u], round_to)
        if lower is None:
            candidates.pop(u, None)
            return
        old = counts[u]
        counts[u] = lower
        new = {i: model.layer_ms(i, counts) for i in model.affected[u]}
        counts[u] = old
        saving = sum(layer_ms[i] - ms for i, ms in new.items())
        loss = float(cumulative[u][old] - cumulative[u][lower])
        key = (saving <= 1e-12, loss / saving if saving > 1e-12 else loss, -saving)
        candidates[u] = (key, lower, new)

    for u in range(len(units)):
        evaluate(u)
    total = sum(layer_ms)
    while table.calibrate(total) > budget and candidates:
        u = min(candidates, key=lambda v: candidates[v][0])
        _, lower, new = candidates[u]
        counts[u] = lower
        for i, ms in new.items():
            total += ms - layer_ms[i]
            layer_ms[i] = ms
        for v in neighbours[u]:
            evaluate(v)
    return CountChoice(tuple(counts), budget, table.calibrate(total), importance)
