"""What a training run leaves in its folder, written by the app (process 0 only).

`RunWriter` is the ``on_epoch`` callback of `runtime.train.fit` that writes, after every
epoch: ``last.weights`` (and ``best.weights`` when the epoch scored best),
``history.json``, ``metrics.jsonl`` (one JSON object per epoch: loss terms, s, the
sparsity diagnostics of `passes.diagnostics`, mAP) and ``sparsity.png`` (those curves
over the epochs and the per-epoch |γ| histogram as a heat map). Every file is rewritten
whole from the run's history, atomically, so a resumed run leaves the same files as an
uninterrupted one. The runtime writes only its Orbax checkpoints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import ir
from darkslim.report import _atomic_figure, write_text

_CURVES = (("gamma_below_1e-2", "|γ| < 1e-2"), ("gamma_below_1e-3", "|γ| < 1e-3"),
           ("safe_prune_ratio", "safe prune ratio"))


def metrics_lines(history) -> str:
    """``metrics.jsonl``: one JSON object per epoch."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)


def plot_sparsity(history, path: str | os.PathLike, title: str = "sparse training") -> None:
    """``sparsity.png``: shares below 1e-2/1e-3 and the safe prune ratio, s, loss, the
    params and BFLOPs a prune at the safe ratio leaves (share of the unpruned net), and
    the |γ| histogram of every epoch as a heat map (epochs across, log |γ| up)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    from passes.diagnostics import HIST_EDGES

    rows = [r for r in history if "gamma_hist" in r]
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    (shares, strength), (cost, heat) = fig.subplots(2, 2)
    for key, label in _CURVES:
        shares.plot(epochs, [r[key] for r in rows], marker=".", label=label)
    shares.set_ylim(0, 1)
    shares.set_xlabel("epoch")
    shares.set_title("prunable |γ|")
    shares.legend(fontsize=8)
    strength.plot(epochs, [r.get("s", 0.0) for r in rows], marker=".", color="crimson",
                  label="s")
    strength.set_xlabel("epoch")
    strength.set_ylabel("s (L1 on γ)", color="crimson")
    if any(r.get("s", 0.0) > 0 for r in rows):
        strength.set_yscale("log")
    loss = strength.twinx()
    loss.plot(epochs, [r.get("loss", np.nan) for r in rows], color="gray", label="loss")
    loss.set_ylabel("train loss", color="gray")
    strength.set_title("penalty strength and loss")
    cost.plot(epochs, [r["params_at_safe"] / r["params"] for r in rows], marker=".",
              label="params")
    cost.plot(epochs, [r["bflops_at_safe"] / r["bflops"] for r in rows], marker=".",
              label="BFLOPs")
    cost.set_ylim(0, 1.05)
    cost.set_xlabel("epoch")
    cost.set_title("left by a prune at the safe ratio (share of unpruned)")
    cost.legend(fontsize=8)
    if rows:
        counts = np.asarray([r["gamma_hist"] for r in rows], np.float64).T
        shares_map = counts / np.maximum(counts.sum(0, keepdims=True), 1)
        edges = np.asarray(HIST_EDGES)
        x = np.arange(len(rows) + 1) + 0.5
        # A power norm: the few channels left behind by the collapse stay visible.
        mesh = heat.pcolormesh(x, edges, shares_map, cmap="magma", shading="flat",
                               norm=PowerNorm(0.4, vmin=0.0, vmax=1.0))
        heat.set_yscale("log")
        fig.colorbar(mesh, ax=heat, label="share of channels")
    heat.set_xlabel("epoch")
    heat.set_ylabel("|γ|")
    heat.set_title("|γ| histogram per epoch (the lowest row: below 1e-4)")
    fig.suptitle(title)
    _atomic_figure(fig, path)


class RunWriter:
    """``on_epoch`` for `runtime.train.fit`: writes the run's files in process 0.

    Args:
        graph: the network trained (for the ``.weights`` exports).
        out: the run folder.
        save: ``save(graph, variables, path)``, default `frontends.save_variables`.
        plots: draw ``sparsity.png`` (skipped when the graph has nothing prunable).
    """

    def __init__(self, graph: ir.Graph, out: str | os.PathLike, *, save=None,
                 plots: bool = True, title: str = "sparse training") -> None:
        import jax

        from frontends import save_variables

        self.graph, self.out = graph, Path(out)
        self.save = save if save is not None else save_variables
        self.plots, self.title = plots, title
        self.primary = jax.process_index() == 0
        if self.primary:
            self.out.mkdir(parents=True, exist_ok=True)

    def __call__(self, info) -> None:
        if not self.primary:
            return
        self.save(self.graph, info.variables, self.out / "last.weights")
        if info.best:
            self.save(self.graph, info.variables, self.out / "best.weights")
        history = list(info.history)
        write_text(self.out / "history.json", json.dumps(history, indent=1))
        write_text(self.out / "metrics.jsonl", metrics_lines(history))
        if self.plots and any("gamma_hist" in r for r in history):
            plot_sparsity(history, self.out / "sparsity.png", self.title)
