"""Prune checks and plots: the forward-pass differences, latency facts, the charts.

What a prune decided is `passes.reports` (typed, serialised as ``report.json``); this
module measures what those decisions cost and draws them. Library code: it returns
data and writes files; it never prints.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

import passes
from frontends import atomic_path
from ir import Variables
from passes import tree


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class ChartProcess:
    """Draws a chart in a process of its own (``python -m darkslim.chart_worker``),
    started before the command's real work so that importing matplotlib (~0.3 s, a
    third of `darkslim prune`'s own time on yolov3) runs on another core meanwhile. A
    thread does not do it: the import and the passes both hold the GIL. On a
    single-CPU machine it draws in this process instead.

    Use as a context manager around the work: `draw` hands the chart over and returns
    at once; leaving the block waits until the file is written, or raises `ChartError`
    with the worker's traceback. One chart per process::

        with ChartProcess() as charts:
            ...  # the work
            charts.draw(plot_channels_kept, report, out / "channels.png")
            ...  # more work while it draws
    """

    def __init__(self) -> None:
        self._process = None
        if len(os.sched_getaffinity(0)) > 1:
            root = str(Path(__file__).resolve().parents[1])  # darkslim importable there
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            self._errors = tempfile.TemporaryFile()  # a file: a full pipe cannot block it
            self._process = subprocess.Popen(
                [sys.executable, "-m", "darkslim.chart_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=self._errors,
                env={**os.environ, "PYTHONPATH": path})
        self._request = b""
        self._what = ""

    def draw(self, plot: Callable[..., None], *args) -> None:
        if self._process is None:
            plot(*args)
            return
        if self._request:
            raise ChartError("ChartProcess draws one chart; start another for the next")
        self._request, self._what = pickle.dumps((plot, args)), plot.__name__
        stdin = self._process.stdin
        assert stdin is not None  # started with stdin=PIPE
        try:
            stdin.write(self._request)
            stdin.close()
        except BrokenPipeError:  # the worker died first: leaving the block says why
            pass

    def __enter__(self) -> "ChartProcess":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._process is None:
            return
        if exc_type is not None or not self._request:  # failed, or nothing to draw
            self._process.kill()
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()
        self._process.wait()
        self._errors.seek(0)
        err = self._errors.read().decode(errors="replace")
        self._errors.close()
        if exc_type is None and self._request and self._process.returncode != 0:
            raise ChartError(f"drawing with {self._what} failed in "
                             f"darkslim.chart_worker:\n{err}")


class ChartError(RuntimeError):
    """A chart could not be drawn (the drawing process's traceback is the message)."""


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


def plot_channels_kept(report: passes.SlimReport, path: str | os.PathLike,
                       title: str = "channels kept per conv") -> None:
    """Bar chart: per conv of the pass's input, total channels (light) and kept (dark)."""
    idx = [i for i, _, _ in report.channels]
    kept = [k for _, k, _ in report.channels]
    total = [t for _, _, t in report.channels]
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


def prunable_gammas(variables: Variables, analysis: passes.Prunability) -> np.ndarray:
    """|γ| of every prunable channel, concatenated."""
    if not analysis.prunable:
        return np.zeros(0, np.float32)
    return np.concatenate([np.abs(np.asarray(tree.get(variables, i, tree.GAMMA)))
                           for i in analysis.prunable])


def latency_json(latency) -> dict[str, Any] | None:
    """The `darkslim.latency.Latency` pair (original, final) as JSON-able facts."""
    if latency is None:
        return None
    before, after = latency
    return {"device": before.device, "batch": before.batch,
            "repeats": len(before.times_ms), "statistic": "median",
            "ms_before": before.median_ms, "ms_after": after.median_ms,
            "times_ms_before": list(before.times_ms),
            "times_ms_after": list(after.times_ms),
            "compile_s_before": before.compile_s, "compile_s_after": after.compile_s}
