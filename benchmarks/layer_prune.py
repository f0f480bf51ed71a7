"""Layer pruning vs channel pruning: params, BFLOPs and CPU latency of yolov3.

Four networks from one seeded set of weights with sparse γ (yolov3 at 416 by
default): the original; channel pruning alone at ``--percent``; ``--blocks`` residual
blocks removed alone (the lowest mean |γ| of the conv feeding each shortcut); and
the blocks removed, then the channel prune. Latency is batch 1 on the CPU, measured
by `darkslim.latency.measure_latency`: every network compiled first (timed apart),
warmed up, then run round-robin, and the median of each one's runs reported. Load
from other processes falls on all four alike; the load average is printed.

    .venv/bin/python benchmarks/layer_prune.py [--cfg yolov3.cfg] [--size 416]
        [--blocks 8] [--percent 0.5] [--mode regular] [--repeats 7] [--warmup 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
import passes  # noqa: E402
from darkslim.latency import measure_latency  # noqa: E402
from darkslim.testing import random_variables  # noqa: E402

DEFAULT_CFG = ROOT.parent / "shared" / "cfg" / "yolov3.cfg"


def variants(graph, variables, blocks: int, percent: float, mode: str):
    """(name, program, seconds the passes took) for each network compared."""
    config = passes.PruneConfig(percent=percent, mode=mode)
    remove = passes.RemoveBlocks(n=blocks)
    out = [("original", (graph, variables), 0.0)]
    start = time.perf_counter()
    channels = passes.prune(graph, variables, config).compact
    out.append((f"channels {percent:.0%}", channels, time.perf_counter() - start))
    start = time.perf_counter()
    removed = remove(graph, variables)
    out.append((f"{blocks} blocks", removed, time.perf_counter() - start))
    start = time.perf_counter()
    both = passes.prune(*remove(graph, variables), config).compact
    out.append((f"{blocks} blocks + channels {percent:.0%}", both,
                time.perf_counter() - start))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default=str(DEFAULT_CFG))
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--percent", type=float, default=0.5)
    parser.add_argument("--mode", choices=("regular", "shortcut"), default="regular")
    parser.add_argument("--sparsity", type=float, default=0.5,
                        help="fraction of γ drawn near zero (random_variables)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    console = Console(width=max(150, Console().width))

    load_before = os.getloadavg()
    graph = ir.with_input_size(ir.parse_cfg(args.cfg), args.size)
    variables = random_variables(graph, seed=args.seed, sparsity=args.sparsity)
    found = len(passes.find_residual_blocks(graph))
    nets = variants(graph, variables, args.blocks, args.percent, args.mode)
    latencies = measure_latency([program for _, program, _ in nets],
                                repeats=args.repeats, warmup=args.warmup)
    load_after = os.getloadavg()

    base = latencies[0].median_ms
    channel_only = latencies[1].median_ms
    table = Table(title=f"{Path(args.cfg).name} at {args.size}: {args.blocks} of {found} "
                  f"residual blocks and {args.percent:.0%} of channels ({args.mode} mode); "
                  f"CPU, batch 1, {os.cpu_count()} cores")
    for column in ("network", "layers", "params M", "BFLOPs", "passes s", "compile s",
                   "median ms", "min–max ms", "÷ original", "÷ channel-only"):
        table.add_column(column, justify="left" if column == "network" else "right",
                         no_wrap=True)
    for (name, (g, _), pass_s), lat in zip(nets, latencies):
        table.add_row(name, str(len(g.layers)), f"{ir.count_params(g) / 1e6:.2f}",
                      f"{ir.count_flops(g) / 1e9:.2f}", f"{pass_s:.2f}",
                      f"{lat.compile_s:.1f}", f"{lat.median_ms:.0f}",
                      f"{min(lat.times_ms):.0f}–{max(lat.times_ms):.0f}",
                      f"{lat.median_ms / base:.3f}", f"{lat.median_ms / channel_only:.3f}")
    console.print(table)
    console.print(f"Latency: runtime.forward compiled per network (timed apart), "
                  f"{args.warmup} warm-up runs each, then {args.repeats} rounds of the four "
                  f"networks in turn; median per network. Weights: random_variables(seed="
                  f"{args.seed}, sparsity={args.sparsity}); blocks ranked by mean |γ| of the "
                  f"conv feeding the shortcut. Load average (1/5/15 min) before "
                  f"{'/'.join(f'{x:.1f}' for x in load_before)}, after "
                  f"{'/'.join(f'{x:.1f}' for x in load_after)} on {os.cpu_count()} cores.",
                  highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
