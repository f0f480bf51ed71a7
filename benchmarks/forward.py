"""Forward-pass latency of the Flax runtime: yolov3 at 416, batch 1 and 8, on CPU.

Compile time (trace + lower + XLA compile) is measured apart from latency, which is
the median of ``--repeats`` runs after ``--warmup`` runs. References measured in
the same run: a float32 2048² matmul (this machine's attainable GFLOP/s
through XLA) and, when installed, the same network in torch eager mode
(``tests/torch_reference.py``) and in OpenCV DNN (``cv2.dnn.readNetFromDarknet`` on
the same cfg and seeded weights), all on the same cores.

    .venv/bin/python benchmarks/forward.py [--cfg yolov3.cfg] [--size 416]
        [--batches 1 8] [--repeats 5] [--warmup 2] [--no-torch] [--no-opencv]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
import runtime  # noqa: E402

DEFAULT_CFG = ROOT.parent / "shared" / "cfg" / "yolov3.cfg"


def at_size(graph: ir.Graph, size: int) -> ir.Graph:
    return ir.with_input_size(graph, size)


def median_seconds(fn, repeats: int, warmup: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) of ``fn()``.

    CPU seconds are less skewed than wall time when other processes share the cores.
    """
    (wall, cpu, _), = alternate([fn], repeats, warmup)
    return wall, cpu


def alternate(fns, repeats: int, warmup: int) -> list[tuple[float, float, float]]:
    """Run ``fns`` in alternation (a b, then b a, ...) so other processes' load falls on
    all alike; per fn the median wall seconds, median CPU seconds and fastest run."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for i in range(repeats):
        for k in (order if i % 2 == 0 else order[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[k]()
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    return [(statistics.median(w), statistics.median(c), min(w)) for w, c in zip(wall, cpu)]


def bench_flax(graph, variables, batch: int, repeats: int, warmup: int):
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (batch, graph.height,
                                                            graph.width, graph.channels)),
                    dtype=jnp.float32)
    start = time.perf_counter()
    lowered = runtime.forward.lower(graph, variables, x)
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()

    def run():
        jax.block_until_ready(compiled(variables, x))
    return traced - start, done - traced, run


def bench_matmul(repeats: int) -> float:
    n = 2048
    a = jnp.asarray(np.random.default_rng(1).normal(size=(n, n)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    seconds, cpu = median_seconds(lambda: f(a).block_until_ready(), repeats, 2)
    return 2 * n ** 3 / seconds / 1e9, cpu


def bench_torch(graph, batch: int):
    try:
        import torch

        from tests.torch_reference import Darknet
    except ImportError:
        return None
    model = Darknet(graph, darknet_maxpool=True).eval()
    x = torch.rand(batch, graph.channels, graph.height, graph.width)

    def run():
        with torch.inference_mode():
            model(x)
    return run, torch.get_num_threads()


def bench_opencv(graph, variables, cfg: str, batch: int, workdir: Path):
    """OpenCV DNN's Darknet importer on the same cfg and weights (its default backend and
    threads), run to the [yolo] outputs; None when OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    import frontends

    weights = workdir / "bench.weights"
    if not weights.exists():
        frontends.write_darknet(graph, variables, weights)
    net = cv2.dnn.readNetFromDarknet(cfg, str(weights))
    names = net.getUnconnectedOutLayersNames()
    net.setInput(np.random.default_rng(0).random(
        (batch, graph.channels, graph.height, graph.width), dtype=np.float32))

    def run():
        net.forward(names)
    return run, cv2.getNumThreads()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default=str(DEFAULT_CFG))
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-opencv", action="store_true")
    args = parser.parse_args(argv)
    console = Console(width=max(150, Console().width))

    load_before = os.getloadavg()[0]
    graph = at_size(ir.parse_cfg(args.cfg), args.size)
    gflops = ir.count_flops(graph) / 1e9
    start = time.perf_counter()
    variables = jax.block_until_ready(runtime.init_variables(graph))
    init_s = time.perf_counter() - start

    table = Table(title=f"{Path(args.cfg).name} at {args.size}, {gflops:.2f} BFLOPs/image; "
                  f"{jax.devices()[0].platform.upper()}, {os.cpu_count()} cores, "
                  f"jax {jax.__version__}")
    for column in ("engine", "batch", "trace s", "compile s", "latency ms (median)",
                   "fastest ms", "ms / image", "GFLOP/s", "CPU s / run", "× torch"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    workdir = Path(tempfile.mkdtemp(prefix="darkslim-bench-"))
    for batch in args.batches:  # per batch: darkslim, torch and OpenCV alternate
        trace_s, compile_s, run = bench_flax(graph, variables, batch, args.repeats,
                                             args.warmup)
        fns, names, ref_index = [run], ["darkslim"], None
        torch_run = None if args.no_torch else bench_torch(graph, batch)
        if torch_run is not None:
            fns.append(torch_run[0])
            names.append(f"torch eager ×{torch_run[1]}")
            ref_index = 1
        opencv_run = None if args.no_opencv else bench_opencv(graph, variables, args.cfg,
                                                               batch, workdir)
        if opencv_run is not None:
            fns.append(opencv_run[0])
            names.append(f"OpenCV DNN ×{opencv_run[1]}")
        results = alternate(fns, args.repeats, args.warmup)
        ref = results[ref_index][0] if ref_index is not None else None
        for k, (name, (latency, cpu, fastest)) in enumerate(zip(names, results)):
            table.add_row(name, str(batch), f"{trace_s:.2f}" if k == 0 else "-",
                          f"{compile_s:.2f}" if k == 0 else "-", f"{latency * 1e3:.0f}",
                          f"{fastest * 1e3:.0f}", f"{latency * 1e3 / batch:.0f}",
                          f"{gflops * batch / latency:.1f}", f"{cpu:.2f}",
                          f"{ref / latency:.2f}×" if ref else "",
                          end_section=k == len(results) - 1)
    matmul_gflops, matmul_cpu = bench_matmul(args.repeats)
    table.add_row("XLA matmul 2048²", "-", "-", "-", "-", "-", "-", f"{matmul_gflops:.1f}",
                  f"{matmul_cpu:.3f}", "")
    shutil.rmtree(workdir, ignore_errors=True)
    console.print(table)
    console.print(f"darkslim = runtime.forward (Flax/XLA, NHWC); references measured in "
                  f"this run: torch eager on tests/torch_reference.py's Darknet, OpenCV "
                  f"DNN's Darknet importer on the same cfg and weights, and a "
                  f"float32 matmul (attainable GFLOP/s). Latency: median of "
                  f"{args.repeats} runs after {args.warmup} warm-up runs, the engines "
                  "alternating; × torch = torch's median / this one (above 1: "
                  "faster). "
                  f"init_variables: {init_s:.2f} s. Load average before/after: "
                  f"{load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
                  "(other processes skew CPU timings).", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
