"""`darkslim prune MODEL.cfg WEIGHTS --percent P ... --out DIR`: network slimming.

Writes DIR/pruned.cfg, DIR/pruned.weights (plus a checkpoint in the input's own torch
layout when the input is one), DIR/report.json and DIR/channels.png. Nothing is
written when the prune fails.

With --layers N (or --layer-threshold T) whole residual blocks are removed first, the
N whose last BN conv has the lowest mean |γ|; alone, or followed by the channel prune
when --percent or --threshold is also given. The report then lists the removed
blocks and the CPU latency of the original and the final network, measured in the
same run.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

import frontends
import ir
import passes
from darkslim.ui import make_console, warn
from darkslim import report as reports


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise passes.PruneError(f"--ignore {text}: expected comma-separated layer "
                                "indices such as 84,96") from None


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="prune BN channels by |γ| (network slimming)",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS", help=".weights, .pt/.pth or .msgpack")
    how = p.add_mutually_exclusive_group()  # or neither, with --layers
    how.add_argument("--percent", type=float, metavar="P",
                     help="fraction of prunable channels to drop (the seed's global rule)")
    how.add_argument("--threshold", type=float, metavar="T",
                     help="drop channels with |γ| < T")
    depth = p.add_mutually_exclusive_group()
    depth.add_argument("--layers", type=int, metavar="N",
                       help="remove the N residual blocks whose last BN conv has the "
                       "lowest mean |γ| (layer pruning; before any channel pruning)")
    depth.add_argument("--layer-threshold", type=float, metavar="T",
                       help="remove every residual block whose score is below T")
    p.add_argument("--latency-repeats", type=int, default=5, metavar="K",
                   help="with --layers: CPU latency before/after, median of K runs at "
                   "batch 1 (0: skip)")
    p.add_argument("--mode", choices=("regular", "shortcut"), default="regular",
                   help="regular: shortcut groups stay whole (the seed); shortcut: "
                   "each group is pruned with one shared mask")
    p.add_argument("--ignore", type=_indices, default=(), metavar="L,...",
                   help="conv layer indices to keep whole, e.g. 84,96")
    p.add_argument("--min-keep", type=float, default=0.01, metavar="F",
                   help="keep at least this fraction of every layer, and at least one "
                   "channel (0: no floor; a layer that would empty is an error)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="round kept channel counts up to multiples of N")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="torch checkpoints: the BatchNorm eps they were trained with")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the forward passes that measure keep-size vs compact")
    p.add_argument("--data", metavar="DATA.data",
                   help="also evaluate mAP@0.5 on its valid split: original, γ zeroed, "
                   "keep-size and compact (the seed's three-way check)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    console = make_console()
    t0 = time.perf_counter()
    channels = args.percent is not None or args.threshold is not None
    layers = args.layers is not None or args.layer_threshold is not None
    if not (channels or layers):
        raise passes.PruneError("nothing to prune: give --percent, --threshold, --layers "
                                "or --layer-threshold")
    graph = ir.parse_cfg(args.cfg)
    ir.verify(graph)
    loaded = frontends.load_variables(graph, args.weights, bn_eps=args.bn_eps)
    for warning in loaded.warnings:
        warn(console, warning)
    program = (graph, loaded.variables)
    if layers:
        blocks = passes.analyze_blocks(graph)
        removed = passes.RemoveBlocks(n=args.layers,
                                      threshold=args.layer_threshold).select(*program)
        program = passes.pipeline(passes.RemoveBlocks(
            blocks=tuple(sb.block.shortcut for sb in removed)))(*program)
    report: dict = {}  # with --layers, "before" is the original network
    channel_report: dict = {}  # "before" is the channel prune's input
    if channels:
        config = passes.PruneConfig(percent=args.percent, threshold=args.threshold,
                                    mode=args.mode, ignore=args.ignore,
                                    min_keep=args.min_keep, round_to=args.round_to)
        result = passes.prune(*program, config)
        diffs = None
        if args.check:
            from darkslim.check import measure_prune_diffs

            with console.status("checking keep-size vs compact on a random input..."):
                diffs = measure_prune_diffs(program[0], result)
        channel_report = reports.prune_report(program[0], result, diffs)
        if args.data:
            with console.status("evaluating mAP@0.5 of the four networks..."):
                channel_report["map50"] = evaluate_three_ways(args.data, program, result)
        report = dict(channel_report)
        compact_graph, compact_vars = result.compact
    else:
        compact_graph, compact_vars = program
    if layers:
        latency = None
        if args.latency_repeats > 0:
            from darkslim.latency import measure_latency

            with console.status("measuring CPU latency before and after..."):
                latency = measure_latency([(graph, loaded.variables),
                                           (compact_graph, compact_vars)],
                                          repeats=args.latency_repeats)
        report.update(reports.layer_prune_report(
            graph, program[0], compact_graph, blocks, removed, n=args.layers,
            threshold=args.layer_threshold, latency=latency))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports.write_text(out / "pruned.cfg", ir.write_cfg(compact_graph))
    frontends.save_variables(compact_graph, compact_vars, out / "pruned.weights")
    written = ["pruned.cfg", "pruned.weights"]
    if loaded.format == "torch":
        suffix = Path(args.weights).suffix
        for warning in frontends.save_variables(compact_graph, compact_vars,
                                                out / f"pruned{suffix}",
                                                header=loaded.header):
            warn(console, warning)
        written.append(f"pruned{suffix}")
    reports.write_json(out / "report.json", report)
    written.append("report.json")
    if channels:
        reports.plot_channels_kept(report, out / "channels.png")
        written.append("channels.png")
        console.print(render_table(channel_report))
        for line in summary_lines(channel_report):
            console.print(line, highlight=False)
        if "map50" in channel_report:
            console.print("mAP@0.5: " + ", ".join(
                f"{k.replace('_', ' ')} {v:.4f}" for k, v in channel_report["map50"].items()),
                highlight=False)
    if layers:
        for table in render_blocks_tables(report):
            console.print(table)
    console.print(f"wrote {', '.join(written)} to {out}/ in "
                  f"{time.perf_counter() - t0:.1f} s")
    return 0


def evaluate_three_ways(data: str, program, result: passes.PruneResult) -> dict:
    """mAP@0.5 on the valid split of the original, γ-zeroed, keep-size and compact
    networks, with the seed's protocol (conf 0.01, NMS 0.5, IoU 0.5)."""
    from runtime.data import load_dataset
    from runtime.metrics import evaluate

    valid = load_dataset(data, "valid")
    networks = {"original": program, "gamma_zeroed": result.gamma_zeroed,
                "keep_size": result.keep_size, "compact": result.compact}
    return {name: evaluate(*net, valid, coco=False).map50 for name, net in networks.items()}


