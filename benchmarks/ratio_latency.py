"""Latency vs BFLOPs across prune ratios: does pruning buy the speed its FLOPs promise?

One seeded set of weights with sparse γ (yolov3-tiny at 416 by default; --cfg for
others), channel-pruned at each ``--percents`` ratio; each compact network's params,
BFLOPs and CPU latency (batch 1, median, `darkslim.latency.measure_latency`: all
compiled first, then run round-robin so other load falls on all alike). The reference
is the unpruned network measured in the same run; the last column is the speed-up
divided by the BFLOPs reduction (1.0: latency falls as fast as FLOPs).

With ``--breakdown`` (one percent) it also says where the time goes: every layer of
the original and of the pruned network is compiled and timed on its own (the
interpreter's own rules, `runtime.model`, one jitted function per layer, median of
the repeats), and the layers are grouped by kind (3×3 convs, 1×1 convs, the convs
feeding a ``[yolo]``, shortcut, route, upsample, yolo), each group with its FLOPs
ratio, its latency ratio and its share of the time the prune did not save. The sum
of the layers differs from the whole network by what fusion across layers saves and
by dispatch; that difference is a row too.

    .venv/bin/python benchmarks/ratio_latency.py [--cfg yolov3-tiny.cfg] [--size 416]
        [--percents 0.3 0.5 0.7 0.85] [--mode regular] [--repeats 7]
    .venv/bin/python benchmarks/ratio_latency.py --cfg yolov3.cfg --percents 0.5 --breakdown
"""

from __future__ import annotations

import argparse
import os
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
from darkslim.latency import measure_latency  # noqa: E402
from darkslim.testing import random_variables  # noqa: E402


def _group(graph: ir.Graph, index: int) -> str:
    layer = graph.layers[index]
    if isinstance(layer, ir.Conv):
        if index + 1 < len(graph.layers) and isinstance(graph.layers[index + 1], ir.Yolo):
            return "conv feeding a yolo head"
        return f"conv {layer.size}×{layer.size}"
    return layer.kind


def layer_times(graph: ir.Graph, variables, repeats: int) -> list[float]:
    """Milliseconds of every layer run alone (jitted, batch 1, the fastest of the
    repeats: on a shared machine the minimum is the least disturbed by other load)."""
    import jax

    from runtime.model import _Layer  # benchmark code: one layer as the network runs it
    from runtime.xla_options import compiler_options

    env = {-1: jax.numpy.asarray(np.random.default_rng(0).random(
        (1, graph.height, graph.width, graph.channels), dtype=np.float32))}
    times = []
    for i, layer in enumerate(graph.layers):
        inputs = tuple(env[j] for j in ir.layer_inputs(graph, i))
        key = f"layer_{i}"
        local = {c: tree[key] for c, tree in variables.items() if key in tree}
        module = _Layer(layer, 1e-5, (graph.height, graph.width))
        fn = jax.jit(lambda v, xs, module=module: module.apply(v, xs, False),
                     compiler_options=compiler_options())
        args = (local, inputs)
        run = fn.lower(*args).compile()
        out = jax.block_until_ready(run(*args))
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(run(*args))
            samples.append((time.perf_counter() - start) * 1e3)
        env[i] = out
        times.append(min(samples))
    return times


