"""Prune reports: the numbers, the terminal table, the plots.

Library code: it returns data and writes files; it never prints.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

import ir
import passes
from frontends import atomic_path


def _conv_channels(graph: ir.Graph, indices) -> int:
    return sum(graph.layers[i].filters for i in indices)


def prune_report(graph: ir.Graph, result: passes.PruneResult,
                 diffs: dict[str, float | None] | None = None) -> dict[str, Any]:
    """The facts of one prune as a JSON-able dict (the keys of ``report.json``)."""
    compact = result.compact[0]
    convs = graph.conv_indices()
    prunable = result.analysis.prunable
    config = result.config
    return {
        "mode": config.mode,
        "percent": result.threshold.percent,
        "threshold": result.threshold.value,
        "safe_threshold": result.threshold.safe_value,
        "safe_percent": result.threshold.safe_percent,
        "min_keep": config.min_keep,
        "round_to": config.round_to,
        "ignore": list(config.ignore) if not callable(config.ignore) else "predicate",
        "prunable_layers": list(prunable),
        "prunable_channels_before": _conv_channels(graph, prunable),
        "prunable_channels_after": _conv_channels(compact, prunable),
        "channels_before": _conv_channels(graph, convs),
        "channels_after": _conv_channels(compact, convs),
        "params_before": ir.count_params(graph),
        "params_after": ir.count_params(compact),
        "bflops_before": ir.count_flops(graph) / 1e9,
        "bflops_after": ir.count_flops(compact) / 1e9,
        "layers": {str(i): [compact.layers[i].filters, graph.layers[i].filters]
                   for i in convs},
        **(diffs or {"max_abs_diff_keepsize_vs_compact": None,
                     "max_abs_diff_gamma_zeroed_vs_compact": None}),
    }


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _figure(size: tuple[float, float]):
    """A figure on the Agg canvas, without pyplot (no global figure state, faster)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _atomic_figure(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def plot_channels_kept(report: dict[str, Any], path: str | os.PathLike,
                       title: str = "channels kept per conv") -> None:
    """Bar chart: per conv, total channels (light) and kept channels (dark)."""
    layers = sorted(report["layers"].items(), key=lambda kv: int(kv[0]))
    idx = [int(k) for k, _ in layers]
    kept = [v[0] for _, v in layers]
    total = [v[1] for _, v in layers]
    fig, ax = _figure((max(6, len(idx) * 0.12), 3.2))
    positions = np.arange(len(idx))
    ax.bar(positions, total, color="#c7d7ee", label="before")
    ax.bar(positions, kept, color="#1f5fa8", label="kept")
    step = max(1, len(idx) // 25)
    ax.set_xticks(positions[::step], [str(i) for i in idx][::step], fontsize=7)
    ax.set_xlabel("conv layer index")
    ax.set_ylabel("channels")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _atomic_figure(fig, path)


def plot_gamma_histogram(gammas: dict[str, np.ndarray], path: str | os.PathLike,
                         threshold: float | None = None,
                         title: str = "|γ| of prunable channels") -> None:
    """Histogram(s) of |γ| on log-spaced bins, one series per label, so the collapse
    toward 0 under sparse training shows; the share below 0.01 is in the legend."""
    values = {k: np.abs(np.asarray(v, np.float64)) for k, v in gammas.items()}
    every = np.concatenate([v for v in values.values() if v.size] or [np.ones(1)])
    low = max(1e-6, float(every.min()))
    high = max(low * 10, float(every.max()))
    bins = np.geomspace(low, high, 60)
    fig, ax = _figure((6, 3.2))
    for label, v in values.items():
        small = float((v < 0.01).mean()) if v.size else 0.0
        ax.hist(np.clip(v, low, high), bins=bins, alpha=0.6,
                label=f"{label}: {v.size} γ, {small:.0%} below 0.01")
    if threshold is not None:
        ax.axvline(max(threshold, low), color="crimson", lw=1, ls="--",
                   label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("|γ|")
    ax.set_ylabel("channels")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _atomic_figure(fig, path)


def prunable_gammas(variables, analysis: passes.Prunability) -> np.ndarray:
    """|γ| of every prunable channel, concatenated."""
    if not analysis.prunable:
        return np.zeros(0, np.float32)
    return np.concatenate([np.abs(np.asarray(
        variables["params"][f"layer_{i}"]["bn"]["scale"])) for i in analysis.prunable])


def layer_prune_report(original: ir.Graph, after_blocks: ir.Graph, final: ir.Graph,
                       analysis: passes.BlockAnalysis,
                       removed: tuple[passes.ScoredBlock, ...], *,
                       n: int | None = None, threshold: float | None = None,
                       latency=None) -> dict[str, Any]:
    """The facts of a layer prune (``darkslim prune --layers``) as a JSON-able dict.

    ``params_*``, ``bflops_*`` and ``latency_ms_*`` compare the original network with
    the final one (blocks removed, then channels pruned when asked); ``blocks`` holds
    the removal step alone, with indices of the original network.

    Args:
        latency: None, or the `darkslim.latency.Latency` of (original, final).
    """
    mapping = passes.layer_map(original, (sb.block for sb in removed))
    before, after = latency if latency is not None else (None, None)
    return {
        "params_before": ir.count_params(original),
        "params_after": ir.count_params(final),
        "bflops_before": ir.count_flops(original) / 1e9,
        "bflops_after": ir.count_flops(final) / 1e9,
        "latency_ms_before": before.median_ms if before else None,
        "latency_ms_after": after.median_ms if after else None,
        "latency": None if before is None else {
            "device": before.device, "batch": before.batch,
            "repeats": len(before.times_ms), "statistic": "median",
            "times_ms_before": list(before.times_ms),
            "times_ms_after": list(after.times_ms),
            "compile_s_before": before.compile_s, "compile_s_after": after.compile_s,
        },
        "blocks": {
            "found": len(analysis.blocks),
            "n": n,
            "threshold": threshold,
            "score": "mean |γ| of the block's last BN conv (the one feeding the shortcut)",
            "removed": [{"shortcut": sb.block.shortcut, "source": sb.block.source,
                         "layers": list(sb.block.layers), "gamma_conv": sb.block.gamma_conv,
                         "score": sb.score} for sb in removed],
            "not_removable": {str(s): why for s, why in analysis.reasons},
            "layers_before": len(original.layers),
            "layers_after": len(after_blocks.layers),
            "params_after": ir.count_params(after_blocks),
            "bflops_after": ir.count_flops(after_blocks) / 1e9,
            "index_map": {str(old): new for old, new in mapping.items()},
        },
    }
