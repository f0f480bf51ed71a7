"""Measuring a `passes.LatencyTable` on a deployment engine, and caching it.

Library code: returns data and writes files, never prints (the CLI shows the progress
callback as a bar).

onnxruntime (the only engine implemented): every distinct conv signature of the graph
is exported alone (`export.export_onnx` of a one-conv graph with random weights, BN
folded: the same Conv + activation nodes the whole network exports to) at a grid of
(c_in, c_out) counts -- the fractions ``GRID`` of the full counts rounded to
multiples of ``multiple`` -- and the grid's models are timed interleaved
(`darkslim.latency.time_interleaved`, batch 1; the fastest of the repeats, the least
disturbed on a shared machine). The other layers' times come from onnxruntime's own
profile of the whole network at full size (its node names carry the layer index), and
the whole network is timed, interleaved with a copy of itself with every unit at half
its channels, for the table's calibration (`passes.LatencyTable.calibrate`).

`load_or_measure` keeps the table in a JSON file keyed by engine, engine version, CPU,
input size and graph digest; a file with another key is re-measured (and the caller is
told why).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import frontends
import ir
import passes
from darkslim.latency import time_interleaved
from passes import ConvGrid, ConvSignature, LatencyTable, TableKey

GRID = (0.125, 0.25, 0.5, 0.75, 1.0)
"""Channel fractions measured on each axis, beside the engine's block itself (up to
6 × 6 points per conv signature)."""

Progress = Callable[[int, int, str], None]
"""``progress(done, total, what)``: models timed so far out of ``total``."""


class EngineError(ValueError):
    """An engine darkslim cannot measure a latency table on (unknown, not installed,
    or not implemented); the message names it and the choices."""


ENGINE_NAMES = ("onnxruntime", "openvino", "darkslim")


def engine_version(engine: str) -> str:
    """The version of an installed engine; an `EngineError` otherwise."""
    if engine not in ENGINE_NAMES:
        raise EngineError(f"--engine {engine}: unknown engine; expected one of "
                          f"{', '.join(ENGINE_NAMES)}")
    if engine == "darkslim":
        raise EngineError("--engine darkslim: a latency table on darkslim's JAX runtime "
                          "is not implemented yet; use --engine onnxruntime")
    if engine == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise EngineError("--engine openvino: OpenVINO is not installed (pip install "
                              "darkslim[openvino]); use --engine onnxruntime") from None
        raise EngineError("--engine openvino: a latency table on OpenVINO is not "
                          "implemented yet; use --engine onnxruntime")
    try:
        import onnxruntime
    except ImportError:
        raise EngineError("--engine onnxruntime: onnxruntime is not installed "
                          "(pip install onnxruntime)") from None
    return str(onnxruntime.__version__)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``, else `platform`) and the thread count."""
    model = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        model = found.group(1).strip() if found else ""
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} ({os.cpu_count()} threads)"


def engine_multiple(engine: str = "onnxruntime") -> int:
    """The channel block the engine computes in on this CPU: onnxruntime's NCHWc
    block is 16 with AVX-512, else 8 (measured here: a conv's time is a staircase in
    steps of 16 channels, on both its inputs and its outputs)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if re.search(r"\bavx512f\b", flags) else 8


def table_key(graph: ir.Graph, engine: str, threads: int = 1) -> TableKey:
    """The key a table of ``graph`` on ``engine`` on this machine has."""
    return TableKey(engine=engine, engine_version=engine_version(engine), cpu=cpu_name(),
                    size=(graph.height, graph.width),
                    cfg=passes.GraphFingerprint.of(graph).digest, threads=threads)


def grid_counts(full: int, multiple: int = 16) -> tuple[int, ...]:
    """The measured channel counts of one axis: ``multiple`` itself (the fewest
    channels the engine computes: below it the lookup clamps, which is exact when the
    engine pads to its block) and `GRID` × ``full`` rounded to multiples of
    ``multiple``, at most ``full``."""
    counts = {min(full, max(multiple, round(f * full / multiple) * multiple))
              for f in GRID}
    counts |= {full, min(full, multiple)}
    return tuple(sorted(counts))


def _one_conv(signature: ConvSignature, c_in: int, c_out: int, seed: int):
    """A one-conv network at ``signature``'s input size, as ONNX (BN folded)."""
    from export import ExportOptions, export_onnx

    net = (("batch", "1"), ("width", str(signature.width)),
           ("height", str(signature.height)), ("channels", str(c_in)))
    groups = signature.groups
    conv = ir.Conv(filters=c_out, size=signature.size, stride=signature.stride,
                   pad=False, padding=signature.padding, groups=groups,
                   dilation=signature.dilation, batch_normalize=True,
                   activation=ir.Activation(signature.activation))
    graph = ir.Graph(net=net, layers=(conv,))
    ir.verify(graph)
    variables = ir.init_variables(graph, "sparse", seed=seed)
    return export_onnx(graph, variables, ExportOptions())


