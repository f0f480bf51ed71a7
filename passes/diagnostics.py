"""Where sparse training stands: the per-epoch sparsity diagnostics of `fit`.

Everything here is read off the variables with the prune pass's own functions
(`passes.analyze_prunability`, `passes.compute_threshold`, `passes.prune`), so the
numbers are those `darkslim info` and `darkslim prune` give on the weights saved at the
same epoch: the |γ| quantiles of the prunable channels, the shares below 1e-2 and 1e-3,
the highest safe prune ratio (the largest share that can go with no layer emptied),
and the params and BFLOPs a prune at that ratio leaves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import ir
import passes
from ir import Variables
from passes.analysis import Mode

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
# |γ| histogram bins for the per-epoch heat map: log-spaced, the first one open below.
HIST_EDGES = tuple(float(e) for e in np.logspace(-4, 1, 41))


def prunable_abs_gammas(variables: Variables, analysis: passes.Prunability) -> np.ndarray:
    """|γ| of every prunable channel (host numpy), in layer order."""
    if not analysis.prunable:
        return np.zeros(0, np.float32)
    return np.concatenate([np.abs(np.asarray(variables["params"][f"layer_{i}"]["bn"]["scale"]))
                           for i in analysis.prunable])


def gamma_histogram(gammas: np.ndarray) -> list[int]:
    """Counts of ``gammas`` in `HIST_EDGES` bins (below the first edge counts in the
    first bin, above the last in the last)."""
    clipped = np.clip(np.asarray(gammas, np.float64), HIST_EDGES[0], HIST_EDGES[-1])
    counts, _ = np.histogram(clipped, bins=np.asarray(HIST_EDGES))
    return [int(c) for c in counts]


def sparsity_metrics(graph: ir.Graph, variables: Variables, mode: Mode = "regular"
                     ) -> dict[str, Any]:
    """The sparsity diagnostics of ``variables`` (host arrays) as a flat JSON-able dict:
    ``gamma_q10`` .. ``gamma_q90``, ``gamma_below_1e-2``, ``gamma_below_1e-3``,
    ``safe_prune_ratio``, ``params_at_safe``, ``bflops_at_safe`` (and ``params``,
    ``bflops`` of the unpruned net), ``gamma_hist`` (`gamma_histogram`). Empty when
    the graph has nothing prunable in ``mode``."""
    analysis = passes.analyze_prunability(graph, mode)
    gammas = prunable_abs_gammas(variables, analysis)
    if not len(gammas):
        return {}
    out: dict[str, Any] = {f"gamma_q{round(q * 100)}": float(np.quantile(gammas, q))
                           for q in QUANTILES}
    out["gamma_below_1e-2"] = float((gammas < 1e-2).mean())
    out["gamma_below_1e-3"] = float((gammas < 1e-3).mean())
    threshold = passes.compute_threshold(graph, variables, analysis, percent=0.0)
    safe = threshold.safe_percent
    out["safe_prune_ratio"] = float(safe)
    compact_graph = graph
    if safe > 0:
        result = passes.prune(graph, variables, passes.PruneConfig(percent=safe, mode=mode))
        compact_graph = result.compact[0]
    out["params"] = ir.count_params(graph)
    out["bflops"] = ir.count_flops(graph) / 1e9
    out["params_at_safe"] = ir.count_params(compact_graph)
    out["bflops_at_safe"] = ir.count_flops(compact_graph) / 1e9
    out["gamma_hist"] = gamma_histogram(gammas)
    return out
