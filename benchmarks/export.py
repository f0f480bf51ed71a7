"""ONNX export: export time, file size, and onnxruntime latency against darkslim's
runtime and torch on the same network, before and after a prune.

yolov3 at 416 by default, seeded weights with sparse γ, pruned by ``--percent`` in
``--mode`` (half, shortcut mode). For each network: the export (``export_onnx``, BN
folded, serialised) time and size; then batch-1 CPU latency of onnxruntime (full graph
optimisation), of darkslim's runtime (`darkslim.latency.measure_latency`: XLA,
compiled apart) and of torch eager (``tests/torch_reference.py``), each engine's
networks run interleaved so load falls on both alike. Also the parity of the
exported files against the runtime on one input (max |difference| / max |value|).

    .venv/bin/python benchmarks/export.py [--cfg yolov3.cfg] [--size 416]
        [--percent 0.5] [--mode shortcut] [--round-to 1] [--repeats 7] [--warmup 2]
        [--no-torch]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
import passes  # noqa: E402
from darkslim.latency import measure_latency, measure_onnx_latency  # noqa: E402
from darkslim.testing import random_inputs, random_variables  # noqa: E402
from export import ExportOptions, export_onnx  # noqa: E402
from export.runtimes import run_onnxruntime  # noqa: E402

DEFAULT_CFG = ROOT.parent / "shared" / "cfg" / "yolov3.cfg"


def torch_latency(programs, repeats: int, warmup: int):
    """Median torch eager latency (ms) of each program, interleaved; None without torch."""
    try:
        import torch

        from tests.torch_reference import Darknet
    except ImportError:
        return None
    runs = []
    for graph, variables in programs:
        model = Darknet.from_variables(graph, variables).eval()
        x = torch.rand(1, graph.channels, graph.height, graph.width)

        def run(model=model, x=x):
            with torch.inference_mode():
                model(x)
        for _ in range(warmup):
            run()
        runs.append(run)
    times = [[] for _ in runs]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[k].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times], torch.get_num_threads()


def parity(graph, variables, model) -> float:
    import jax.numpy as jnp

    import runtime

    x = random_inputs(graph, seed=1)
    ref = runtime.forward(graph, variables, jnp.asarray(x))
    out = run_onnxruntime(model, x.transpose(0, 3, 1, 2))
    return max(float(np.abs(out[f"head_{k}"] - np.asarray(h).transpose(0, 3, 1, 2)).max()
                     / np.abs(np.asarray(h)).max()) for k, h in enumerate(ref.heads))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default=str(DEFAULT_CFG))
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--percent", type=float, default=0.5)
    parser.add_argument("--mode", choices=("regular", "shortcut"), default="shortcut")
    parser.add_argument("--round-to", type=int, default=1,
                        help="round kept channel counts up to multiples of N")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    console = Console(width=max(150, Console().width))

    load_before = os.getloadavg()
    graph = ir.with_input_size(ir.parse_cfg(args.cfg), args.size)
    variables = random_variables(graph, seed=args.seed, sparsity=args.sparsity)
    compact = passes.prune(graph, variables, passes.PruneConfig(
        percent=args.percent, mode=args.mode, round_to=args.round_to)).compact
    rounded = f", ×{args.round_to}" if args.round_to > 1 else ""
    programs = [("original", (graph, variables)),
                (f"pruned {args.percent:.0%} ({args.mode}{rounded})", compact)]
    import onnx.checker  # noqa: F401  (import time is not export time)

    exported = []
    for _, (g, v) in programs:
        start = time.perf_counter()
        data = export_onnx(g, v, ExportOptions()).SerializeToString()
        exported.append((data, time.perf_counter() - start))
    diffs = [parity(g, v, data) for (_, (g, v)), (data, _) in zip(programs, exported)]
    ort = measure_onnx_latency([d for d, _ in exported],
                               [tuple(ir.input_shape(g)) for _, (g, _) in programs],
                               repeats=args.repeats, warmup=args.warmup)
    jax_lat = measure_latency([p for _, p in programs], repeats=args.repeats,
                              warmup=args.warmup)
    torch_lat = None if args.no_torch else torch_latency([p for _, p in programs],
                                                         args.repeats, args.warmup)

    table = Table(title=f"{Path(args.cfg).name} at {args.size}, batch 1, CPU "
                  f"({os.cpu_count()} cores); median of {args.repeats} interleaved runs")
    for column in ("network", "params", "BFLOPs", "export s", "ONNX MB", "parity",
                   "onnxruntime ms", "darkslim ms", "torch ms"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for k, (name, (g, _)) in enumerate(programs):
        data, export_s = exported[k]
        table.add_row(name, f"{ir.count_params(g):,}", f"{ir.count_flops(g) / 1e9:.2f}",
                      f"{export_s:.2f}", f"{len(data) / 1e6:.1f}", f"{diffs[k]:.1e}",
                      f"{ort[k].median_ms:.1f}", f"{jax_lat[k].median_ms:.1f}",
                      "-" if torch_lat is None else f"{torch_lat[0][k]:.1f}")
    ratio = lambda xs: xs[1] / xs[0]  # noqa: E731
    sizes = [len(data) for data, _ in exported]
    table.add_row("pruned ÷ original", "", "", "", f"{ratio(sizes):.3f}",
                  "", f"{ratio([t.median_ms for t in ort]):.3f}",
                  f"{ratio([t.median_ms for t in jax_lat]):.3f}",
                  "-" if torch_lat is None else f"{ratio(torch_lat[0]):.3f}")
    console.print(table)
    import onnxruntime

    threads = "" if torch_lat is None else f", torch {torch_lat[1]} threads"
    console.print(f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider, "
                  f"ORT_ENABLE_ALL); darkslim = runtime.forward (XLA, compile "
                  f"{jax_lat[0].compile_s:.1f} / {jax_lat[1].compile_s:.1f} s apart){threads}. "
                  f"parity = max |onnxruntime − runtime| / max |runtime| over the heads. "
                  f"Load average before/after: {load_before[0]:.1f}/{os.getloadavg()[0]:.1f}.",
                  highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