def breakdown(original, pruned, whole_ms: tuple[float, float], repeats: int) -> Table:
    """Where the time the FLOPs promised to save goes, by layer group."""
    (g0, v0), (g1, v1) = original, pruned
    flops0 = [c.flops for c in ir.layer_costs(g0)]
    flops1 = [c.flops for c in ir.layer_costs(g1)]
    t0, t1 = layer_times(g0, v0, repeats), layer_times(g1, v1, repeats)
    groups: dict[str, list[float]] = {}
    for i in range(len(g0.layers)):
        row = groups.setdefault(_group(g0, i), [0.0, 0.0, 0.0, 0.0])
        row[0] += t0[i]
        row[1] += t1[i]
        row[2] += flops0[i]
        row[3] += flops1[i]
    total_flops_ratio = sum(flops1) / sum(flops0)
    table = Table(title="where the time goes (each layer alone, batch 1, fastest of "
                        f"{repeats}; ms)")
    for column in ("layers", "original ms", "pruned ms", "FLOPs ratio", "latency ratio",
                   "ms over the FLOPs ratio", "share of the shortfall"):
        table.add_column(column, justify="left" if column == "layers" else "right")
    # "Over the FLOPs ratio": what a group takes beyond original ms × the network's
    # FLOPs ratio (the whole network at speed-up = FLOPs reduction).
    rows = []
    for name, (a, b, fa, fb) in groups.items():
        rows.append((name, a, b, fb / fa if fa else None, b / a if a else 0.0,
                     b - a * total_flops_ratio))
    rows.append(("sum of the layers", sum(t0), sum(t1), total_flops_ratio,
                 sum(t1) / sum(t0), sum(t1) - sum(t0) * total_flops_ratio))
    rows.append(("whole network (fused, compiled)", whole_ms[0], whole_ms[1],
                 total_flops_ratio, whole_ms[1] / whole_ms[0],
                 whole_ms[1] - whole_ms[0] * total_flops_ratio))
    shortfall = sum(r[5] for r in rows[:-2])
    for k, (name, a, b, fr, lr, over) in enumerate(rows):
        share = f"{over / shortfall:.0%}" if k < len(rows) - 2 and shortfall > 0 else ""
        table.add_row(name, f"{a:.1f}", f"{b:.1f}", "-" if fr is None else f"{fr:.3f}",
                      f"{lr:.3f}", f"{over:+.1f}", share, end_section=k >= len(rows) - 3)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default="yolov3-tiny.cfg",
                        help="a path, or a name in ../shared/cfg")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--percents", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.85])
    parser.add_argument("--mode", default="regular", choices=("regular", "shortcut"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--breakdown", action="store_true",
                        help="time every layer alone, original vs the first percent")
    args = parser.parse_args(argv)
    path = Path(args.cfg)
    if not path.exists():
        path = ROOT.parent / "shared" / "cfg" / args.cfg
    graph = ir.with_input_size(ir.parse_cfg(path), args.size)
    variables = random_variables(graph, seed=0, sparsity=0.6)
    programs = [("original", (graph, variables))]
    for p in args.percents:
        result = passes.prune(graph, variables, passes.PruneConfig(percent=p, mode=args.mode))
        programs.append((f"{p:.0%} of prunable channels", result.compact))
    timings = measure_latency([prog for _, prog in programs], repeats=args.repeats,
                              warmup=2)
    base_flops = ir.count_flops(graph)
    base_ms = timings[0].median_ms
    table = Table(title=f"{path.name} at {args.size}, {args.mode} mode, batch 1 CPU "
                        f"(load {os.getloadavg()[0]:.2f})")
    for column in ("network", "params", "BFLOPs", "median ms", "FLOPs ratio",
                   "latency ratio", "speed-up / FLOPs reduction"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for (name, (g, _)), t in zip(programs, timings):
        flops_ratio = ir.count_flops(g) / base_flops
        latency_ratio = t.median_ms / base_ms
        table.add_row(name, f"{ir.count_params(g):,}", f"{ir.count_flops(g) / 1e9:.3f}",
                      f"{t.median_ms:.1f}", f"{flops_ratio:.3f}", f"{latency_ratio:.3f}",
                      f"{(1 / latency_ratio) / (1 / flops_ratio):.2f}")
    console = Console(width=140)
    console.print(table)
    if args.breakdown:
        console.print(breakdown(programs[0][1], programs[1][1],
                                (timings[0].median_ms, timings[1].median_ms), args.repeats))
    console.print(f"Latency: median of {args.repeats} interleaved runs after compiling; "
                  f"load average at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
                  "(other processes share them).", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
