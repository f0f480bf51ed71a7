"""`darkslim demo [--out DIR] [--quick]`: the whole slimming loop on synthetic data."""

from __future__ import annotations

import dataclasses

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from darkslim.ui import make_console


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole loop on the embedded synthetic dataset",
        description="Generate the synthetic dataset, sparse-train the shipped "
        "yolov3-tiny-style detector, prune it, fine-tune, and print mAP@0.5, params, "
        "BFLOPs and CPU latency before pruning, after pruning and after fine-tuning, and "
        "of the fine-tuned network quantized to INT8 (onnxruntime).")
    p.add_argument("--out", default="demo-out", metavar="DIR")
    p.add_argument("--quick", action="store_true",
                   help="a small version for CI (a narrower net, fewer images and epochs)")
    p.add_argument("--percent", type=float, default=None, metavar="P",
                   help="prune this fraction (default: the largest below the safe threshold)")
    p.add_argument("--epochs", type=int, default=None, help="sparse-training epochs")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.markup import escape

    from darkslim.demo import QUICK, DemoConfig, int8_summary, markdown_table, run_demo

    console = make_console()
    config = QUICK if args.quick else DemoConfig()
    overrides = {k: v for k, v in (("percent", args.percent), ("epochs", args.epochs),
                                   ("seed", args.seed)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                        console=console, transient=True)
    task = progress.add_task("", total=None, stats="")

    def on_stage(name: str) -> None:
        progress.console.print(f"[bold]{name}[/]")
        progress.update(task, description=name, completed=0, total=None, stats="")

    def on_step(info) -> None:
        m = info.metrics
        progress.update(task, total=info.steps_per_epoch, completed=info.step
                        - info.epoch * info.steps_per_epoch,
                        description=f"epoch {info.epoch + 1}",
                        stats=f"loss {m['loss']:.3f} s {m['s']:.3g} |γ| "
                              f"{m['gamma_mean']:.3f} <.01 {m['gamma_small']:.0%}")

    with progress:
        demo = run_demo(config, args.out, on_stage=on_stage, on_step=on_step)

    table = Table(title="darkslim demo: network slimming on the synthetic dataset")
    for column in ("", "mAP@0.5", "params", "BFLOPs", "CPU latency (batch 1)",
                   "onnxruntime"):
        table.add_column(column, justify="left" if not column else "right")
    for s in demo.stages:
        table.add_row(s.name, f"{s.map50:.4f}", f"{s.params:,}", f"{s.bflops:.3f}",
                      *("-" if ms is None else f"{ms:.2f} ms"
                        for ms in (s.latency_ms, s.onnx_latency_ms)))
    console.print(table)
    if demo.int8 is not None:
        console.print(escape(int8_summary(demo.int8)), highlight=False)
    r = demo.prune
    console.print(f"channels kept per conv ({r.text}, threshold {r.threshold.value:.4g}; "
                  "chart: channels.png):", highlight=False)
    console.print("  ".join(f"{i}: {k}/{t}" for i, k, t in r.channels), highlight=False)
    console.print(f"wrote {', '.join(demo.files)} to {demo.out}/", highlight=False)
    console.print(markdown_table(demo.stages), highlight=False, markup=False)
    return 0