def _session_run(model, threads: int) -> Callable[[], Any]:
    from export.runtimes import ort_session

    session = ort_session(model, threads or None)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feed = {"images": np.random.default_rng(0).random(shape, dtype=np.float32)}
    return lambda: session.run(None, feed)


_LAYER = re.compile(r"^layer_(\d+)_")


def profile_layers(model, repeats: int = 3, threads: int = 1) -> dict[int, float]:
    """Per layer index, onnxruntime's own median kernel time (ms) over ``repeats``
    profiled runs of the whole network."""
    import onnxruntime as ort

    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feed = {"images": np.random.default_rng(0).random(shape, dtype=np.float32)}
    data = model.SerializeToString()
    with tempfile.TemporaryDirectory() as folder:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        session.run(None, feed)  # warm-up: the first model_run span, dropped below
        for _ in range(repeats):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs: dict[int, list[float]] = {}
    per_run: dict[tuple[int, int], float] = {}
    # Node events come in run order; split them by the model_run events' time spans.
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        found = _LAYER.match(event["name"])
        if not found:
            continue  # layout reorders and the like: the calibration absorbs them
        k = next((r for r, (a, b) in enumerate(spans) if a <= event["ts"] <= b), None)
        if k is None or k == 0:
            continue
        key = (int(found.group(1)), k)
        per_run[key] = per_run.get(key, 0.0) + event["dur"] / 1e3
    for (layer, _), ms in per_run.items():
        runs.setdefault(layer, []).append(ms)
    return {i: statistics.median(t) for i, t in runs.items()}


