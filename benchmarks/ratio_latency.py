"""Latency vs BFLOPs across prune ratios: does pruning buy the speed its FLOPs promise?

One seeded set of weights with sparse γ (yolov3-tiny at 416 by default; --cfg for
others), channel-pruned at each ``--percents`` ratio; each compact network's params,
BFLOPs and CPU latency (batch 1, median, `darkslim.latency.measure_latency`: all
compiled first, then run round-robin so other load falls on all alike). The reference
is the unpruned network measured in the same run; the last column is the speed-up
divided by the BFLOPs reduction (1.0: latency falls as fast as FLOPs).

    .venv/bin/python benchmarks/ratio_latency.py [--cfg yolov3-tiny.cfg] [--size 416]
        [--percents 0.3 0.5 0.7 0.85] [--mode regular] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
import passes  # noqa: E402
from darkslim.latency import measure_latency  # noqa: E402
from darkslim.testing import random_variables  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default="yolov3-tiny.cfg",
                        help="a path, or a name in ../shared/cfg")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--percents", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.85])
    parser.add_argument("--mode", default="regular", choices=("regular", "shortcut"))
    parser.add_argument("--repeats", type=int, default=7)
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
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
