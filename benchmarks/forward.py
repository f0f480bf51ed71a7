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

import frontends  # noqa: E402
import ir  # noqa: E402
import runtime  # noqa: E402
from benchmarks.engines import EngineProcess, alternate, timed  # noqa: E402

DEFAULT_CFG = ROOT.parent / "shared" / "cfg" / "yolov3.cfg"


def median_seconds(fn, repeats: int, warmup: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) of ``fn()``.

    CPU seconds are less skewed than wall time when other processes share the cores.
    """
    (wall, cpu, _), = alternate([timed(fn)], repeats, warmup)
    return wall, cpu


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default=str(DEFAULT_CFG))
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-opencv", action="store_true")
    parser.add_argument("--pause", type=float, default=1.0,
                        help="seconds of idle before each timed run, so that the other "
                             "engines' threads have stopped spinning (torch's OpenMP "
                             "threads keep both cores busy for a few hundred ms after a "
                             "forward: with 0.2 s the next darkslim b1 forward took 186 "
                             "ms instead of 159)")
    args = parser.parse_args(argv)
    console = Console(width=max(150, Console().width))

    load_before = os.getloadavg()[0]
    graph = ir.with_input_size(ir.parse_cfg(args.cfg), args.size)
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
    weights = workdir / "bench.weights"  # OpenCV reads the same seeded weights
    frontends.write_darknet(graph, variables, weights)
    kinds = [k for k, off in (("torch", args.no_torch), ("opencv", args.no_opencv)) if not off]
    for batch in args.batches:  # per batch: darkslim, torch and OpenCV alternate
        trace_s, compile_s, run = bench_flax(graph, variables, batch, args.repeats,
                                             args.warmup)
        engines = [EngineProcess(kind, args.cfg, args.size, batch, weights=weights)
                   for kind in kinds]
        engines = [e for e in engines if e.threads is not None]
        runs = [timed(run), *engines]
        names = ["darkslim"] + [f"{e.label} ×{e.threads}" for e in engines]
        results = alternate(runs, args.repeats, args.warmup, args.pause)
        for engine in engines:
            engine.close()
        ref_index = next((k for k, e in enumerate(engines, 1) if e.kind == "torch"), None)
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