def render_table(report: dict) -> Table:
    table = Table(title=f"prune ({report['mode']} mode)")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("ratio", justify="right")

    def row(name, before, after, fmt="{:,}"):
        ratio = f"{after / before:.3f}" if before else ""
        table.add_row(name, fmt.format(before), fmt.format(after), ratio)

    row("prunable channels", report["prunable_channels_before"],
        report["prunable_channels_after"])
    row("conv channels", report["channels_before"], report["channels_after"])
    row("params", report["params_before"], report["params_after"])
    row("BFLOPs", report["bflops_before"], report["bflops_after"], "{:.3f}")
    return table


def summary_lines(report: dict) -> list[str]:
    lines = [f"threshold {report['threshold']:.4g} (percent {report['percent']:.3f}); "
             f"highest safe threshold {report['safe_threshold']:.4g} "
             f"(percent {report['safe_percent']:.3f})"]
    if report["max_abs_diff_keepsize_vs_compact"] is not None:
        lines.append(
            f"check at {'x'.join(map(str, report['check_size']))}: "
            f"max |keep-size − compact| {report['max_abs_diff_keepsize_vs_compact']:.2e}; "
            f"max |γ-zeroed − compact| {report['max_abs_diff_gamma_zeroed_vs_compact']:.2e}"
            " (the border effect of folding into k×k convs; by ring from the edge of the "
            "finest head: " + ", ".join(
                f"{v:.1e}" for v in report["border_effect"][-1]["max_abs_diff_by_ring"])
            + ")")
    return lines


def render_blocks_tables(report: dict) -> tuple[Table, Table]:
    """The layer prune: removed blocks with their scores; original vs final."""
    blocks = report["blocks"]
    removed = Table(title=f"removed blocks ({len(blocks['removed'])} of "
                    f"{blocks['found']} removable)")
    for column in ("shortcut", "layers", "γ conv", "score (mean |γ|)"):
        removed.add_column(column, justify="right")
    for b in blocks["removed"]:
        score = "" if b["score"] is None else f"{b['score']:.4g}"
        removed.add_row(str(b["shortcut"]), f"{b['layers'][0]}..{b['layers'][-1]}",
                        str(b["gamma_conv"]), score)
    totals = Table(title="layer prune: original vs final")
    totals.add_column("")
    for column in ("before", "blocks removed", "final", "ratio"):
        totals.add_column(column, justify="right")

    def row(name, before, middle, after, fmt):
        ratio = f"{after / before:.3f}" if before else ""
        totals.add_row(name, fmt.format(before), fmt.format(middle), fmt.format(after),
                       ratio)

    row("layers", blocks["layers_before"], blocks["layers_after"],
        blocks["layers_after"], "{:,}")
    row("params", report["params_before"], blocks["params_after"],
        report["params_after"], "{:,}")
    row("BFLOPs", report["bflops_before"], blocks["bflops_after"],
        report["bflops_after"], "{:.3f}")
    if report["latency_ms_before"] is not None:
        lat = report["latency"]
        totals.add_row("CPU latency ms", f"{report['latency_ms_before']:.1f}", "",
                       f"{report['latency_ms_after']:.1f}",
                       f"{report['latency_ms_after'] / report['latency_ms_before']:.3f}")
        totals.caption = (f"latency: median of {lat['repeats']} interleaved runs, batch "
                          f"{lat['batch']}, {lat['device']}, at the cfg's size; compile "
                          f"{lat['compile_s_before']:.1f} s / {lat['compile_s_after']:.1f} s "
                          "apart")
    return removed, totals
