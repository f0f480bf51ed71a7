"""`darkslim sweep MODEL.cfg WEIGHTS --data DATA.data [--percents 0.1:0.9:0.1] --out DIR`.

Prunes the network at each ratio of --percents (and, with --layers, after removing
each count of residual blocks), and measures every point on the valid split: mAP@0.5
right after the prune (and after --finetune-epochs of fine-tuning), params, BFLOPs and
batch-1 latency on --engine, all networks (the unpruned one too, as ratio 0) timed
interleaved in one loop at the end. Prints the table with the Pareto front of mAP vs
latency marked, and writes DIR/sweep.json and DIR/sweep.png. Each finished point is
kept in DIR/sweep.jsonl: rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from darkslim.ui import make_console, warn


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="prune at a grid of ratios; mAP, BFLOPs and latency "
                       "of each, Pareto front", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS", help=".weights, .pt/.pth or .msgpack")
    p.add_argument("--data", required=True, metavar="DATA.data",
                   help="its valid split measures mAP@0.5 (its train split fine-tunes)")
    p.add_argument("--percents", default="0.1:0.9:0.1", metavar="A:B:S|P,...",
                   help="prune ratios: START:STOP:STEP (STOP included) or a list "
                   "(default 0.1:0.9:0.1); each in [0, 1)")
    p.add_argument("--mode", choices=("regular", "shortcut"), default="regular",
                   help="as for prune: regular keeps shortcut groups whole")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="round kept channel counts up to multiples of N")
    p.add_argument("--min-keep", type=float, default=0.01, metavar="F",
                   help="as for prune: keep at least this fraction of every layer (0: a "
                   "ratio that empties a layer is refused)")
    p.add_argument("--layers", default="0", metavar="N,...",
                   help="also remove these numbers of residual blocks first (each count "
                   "crossed with every ratio; default 0)")
    p.add_argument("--engine", choices=("darkslim", "onnxruntime", "openvino"),
                   default="onnxruntime",
                   help="where latency is measured (default onnxruntime; darkslim: the "
                   "JAX runtime on the CPU)")
    p.add_argument("--latency-repeats", type=int, default=50, metavar="K",
                   help="timed batch-1 runs per network, interleaved (median; 50)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="onnxruntime/OpenVINO intra-op threads while timing (1: steady "
                   "medians when many sessions are alive; 0: the engine's default)")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                   help="also fine-tune each pruned network N epochs on the train split "
                   "and measure mAP again")
    p.add_argument("--finetune-lr", type=float, default=1e-3, metavar="LR")
    p.add_argument("--batch", type=int, default=16,
                   help="evaluation (and fine-tuning) batch size (16)")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    p.add_argument("--max-points", type=int, default=None, metavar="K",
                   help="measure at most K new points, then stop (rerun to continue)")
    p.add_argument("--restart", action="store_true",
                   help="discard the points DIR/sweep.jsonl holds, even of another sweep")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from darkslim import report as reports
    from darkslim.sweep import (
        SweepSpec,
        check_engine,
        parse_layers,
        parse_percents,
        plot_sweep,
        run_sweep,
    )

    t0 = time.perf_counter()
    console = make_console()
    spec = SweepSpec.of(args.cfg, args.weights, args.data, parse_percents(args.percents),
                        layers=parse_layers(args.layers), mode=args.mode,
                        round_to=args.round_to, min_keep=args.min_keep,
                        finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                        batch=args.batch, seed=args.seed)
    check_engine(args.engine)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                        console=console, transient=True)
    task = progress.add_task("sweep", total=None, stats="")

    def on_start(total: int, done: int) -> None:
        progress.update(task, total=total, completed=done)
        if done:
            progress.console.print(f"continuing: {done} of {total} points already in "
                                   f"{Path(args.out) / 'sweep.jsonl'}", highlight=False)

    def on_point(point) -> None:
        progress.update(task, description=f"pruning + mAP at {point.key}", stats="")

    def on_row(row) -> None:
        progress.advance(task)
        stats = (f"last: mAP {row['map50']:.4f}" if row["status"] == "ok"
                 else f"last: refused ({row['key']})")
        progress.update(task, stats=stats)

    def on_stage(text: str) -> None:
        progress.update(task, description=text, stats="")

    def on_step(info) -> None:
        progress.update(task, stats=f"fine-tune epoch {info.epoch + 1} step {info.step}")

    with reports.ChartProcess() as charts, progress:
        result = run_sweep(spec, args.out, engine=args.engine,
                           latency_repeats=args.latency_repeats,
                           threads=args.threads or None, restart=args.restart,
                           max_points=args.max_points, on_start=on_start,
                           on_point=on_point, on_row=on_row, on_stage=on_stage,
                           on_step=on_step)
        if result.complete:
            charts.draw(plot_sweep, result.rows, Path(args.out) / "sweep.png",
                        f"{Path(args.cfg).name}: prune-ratio sweep ({args.engine})")
    for warning in result.warnings:
        warn(console, warning)
    console.print(render_table(result))
    seconds = time.perf_counter() - t0
    if not result.complete:
        console.print(f"stopped after {len(result.computed)} new points "
                      f"(--max-points); {len(result.rows)} of {len(spec.points())} done; "
                      "rerun the same command to continue", highlight=False)
        return 0
    for row in result.rows:
        if row["status"] == "refused":
            warn(console, f"refused: {row['reason']}")
    kept = len(result.rows) - len(result.computed)
    console.print(f"measured {len(result.computed)} points ({kept} "
                  f"from sweep.jsonl); wrote sweep.jsonl, sweep.json, sweep.png to "
                  f"{args.out}/ in {seconds:.1f} s", highlight=False)
    return 0


def render_table(result) -> Table:
    """One row per point: mAP, size, latency, speed-up, Pareto mark, note or refusal."""
    rows = result.rows
    blocks = any(r["layers"] for r in rows)
    tuned = result.spec.finetune_epochs > 0
    table = Table(title=f"prune-ratio sweep ({result.engine} latency, batch 1"
                  + (f", median of {result.latency['repeats']}" if result.latency else "")
                  + ")")
    columns = (["blocks"] if blocks else []) + ["percent", "mAP@0.5"] + (
        [f"mAP ft {result.spec.finetune_epochs} ep"] if tuned else []) + [
        "params", "BFLOPs", "latency ms", "min ms", "speed-up", "Pareto", "note"]
    for column in columns:
        table.add_column(column, justify="left" if column == "note" else "right")
    for r in rows:
        cells = [str(r["layers"])] if blocks else []
        name = "0 (base)" if r["layers"] == 0 and r["percent"] == 0 else f"{r['percent']:g}"
        if r["status"] != "ok":
            cells += [name, "refused"] + ([""] if tuned else []) + [""] * 6 + [r["reason"]]
            table.add_row(*cells, style="dim")
            continue
        ft = r.get("map50_finetuned")
        ms, speedup = r.get("latency_ms"), r.get("speedup")
        cells += [name, f"{r['map50']:.4f}"] + (["" if ft is None else f"{ft:.4f}"]
                                                  if tuned else []) + [
            f"{r['params']:,}", f"{r['bflops']:.4f}",
            "" if ms is None else f"{ms:.2f}",
            "" if ms is None else f"{r['latency_min_ms']:.2f}",
            "" if speedup is None else f"{speedup:.2f}x",
            "★" if r.get("pareto") else "", r.get("note") or ""]
        table.add_row(*cells)
    return table