def half_network(graph: ir.Graph, variables: ir.Variables, multiple: int
                 ) -> tuple[ir.Graph, ir.Variables]:
    """Every prunable unit (shortcut mode) at half its channels (rounded up to
    ``multiple``; the top |γ|): the table's second calibration point."""
    analysis = passes.analyze_prunability(graph, "shortcut")
    masks = {}
    for unit in analysis.units:
        score = passes.slim_latency.unit_importance(graph, variables, unit)
        count = min(len(score), max(1, -(-len(score) // 2 // multiple) * multiple))
        keep = np.zeros(len(score), bool)
        keep[np.argsort(-score, kind="stable")[:count]] = True
        for i in unit:
            masks[i] = keep
    cm = passes.ChannelMasks.from_arrays(masks, graph)
    return passes.SliceChannels(cm)(*passes.FoldPrunedBias(cm)(graph, variables))


@dataclass(frozen=True, slots=True)
class Plan:
    """The distinct conv signatures of a graph and each conv's signature index."""

    signatures: tuple[ConvSignature, ...]
    of_layer: tuple[tuple[int, int], ...]


def plan_table(graph: ir.Graph) -> Plan:
    """Distinct signatures, in first-use order (yolov3's 75 convs have far fewer)."""
    why = passes.latency_refusal(graph)
    if why is not None:
        raise passes.PruneError(f"latency table: {why}")
    shapes = ir.verify(graph)
    image = ir.input_shape(graph)
    signatures: dict[ConvSignature, int] = {}
    of_layer = []
    for i, layer in enumerate(graph.layers):
        if isinstance(layer, ir.Conv):
            j = ir.layer_inputs(graph, i)[0]
            sig = ConvSignature.of(layer, image if j < 0 else shapes[j])
            of_layer.append((i, signatures.setdefault(sig, len(signatures))))
    return Plan(tuple(signatures), tuple(of_layer))


def measure_latency_table(graph: ir.Graph, variables: ir.Variables | None = None,
                          engine: str = "onnxruntime", *, repeats: int = 3,
                          warmup: int = 1, multiple: int | None = None,
                          threads: int = 1,
                          progress: Progress | None = None, seed: int = 0
                          ) -> LatencyTable:
    """Measure ``graph``'s table on ``engine`` (see the module docstring).

    Args:
        variables: the network's (for the whole-network profile); fresh ones when None.
        repeats, warmup: timed and untimed runs of each model.
        multiple: the engine's channel block (default `engine_multiple`); grid
            counts are multiples of it and predictions round channels up to it.
        threads: the engine's intra-op threads (0: its default). One by default: on a
            machine shared with other work, a multi-threaded run waits for whichever
            thread was descheduled, and single runs vary 10x (measured here).
        progress: called after each signature's grid and after the profile.

    Raises:
        EngineError: an unknown, uninstalled or unimplemented engine.
    """
    key = table_key(graph, engine, threads)
    multiple = multiple or engine_multiple(engine)
    plan = plan_table(graph)
    grids_of = [(grid_counts(s.c_in, multiple), grid_counts(s.c_out, multiple))
                if s.groups == 1 else ((s.c_in,), (s.c_out,)) for s in plan.signatures]
    total = sum(len(a) * len(b) for a, b in grids_of) + 1
    done = 0
    grids = []
    for k, (sig, (c_ins, c_outs)) in enumerate(zip(plan.signatures, grids_of)):
        points = [(a, b) for a in c_ins for b in c_outs]
        runs = [_session_run(_one_conv(sig, a, b, seed), threads) for a, b in points]
        times = time_interleaved(runs, repeats, warmup)
        best = dict(zip(points, (min(t) for t in times)))
        ms = passes.monotone_grid([[best[a, b] for b in c_outs] for a in c_ins])
        grids.append(ConvGrid(signature=sig, c_in=c_ins, c_out=c_outs, ms=ms))
        done += len(points)
        if progress is not None:
            progress(done, total, f"conv signature {k + 1}/{len(plan.signatures)}")
    from darkslim.onnx_deploy import export_checked

    if variables is None:
        variables = ir.init_variables(graph, "sparse", seed=seed)
    model = export_checked(graph, variables)
    profiled = profile_layers(model, repeats, threads)
    half = half_network(graph, variables, multiple)
    runs = [_session_run(model, threads), _session_run(export_checked(*half), threads)]
    full_times, half_times = time_interleaved(runs, repeats, warmup)
    if progress is not None:
        progress(total, total, "whole network profile")
    layers = passes.layer_entries(graph, dict(plan.of_layer),
                                  lambda i: profiled.get(i, 0.0))
    table = LatencyTable(key=key, convs=tuple(grids), layers=layers,
                         network_ms=statistics.median(full_times), multiple=multiple)
    half_sum = sum(table.predict(half[0]).layers_ms) / table.calibration
    return dataclasses.replace(table, half_ms=statistics.median(half_times),
                               half_sum_ms=half_sum)


def default_table_path(graph: ir.Graph, engine: str, threads: int = 1) -> Path:
    """``~/.cache/darkslim/latency/<engine>-<graph digest>-<W>x<H>-t<threads>.json``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = passes.GraphFingerprint.of(graph).digest
    name = f"{engine}-{digest}-{graph.width}x{graph.height}-t{threads}.json"
    return base / "darkslim" / "latency" / name


def save_table(path: str | os.PathLike, table: LatencyTable) -> None:
    """Write ``table`` as JSON, atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frontends.write_atomic(path, (json.dumps(passes.table_to_json(table), indent=1)
                                  + "\n").encode())


def load_table(path: str | os.PathLike) -> LatencyTable:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise passes.PruneError(f"{path}: cannot read the latency table ({exc})") from None
    try:
        return passes.table_from_json(data)
    except passes.PruneError as exc:
        raise passes.PruneError(f"{path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Loaded:
    """A table, where it is, and whether it was measured now (and why)."""

    table: LatencyTable
    path: Path
    measured: bool
    why: str
    seconds: float


def load_or_measure(graph: ir.Graph, variables: ir.Variables | None, engine: str,
                    path: str | os.PathLike | None = None, *, repeats: int = 3,
                    multiple: int | None = None, threads: int = 1, progress: Progress | None = None,
                    measure: Callable[..., LatencyTable] | None = None) -> Loaded:
    """The cached table at ``path`` (default `default_table_path`) when its key is
    this graph's on this engine and machine; else a fresh measurement, written there.

    ``measure`` replaces `measure_latency_table` (tests).
    """
    key = table_key(graph, engine, threads)
    target = Path(path) if path is not None else default_table_path(graph, engine, threads)
    why = f"no table at {target}"
    if target.exists():
        try:
            cached = load_table(target)
        except passes.PruneError as exc:
            why = f"{exc}; re-measuring"
        else:
            if cached.key == key:
                return Loaded(cached, target, False, f"loaded {target}", 0.0)
            diff = [f"{f} {getattr(cached.key, f)!r} -> {getattr(key, f)!r}"
                    for f in ("engine", "engine_version", "cpu", "size", "cfg", "threads")
                    if getattr(cached.key, f) != getattr(key, f)]
            why = f"{target}: measured for another key ({'; '.join(diff)}); re-measuring"
    start = time.perf_counter()
    table = (measure or measure_latency_table)(graph, variables, engine, repeats=repeats,
                                               multiple=multiple, threads=threads,
                                               progress=progress)
    save_table(target, table)
    return Loaded(table, target, True, why, time.perf_counter() - start)


__all__ = ["ENGINE_NAMES", "EngineError", "GRID", "Loaded", "Plan", "cpu_name",
           "default_table_path", "engine_multiple", "engine_version", "grid_counts",
           "half_network", "load_or_measure",
           "load_table", "measure_latency_table", "plan_table", "profile_layers",
           "save_table", "table_key"]
