"""The prune-ratio sweep behind ``darkslim sweep``: prune at each ratio, measure, compare.

(Over 400 lines: the grid, the resumable state, the measurement and the Pareto front
share one spec and one point type, kept in one module.)

Instead of choosing ``--percent`` blind, prune the network at a grid of ratios (and,
optionally, residual-block counts), and for each point measure mAP@0.5 on the valid
split right after the prune (and after a short fine-tune), params, BFLOPs and batch-1
latency; the unpruned network is the point ``layers=0, percent=0``. All latencies are
measured at the end in one interleaved timing loop (`darkslim.latency.time_interleaved`),
so load on a shared machine falls on every network alike. The Pareto front of mAP
against latency is marked.

Every finished point is appended (atomically: the file is rewritten through a temp file
and a rename) to ``DIR/sweep.jsonl``, whose first line holds the sweep's arguments: a
rerun with the same arguments computes only the points that are missing; a folder
holding another sweep is refused (`SweepError`) unless restarted.

Library code: it reports through callbacks and writes files; it never prints.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import frontends
import ir
import passes
from passes.analysis import Mode

STATE = "sweep.jsonl"
ENGINES = ("darkslim", "onnxruntime", "openvino")
# How each engine is installed, for the error when it is missing.
_INSTALL = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install darkslim[openvino]"}


class SweepError(ValueError):
    """A sweep that cannot run as asked: a bad grid, a missing engine, an empty valid
    split, a folder holding another sweep. The message names the value at fault."""


# ------------------------------------------------------------------------ arguments

def parse_percents(text: str) -> tuple[float, ...]:
    """The prune ratios of ``--percents``: ``START:STOP:STEP`` (STOP included) or a
    comma-separated list; each in ``[0, 1)``, sorted, duplicates dropped.

    >>> parse_percents("0.1:0.5:0.2")
    (0.1, 0.3, 0.5)
    >>> parse_percents("0.6,0.2")
    (0.2, 0.6)
    """
    def number(part: str) -> float:
        try:
            value = float(part)
        except ValueError:
            raise SweepError(f"--percents {text}: {part.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise SweepError(f"--percents {text}: {part.strip()} is not a finite number")
        return value

    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise SweepError(f"--percents {text}: expected START:STOP:STEP such as "
                             "0.1:0.9:0.1, or a list such as 0.3,0.5,0.7")
        start, stop, step = (number(p) for p in parts)
        if step <= 0:
            raise SweepError(f"--percents {text}: step {step:g}: expected a step > 0")
        if stop < start:
            raise SweepError(f"--percents {text}: stop {stop:g} is below start {start:g}")
        count = math.floor((stop - start) / step + 1e-9) + 1
        values = [round(start + k * step, 6) for k in range(count)]
    else:
        values = [number(p) for p in text.split(",") if p.strip()]
        if not values:
            raise SweepError(f"--percents {text!r}: expected at least one ratio")
    for value in values:
        if not 0 <= value < 1:
            raise SweepError(f"--percents {text}: ratio {value:g} is out of range: "
                             "expected 0 <= percent < 1 (the fraction of prunable "
                             "channels to drop)")
    return tuple(sorted(set(values)))


def parse_layers(text: str) -> tuple[int, ...]:
    """The residual-block counts of ``--layers`` (``0,2,4``), each >= 0, sorted."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise SweepError(f"--layers {text}: {part!r} is not a whole number") from None
        if value < 0:
            raise SweepError(f"--layers {text}: {value} blocks: expected a count >= 0")
        values.append(value)
    if not values:
        raise SweepError(f"--layers {text!r}: expected at least one block count")
    return tuple(sorted(set(values)))


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (what identifies a sweep's inputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class SweepSpec:
    """What decides a sweep's rows: its inputs (by path and content) and its grid.

    The engine and the latency repeats are not part of it: they only shape the timing
    loop at the end, which a rerun measures again anyway.
    """

    cfg: str
    weights: str
    data: str
    percents: tuple[float, ...]
    layers: tuple[int, ...] = (0,)
    mode: Mode = "regular"
    round_to: int = 1
    min_keep: float = 0.01
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    batch: int = 16
    seed: int = 0
    digests: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0:
            raise SweepError(f"--finetune-epochs {self.finetune_epochs}: expected >= 0")
        if self.batch < 1:
            raise SweepError(f"--batch {self.batch}: expected >= 1")

    @classmethod
    def of(cls, cfg, weights, data, percents: Sequence[float], **options) -> SweepSpec:
        """A spec for these files, with their content digests."""
        digests = tuple((name, file_digest(path)) for name, path in
                        (("cfg", cfg), ("weights", weights), ("data", data)))
        return cls(cfg=str(Path(cfg).resolve()), weights=str(Path(weights).resolve()),
                   data=str(Path(data).resolve()),
                   percents=tuple(percents), digests=digests, **options)

    def to_json(self) -> dict:
        out = asdict(self)
        out["percents"], out["layers"] = list(self.percents), list(self.layers)
        out["digests"] = dict(self.digests)
        return out

    def points(self) -> tuple[SweepPoint, ...]:
        """The unpruned baseline first, then every (layers, percent) of the grid."""
        grid = [SweepPoint(0, 0.0)]
        for layers in self.layers:
            for percent in self.percents:
                point = SweepPoint(layers, percent)
                if point not in grid:
                    grid.append(point)
        return tuple(grid)


@dataclass(frozen=True, order=True)
class SweepPoint:
    """One prune of the grid: remove ``layers`` residual blocks, then drop ``percent``
    of the prunable channels. ``(0, 0.0)`` is the unpruned network."""

    layers: int
    percent: float

    @property
    def key(self) -> str:
        return f"layers={self.layers},percent={self.percent:g}"

    @property
    def baseline(self) -> bool:
        return self.layers == 0 and self.percent == 0


# ------------------------------------------------------------------------- one point

def point_pipeline(point: SweepPoint, spec: SweepSpec) -> passes.Pipeline | None:
    """The passes `darkslim prune --layers L --percent P` runs for this point (None for
    the baseline): the same pass options, so the same network."""
    steps: list = []
    if point.layers:
        steps.append(passes.RemoveBlocks(n=point.layers))
    if point.percent:
        steps.append(passes.SlimChannels(percent=point.percent, mode=spec.mode,
                                         min_keep=spec.min_keep, round_to=spec.round_to))
    return passes.pipeline(*steps) if steps else None


def prune_point(graph: ir.Graph, variables, point: SweepPoint, spec: SweepSpec
                ) -> tuple[ir.Graph, Any, tuple[passes.PassReport, ...]]:
    """The pruned network of a point (pure, cheap). Raises `passes.PruneError` when
    the prune is refused (a layer would be emptied with ``min_keep=0``, too few blocks)."""
    pipe = point_pipeline(point, spec)
    if pipe is None:
        return graph, variables, ()
    result = pipe.run(graph, variables)
    return result.graph, result.variables, result.reports


def _note(point: SweepPoint, reports: tuple[passes.PassReport, ...]) -> str | None:
    for report in reports:
        if isinstance(report, passes.SlimReport):
            t = report.threshold
            if report.min_keep > 0 and point.percent > t.safe_percent:
                return (f"above the safe percent {t.safe_percent:.3f}: the min-keep "
                        "floor kept layers from emptying")
    return None


def measure_point(graph: ir.Graph, variables, point: SweepPoint, spec: SweepSpec, *,
                  valid_set, train_set=None, on_step: Callable | None = None) -> dict:
    """One row of the sweep: prune, then mAP@0.5 on ``valid_set`` (as `darkslim eval`
    computes it: conf 0.01, NMS 0.5, IoU 0.5), after ``spec.finetune_epochs`` of
    fine-tuning too, params and BFLOPs. A refused prune is a row with its reason."""
    from runtime.metrics import evaluate

    row: dict[str, Any] = {"key": point.key, "layers": point.layers,
                           "percent": point.percent, "status": "ok", "reason": None,
                           "note": None}
    try:
        g, v, reports = prune_point(graph, variables, point, spec)
    except passes.PruneError as exc:
        root = exc  # the pass's own words, without the pipeline's wrapping
        while isinstance(root.__cause__, passes.PruneError):
            root = root.__cause__
        row.update(status="refused", reason=f"percent {point.percent:g}"
                   + (f", layers {point.layers}" if point.layers else "") + f": {root}")
        return row
    row["note"] = _note(point, reports)
    row["params"] = ir.count_params(g)
    row["bflops"] = ir.count_flops(g) / 1e9
    row["prunable_channels"] = next(
        (list(r.prunable_channels) for r in reports if isinstance(r, passes.SlimReport)),
        None)
    row["map50"] = float(evaluate(g, v, valid_set, batch_size=spec.batch, coco=False).map50)
    row["map50_finetuned"] = None
    if spec.finetune_epochs and not point.baseline:
        from runtime.train import TrainConfig, fit

        config = TrainConfig(epochs=spec.finetune_epochs, batch_size=spec.batch,
                             lr=spec.finetune_lr, sparsity=0.0, warmup_epochs=0.0,
                             mode=spec.mode, seed=spec.seed)
        tuned = fit(g, v, train_set, config, on_step=on_step).variables
        row["map50_finetuned"] = float(
            evaluate(g, tuned, valid_set, batch_size=spec.batch, coco=False).map50)
    return row


# ------------------------------------------------------------------------ the state

def _read_lines(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SweepError(f"{path}:{number}: not a JSON line ({exc.msg}): the state "
                             "file is damaged; rerun with --restart") from None
    return rows


def _write_lines(path: Path, rows: list[dict]) -> None:
    frontends.write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def open_state(out: str | os.PathLike, spec: SweepSpec, restart: bool = False
               ) -> dict[str, dict]:
    """The rows already finished in ``out/sweep.jsonl``, by point key; a new state file
    (arguments line only) when there is none or with ``restart``.

    Raises:
        SweepError: the folder holds a sweep of other arguments (names each difference).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STATE
    header = {"sweep": spec.to_json()}
    if restart or not path.exists():
        _write_lines(path, [header])
        return {}
    lines = _read_lines(path)
    if not lines or "sweep" not in lines[0]:
        raise SweepError(f"{path}: the first line is not a sweep's arguments: not a "
                         "darkslim sweep state file; rerun with --restart or another --out")
    old = lines[0]["sweep"]
    if old != header["sweep"]:
        changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in header["sweep"].items()
                   if old.get(k) != v]
        raise SweepError(f"{path}: holds a sweep of different arguments ("
                         + "; ".join(changed) + "): rerun with --restart to discard its "
                         "points, or give another --out")
    return {row["key"]: row for row in lines[1:]}


def append_row(out: str | os.PathLike, row: dict) -> None:
    """Add a finished point to ``out/sweep.jsonl`` (rewritten atomically, so a killed
    sweep leaves either the old file or the new one)."""
    path = Path(out) / STATE
    _write_lines(path, _read_lines(path) + [row])


# -------------------------------------------------------------------------- latency

def check_engine(engine: str) -> None:
    """Raise `SweepError` when ``engine`` is unknown or not installed."""
    if engine not in ENGINES:
        raise SweepError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(engine)
    if module and importlib.util.find_spec(module) is None:
        raise SweepError(f"--engine {engine}: {module} is not installed: "
                         f"{_INSTALL[engine]}")


def measure_latencies(programs: Sequence[tuple[ir.Graph, Any]], engine: str, *,
                      repeats: int, warmup: int = 2, threads: int | None = 1
                      ) -> tuple[tuple[float, ...], ...]:
    """Batch-1 latencies (ms, each timed run) of each network on ``engine``, all run
    interleaved in one timing loop.

    ``threads``: onnxruntime/OpenVINO intra-op threads (None: the engine's default).
    One by default: with many sessions alive, each one's thread pool spins after its
    run and steals the CPU from the next; on a shared 2-core machine that scattered
    the medians of one sweep between 0.8 and 42 ms with no relation to the network.
    """
    check_engine(engine)
    if engine == "darkslim":
        from darkslim.latency import measure_latency

        return tuple(t.times_ms for t in measure_latency(programs, repeats=repeats,
                                                         warmup=warmup))
    if engine == "onnxruntime":
        from darkslim.latency import measure_onnx_latency
        from darkslim.onnx_deploy import export_checked

        models = [export_checked(g, v) for g, v in programs]
        shapes = [(c, h, w) for c, h, w in (ir.input_shape(g) for g, _ in programs)]
        return tuple(t.times_ms for t in measure_onnx_latency(
            models, shapes, repeats=repeats, warmup=warmup, threads=threads))
    return _openvino_latencies(programs, repeats=repeats, warmup=warmup, threads=threads)


def _openvino_latencies(programs, *, repeats: int, warmup: int, threads: int | None
                        ) -> tuple[tuple[float, ...], ...]:
    import openvino as ov

    from darkslim.latency import time_interleaved
    from darkslim.onnx_deploy import export_checked

    core = ov.Core()
    rng = np.random.default_rng(0)
    runs = []
    for graph, variables in programs:
        data = export_checked(graph, variables).SerializeToString()
        config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(data), "CPU", config)
        x = rng.random((1, *ir.input_shape(graph)), dtype=np.float32)
        runs.append(lambda compiled=compiled, x=x: compiled({"images": x}))
    return time_interleaved(runs, repeats, warmup)


def pareto_front(rows: Sequence[dict], score: str = "map", cost: str = "latency_ms"
                 ) -> set[str]:
    """Keys of the rows no other row beats: none has a score at least as high and a
    cost at least as low with one of them strictly better."""
    points = [(r["key"], r[score], r[cost]) for r in rows
              if r.get(score) is not None and r.get(cost) is not None]
    return {k for k, s, c in points
            if not any(s2 >= s and c2 <= c and (s2 > s or c2 < c) for _, s2, c2 in points)}


# ------------------------------------------------------------------------ the sweep

@dataclass(frozen=True)
class SweepResult:
    """What `run_sweep` did. ``rows`` in grid order (with ``latency_ms``, ``map`` and
    ``pareto`` when ``complete``); ``computed``: the keys measured by this call."""

    spec: SweepSpec
    rows: tuple[dict, ...]
    computed: tuple[str, ...]
    complete: bool
    engine: str
    latency: dict | None = None
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = field(default=())


def run_sweep(spec: SweepSpec, out: str | os.PathLike, *, engine: str = "darkslim",
              latency_repeats: int = 20, threads: int | None = 1, restart: bool = False,
              max_points: int | None = None,
              on_start: Callable[[int, int], None] = lambda total, done: None,
              on_point: Callable[[SweepPoint], None] = lambda p: None,
              on_row: Callable[[dict], None] = lambda r: None,
              on_stage: Callable[[str], None] = lambda s: None,
              on_step: Callable | None = None) -> SweepResult:
    """Run (or continue) the sweep in ``out`` and, once every point is done, time all
    networks interleaved and write ``out/sweep.json``.

    Args:
        engine: where latency is measured (`ENGINES`); mAP is always darkslim's runtime,
            as `darkslim eval` measures it.
        latency_repeats: timed runs per network in the final loop.
        threads: the engine's intra-op threads (`measure_latencies`).
        max_points: measure at most this many new points, then stop (``complete`` is
            False; a rerun continues).
        on_start(total, done), on_point(point), on_row(row), on_stage(text), on_step:
            progress callbacks (``on_step`` is the fine-tune's `runtime.train.StepInfo`).
    """
    from runtime.data import load_dataset, read_data_config
    from runtime.train import check_classes

    check_engine(engine)
    if latency_repeats < 1:
        raise SweepError(f"--latency-repeats {latency_repeats}: expected >= 1")
    if max_points is not None and max_points < 0:
        raise SweepError(f"max_points={max_points}: expected >= 0")
    graph = ir.parse_cfg(Path(spec.cfg))
    ir.verify(graph)
    config = read_data_config(spec.data)
    check_classes(graph, config.classes, spec.data)
    valid_set = load_dataset(config, "valid")
    if not len(valid_set):
        raise SweepError(f"{spec.data}: the valid split ({config.valid}) has 0 images: "
                         "expected at least one image to measure mAP on")
    train_set = load_dataset(config, "train") if spec.finetune_epochs else None
    if train_set is not None and len(train_set) < spec.batch:
        raise SweepError(f"{spec.data}: the train split has {len(train_set)} images for "
                         f"--finetune-epochs with a batch of {spec.batch}: expected at "
                         "least one full batch")
    loaded = frontends.load_variables(graph, spec.weights, allow_partial=False)
    done = open_state(out, spec, restart)

    points = spec.points()
    on_start(len(points), sum(p.key in done for p in points))
    computed: list[str] = []
    for point in points:
        if point.key in done:
            continue
        if max_points is not None and len(computed) >= max_points:
            return SweepResult(spec, tuple(done[p.key] for p in points if p.key in done),
                               tuple(computed), False, engine, warnings=loaded.warnings)
        on_point(point)
        row = measure_point(graph, loaded.variables, point, spec, valid_set=valid_set,
                            train_set=train_set, on_step=on_step)
        append_row(out, row)
        done[point.key] = row
        computed.append(point.key)
        on_row(row)

    rows = [dict(done[p.key]) for p in points]
    ok = [(p, r) for p, r in zip(points, rows) if r["status"] == "ok"]
    on_stage(f"timing {len(ok)} networks interleaved on {engine}")
    programs = [prune_point(graph, loaded.variables, p, spec)[:2] for p, _ in ok]
    times = measure_latencies(programs, engine, repeats=latency_repeats, threads=threads)
    latencies = [statistics.median(t) for t in times]
    base = latencies[0] if ok and ok[0][0].baseline else None
    for (_, row), ms, runs in zip(ok, latencies, times):
        row["latency_ms"] = ms
        # The fastest run: on a loaded machine the median is the load's as much as the
        # network's (a sweep on a 2-core box at load 9 had ordered minima, not medians).
        row["latency_min_ms"] = min(runs)
        row["speedup"] = base / ms if base else None
        row["map"] = (row["map50_finetuned"] if row.get("map50_finetuned") is not None
                      else row["map50"])
    front = pareto_front([r for _, r in ok])
    for row in rows:
        row["pareto"] = row["key"] in front
    latency = {"engine": engine, "batch": 1, "repeats": latency_repeats,
               "threads": None if engine == "darkslim" else threads,
               "statistic": "median", "interleaved": True}
    result = SweepResult(spec, tuple(rows), tuple(computed), True, engine, latency,
                         loaded.warnings, files=("sweep.jsonl", "sweep.json"))
    write_sweep_json(Path(out) / "sweep.json", result)
    return result


def write_sweep_json(path: str | os.PathLike, result: SweepResult) -> None:
    from darkslim.report import write_json

    write_json(path, {"sweep": result.spec.to_json(), "latency": result.latency,
                      "points": list(result.rows)})


# ---------------------------------------------------------------------------- plot

def plot_sweep(rows: Sequence[dict], path: str | os.PathLike,
               title: str = "prune-ratio sweep") -> None:
    """Two panels: mAP@0.5 against latency and against BFLOPs; each point labelled
    with its ratio, the Pareto front (mAP vs latency) drawn as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from darkslim.report import _atomic_figure

    ok = [r for r in rows if r["status"] == "ok" and r.get("latency_ms") is not None]
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    tuned = any(r.get("map50_finetuned") is not None for r in ok)
    for ax, x, label in ((axes[0], "latency_ms", "latency (ms, batch 1, median)"),
                         (axes[1], "bflops", "BFLOPs")):
        xs = [r[x] for r in ok]
        ax.scatter(xs, [r["map50"] for r in ok], color="#1f5fa8", zorder=3,
                   label="after pruning")
        if tuned:
            ax.scatter(xs, [r["map"] for r in ok], color="#e07b00", marker="s",
                       zorder=3, label="after fine-tuning")
        for r in ok:
            name = "base" if r["layers"] == 0 and r["percent"] == 0 else (
                f"{r['percent']:g}" + (f"/L{r['layers']}" if r["layers"] else ""))
            ax.annotate(name, (r[x], r["map"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        if x == "latency_ms":
            front = sorted((r[x], r["map"]) for r in ok if r.get("pareto"))
            if front:
                ax.plot(*zip(*front), color="crimson", lw=1, ls="--", zorder=2,
                        label="Pareto front")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mAP@0.5")
    fig.suptitle(title)
    _atomic_figure(fig, path)
