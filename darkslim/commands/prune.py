"""`darkslim prune MODEL.cfg WEIGHTS (--pipeline T | --percent P | --target-speedup X) --out DIR`.

(Over 400 lines: the flags, the pipeline they spell, and the files and checks the
command writes are one user contract, kept in one module.)

Runs a pipeline of passes, e.g. ``--pipeline "remove-blocks{n=8},slim-channels{percent=0.5}"``;
the flags --layers/--layer-threshold (remove-blocks) and --percent/--threshold with
--mode, --ignore, --min-keep, --round-to (slim-channels) are shorthand for it, blocks
first; --target-speedup X or --target-latency MS with --engine E is shorthand for
slim-to-latency, which prunes to a latency budget predicted by a per-layer table
measured on the engine (kept in --latency-table FILE, default under
~/.cache/darkslim/latency/; re-measured when its engine, version, CPU, input size,
graph or thread count differ), then measures the pruned network on the engine for real
(checks.json "latency_model": predicted vs measured).
Writes DIR/pruned.cfg, DIR/pruned.weights (plus a checkpoint in the input's own torch
layout when the input is one), DIR/report.json (what every pass decided),
DIR/checks.json (what the prune costs: keep-size and γ-zeroed vs compact on a random
input, mAP with --data, CPU latency when blocks were removed) and DIR/channels.png.
Nothing is written when the prune fails (exit status 2). The pruned cfg and weights
are written before the checks run: a check that runs out of memory (or finds no input
size up to 640 it can run at) is skipped, said so on stderr and in checks.json
("check_skipped"), with every file still written and exit status 3.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from rich.console import JustifyMethod
from rich.table import Table

import frontends
import ir
import passes
from darkslim import report as reports
from darkslim.ui import make_console, warn

# Shorthand flag -> (pass, argument); errors about an argument name the flag.
FLAGS = {"--layers": ("remove-blocks", "n"),
         "--layer-threshold": ("remove-blocks", "threshold"),
         "--percent": ("slim-channels", "percent"),
         "--threshold": ("slim-channels", "threshold"),
         "--mode": ("slim-channels", "mode"), "--ignore": ("slim-channels", "ignore"),
         "--min-keep": ("slim-channels", "min_keep"),
         "--round-to": ("slim-channels", "round_to"),
         "--target-speedup": ("slim-to-latency", "target_speedup"),
         "--target-latency": ("slim-to-latency", "target_ms")}
SHAPING = ("--mode", "--ignore", "--min-keep", "--round-to")  # either channel pass


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise passes.PruneError(f"--ignore {text}: expected comma-separated layer "
                                "indices such as 84,96") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer such as 64")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="prune BN channels by |γ| (network slimming) and "
                       "residual blocks", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS", help=".weights, .pt/.pth or .msgpack")
    p.add_argument("--pipeline", metavar="TEXT",
                   help="passes to run, e.g. 'remove-blocks{n=8},slim-channels{percent=0.5,"
                   "mode=shortcut}' (instead of the shorthand flags below)")
    how = p.add_mutually_exclusive_group()  # or neither, with --layers
    how.add_argument("--percent", type=float, metavar="P",
                     help="fraction of prunable channels to drop (the seed's global rule)")
    how.add_argument("--threshold", type=float, metavar="T",
                     help="drop channels with |γ| < T")
    how.add_argument("--target-speedup", type=float, metavar="X",
                     help="prune to a predicted speed-up of X on --engine (slim-to-latency: "
                     "keeps the most Σ|γ| under the budget)")
    how.add_argument("--target-latency", type=float, metavar="MS",
                     help="prune to a predicted latency of MS milliseconds on --engine")
    p.add_argument("--engine", default="onnxruntime", metavar="E",
                   help="with --target-*: the engine the latency table is measured on "
                   "(onnxruntime; openvino and darkslim are not implemented yet)")
    p.add_argument("--latency-table", default=None, metavar="FILE",
                   help="with --target-*: the latency table's JSON (measured and written "
                   "when missing or measured for another key)")
    p.add_argument("--threads", type=_positive, default=1, metavar="N",
                   help="with --target-*: the engine's intra-op threads for the table and "
                   "the measured check (default 1: steady timings on a shared machine)")
    depth = p.add_mutually_exclusive_group()
    depth.add_argument("--layers", type=int, metavar="N",
                       help="remove the N residual blocks whose last BN conv has the "
                       "lowest mean |γ| (layer pruning; before any channel pruning)")
    depth.add_argument("--layer-threshold", type=float, metavar="T",
                       help="remove every residual block whose score is below T")
    p.add_argument("--latency-repeats", type=int, default=5, metavar="K",
                   help="when blocks are removed: CPU latency before/after, median of K "
                   "runs at batch 1; with --target-*: the engine's latency of the input "
                   "and the pruned network, and the table's repeats (0: skip)")
    p.add_argument("--mode", choices=("regular", "shortcut"), default=None,
                   help="regular (default): shortcut groups stay whole (the seed); "
                   "shortcut: each group is pruned with one shared mask")
    p.add_argument("--ignore", type=_indices, default=None, metavar="L,...",
                   help="conv layer indices to keep whole, e.g. 84,96")
    p.add_argument("--min-keep", type=float, default=None, metavar="F",
                   help="keep at least this fraction of every layer (default 0.01), and "
                   "at least one channel (0: no floor; a layer that would empty is an error)")
    p.add_argument("--round-to", type=int, default=None, metavar="N",
                   help="round kept channel counts up to multiples of N")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="torch checkpoints: the BatchNorm eps they were trained with")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the forward passes that measure keep-size vs compact")
    p.add_argument("--check-size", type=_positive, default=None, metavar="N",
                   help="run the check at NxN (default: the smallest multiple of the "
                   "network's stride >= 64 it runs at, at most the cfg's size and 640)")
    p.add_argument("--data", metavar="DATA.data",
                   help="also evaluate mAP@0.5 on its valid split: original, γ zeroed, "
                   "keep-size and compact (the seed's three-way check)")
    p.add_argument("--export", choices=("onnx",), default=None,
                   help="also write pruned.onnx (BN folded, opset 17) and time it "
                   "against the original under onnxruntime (--latency-repeats runs)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept a .weights file holding fewer convs than the cfg (the "
                   "rest freshly initialised); *.conv.N backbones are always accepted")
    p.set_defaults(func=run)


def _flag_value(args, flag: str):
    return getattr(args, flag[2:].replace("-", "_"))


def _flag_error(exc: passes.PruneError, args) -> passes.PruneError:
    """The library's error about an argument, worded with the flag the user gave
    (``percent=1.5: expected ...`` becomes ``--percent 1.5: expected ...``)."""
    root = exc
    while isinstance(root.__cause__, passes.PruneError):
        root = root.__cause__
    pass_name = exc.pass_name or root.pass_name
    for flag, (name, argument) in FLAGS.items():
        value = _flag_value(args, flag)
        names = (name, "slim-to-latency", None) if flag in SHAPING else (name, None)
        if value is None or root.argument != argument or pass_name not in names:
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        head, _, rest = str(root).partition(": ")
        text = rest if rest and head.startswith(f"{argument}=") else str(root)
        return passes.PruneError(f"{flag} {shown}: {text}", argument=argument,
                                 pass_name=pass_name)
    return exc


def build_pipeline(args) -> passes.Pipeline:
    """The pipeline of ``--pipeline``, or the one the shorthand flags stand for."""
    given = [flag for flag in FLAGS if _flag_value(args, flag) is not None]
    if args.pipeline is not None:
        if given:
            raise passes.PruneError(f"--pipeline with {', '.join(given)}: give the "
                                    "pipeline or the shorthand flags, not both")
        return passes.parse_pipeline(args.pipeline)
    steps: list[passes.Pass] = []
    try:
        if args.layers is not None or args.layer_threshold is not None:
            steps.append(passes.RemoveBlocks(n=args.layers, threshold=args.layer_threshold))
        options = {k: v for k, v in (("mode", args.mode), ("ignore", args.ignore),
                                      ("min_keep", args.min_keep),
                                      ("round_to", args.round_to)) if v is not None}
        if args.percent is not None or args.threshold is not None:
            steps.append(passes.SlimChannels(percent=args.percent,
                                             threshold=args.threshold, **options))
        elif args.target_speedup is not None or args.target_latency is not None:
            steps.append(passes.SlimToLatency(target_speedup=args.target_speedup,
                                              target_ms=args.target_latency,
                                              engine=args.engine, **options))
        elif any(f in given for f in SHAPING):
            raise passes.PruneError("--mode, --ignore, --min-keep and --round-to shape the "
                                    "channel prune: give --percent, --threshold, "
                                    "--target-speedup or --target-latency too")
    except passes.PruneError as exc:
        raise _flag_error(exc, args) from exc
    if not steps:
        raise passes.PruneError("nothing to prune: give --pipeline, or --percent, "
                                "--threshold, --target-speedup, --target-latency, "
                                "--layers or --layer-threshold")
    return passes.pipeline(*steps)


CHANNEL_PASSES = (passes.SlimChannels, passes.SlimToLatency)


def run(args) -> int:
    pipe = build_pipeline(args)
    if any(isinstance(p, CHANNEL_PASSES) for p in pipe.passes):
        with reports.ChartProcess() as charts:  # channels.png, drawn at the end
            return _run(args, pipe, charts)
    return _run(args, pipe, None)


def _run(args, pipe: passes.Pipeline, charts) -> int:
    console = make_console()
    t0 = time.perf_counter()
    graph = ir.parse_cfg(args.cfg)
    ir.verify(graph)
    loaded = frontends.load_variables(graph, args.weights, bn_eps=args.bn_eps,
                                      allow_partial=args.allow_partial)
    for warning in loaded.warnings:
        warn(console, warning)
    tables: dict[int, dict] = {}
    try:
        pipe = fill_latency_tables(args, console, pipe, graph, loaded.variables, tables)
        result = pipe.run(graph, loaded.variables, keep_inputs=True)
    except passes.PruneError as exc:
        raise (_flag_error(exc, args) if args.pipeline is None else exc) from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports.write_text(out / "pruned.cfg", ir.write_cfg(result.graph))
    frontends.save_variables(result.graph, result.variables, out / "pruned.weights")
    written = ["pruned.cfg", "pruned.weights"]
    if loaded.format == "torch":
        suffix = Path(args.weights).suffix
        for warning in frontends.save_variables(result.graph, result.variables,
                                                out / f"pruned{suffix}",
                                                header=loaded.header):
            warn(console, warning)
        written.append(f"pruned{suffix}")
    checks = run_checks(args, console, pipe, result, (graph, loaded.variables), tables)
    if args.export == "onnx":
        from darkslim.onnx_deploy import export_pruned

        with console.status("exporting pruned.onnx, timing it under onnxruntime..."):
            checks["onnx"] = export_pruned(
                out, (graph, loaded.variables), (result.graph, result.variables),
                bn_eps=frontends.RUNTIME_BN_EPS if loaded.format == "torch" or
                args.bn_eps is None else args.bn_eps, repeats=args.latency_repeats)
        written.append("pruned.onnx")
    reports.write_json(out / "report.json", passes.dump_reports(str(pipe), result.reports))
    reports.write_json(out / "checks.json", checks)
    written += ["report.json", "checks.json"]
    slims = [r for r in result.reports if isinstance(r, passes.SlimReport)]
    if slims:
        charts.draw(reports.plot_channels_kept, slims[-1], out / "channels.png")
        written.append("channels.png")
    print_reports(console, result.reports, checks)
    console.print(f"ran {pipe}; wrote {', '.join(written)} to {out}/ in "
                  f"{time.perf_counter() - t0:.1f} s", highlight=False)
    if "onnx" in checks:
        from darkslim.onnx_deploy import onnx_summary

        console.print(onnx_summary(checks["onnx"]), highlight=False)
    skipped = [c[key] for c in checks["slim_channels"]
               for key in ("check_skipped", "map50_skipped") if key in c]
    if skipped:
        from darkslim.ui import error

        errors = make_console(stderr=True)
        for message in skipped:
            error(errors, message)
        return CHECK_SKIPPED
    return 0


# Exit status when the pruned files are written but a check could not run.
CHECK_SKIPPED = 3


def _needed(exc: BaseException) -> str:
    """What the failed allocation asked for, from numpy's or XLA's message."""
    text = str(exc)
    found = re.search(r"allocate ([0-9.]+ [KMGTP]?i?B)", text)
    if found:
        return found.group(1)
    found = re.search(r"allocate (\d+) bytes", text)
    if found:
        return f"{int(found.group(1)) / 2**30:.1f} GiB"
    return "more memory than is free"


def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: numpy's (a MemoryError) or XLA's RESOURCE_EXHAUSTED."""
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError)
                                            and "RESOURCE_EXHAUSTED" in str(exc))


def _skipped(what: str, exc: BaseException) -> str:
    if out_of_memory(exc):
        first = str(exc).splitlines()[0] if str(exc) else "out of memory"
        why = f"{what} needs {_needed(exc)} ({type(exc).__name__}: {first})"
    else:
        why = str(exc)
    return (f"check skipped: {why}; the pruned files are written; rerun with --no-check "
            "or --check-size N (a smaller N)")


def fill_latency_tables(args, console, pipe: passes.Pipeline, graph: ir.Graph, variables,
                        tables: dict[int, dict]) -> passes.Pipeline:
    """``pipe`` with every slim-to-latency pass given the latency table of the graph it
    will run on (loaded from --latency-table or the cache when its key matches, else
    measured with a progress bar and written); ``tables`` gets, per pass index, where
    the table is and whether it was measured now."""
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from darkslim.latency_table import load_or_measure

    steps = list(pipe.passes)
    for k, p in enumerate(steps):
        if not isinstance(p, passes.SlimToLatency) or p.table is not None:
            continue
        program = passes.pipeline(*steps[:k])(graph, variables) if k else (graph, variables)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(f"latency table on {p.engine}", total=None)

            def progress(done: int, total: int, what: str, bar=bar, task=task,
                         engine=p.engine) -> None:
                bar.update(task, completed=done, total=total,
                           description=f"latency table on {engine}: {what}")

            loaded = load_or_measure(*program, p.engine, args.latency_table,
                                     threads=args.threads, progress=progress,
                                     repeats=max(args.latency_repeats, 1))
        if loaded.measured:
            console.print(f"latency table: {loaded.why}; measured {loaded.table.summary} "
                          f"in {loaded.seconds:.0f} s, wrote {loaded.path}", highlight=False)
        else:
            console.print(f"latency table: {loaded.why}", highlight=False)
        tables[k] = {"path": str(loaded.path), "measured": loaded.measured,
                     "why": loaded.why, "key": loaded.table.key.summary}
        steps[k] = dataclasses.replace(p, table=loaded.table)
    return passes.pipeline(*steps)


def measure_latency_model(args, report: passes.LatencyReport, original, compact) -> dict:
    """The pruned network measured for real on the engine against its input (ONNX
    export of both, interleaved), beside the table's predictions."""
    from darkslim.onnx_deploy import onnx_latencies

    repeats = max(args.latency_repeats, 1)
    before, after = onnx_latencies((original, compact), repeats=repeats, warmup=1,
                                   threads=args.threads)
    return {"engine": report.table.engine, "threads": report.table.threads,
            "repeats": repeats, "target_ms": report.target_ms,
            "predicted_ms_before": report.predicted_before_ms,
            "predicted_ms_after": report.predicted_after_ms,
            "predicted_speedup": report.predicted_speedup,
            "measured_ms_before": before, "measured_ms_after": after,
            "measured_speedup": before / after,
            "error": (report.predicted_speedup - before / after) / (before / after)}


def run_checks(args, console, pipe: passes.Pipeline, result: passes.PipelineResult,
               original, tables: dict[int, dict] | None = None) -> dict:
    """checks.json: per slim-channels (or slim-to-latency) pass, keep-size and
    γ-zeroed vs compact (and mAP with --data; for slim-to-latency, its table and the
    pruned network's predicted vs measured latency on the engine); with blocks
    removed, CPU latency of the original and final network."""
    slim = []
    for k, report in enumerate(result.reports):
        if not isinstance(report, passes.SlimReport):
            continue
        after = (result.inputs[k + 1] if k + 1 < len(result.inputs)
                 else (result.graph, result.variables))
        config = pipe.passes[k]
        assert isinstance(config, CHANNEL_PASSES)  # the passes that make a SlimReport
        pruned = passes.PruneResult(config=config, report=report,  # type: ignore[arg-type]
                                    original=result.inputs[k], compact=after)
        entry: dict = {"pass": k, "max_abs_diff_keepsize_vs_compact": None,
                       "max_abs_diff_gamma_zeroed_vs_compact": None}
        if args.check:
            from darkslim.check import CheckSizeError, check_size, measure_prune_diffs

            with console.status("checking keep-size vs compact on a small random input..."):
                size = args.check_size
                try:
                    size = size or check_size(pruned.original[0])
                    entry.update(measure_prune_diffs(pruned.original[0], pruned, size=size))
                except (MemoryError, RuntimeError, CheckSizeError) as exc:
                    if not (out_of_memory(exc) or isinstance(exc, CheckSizeError)):
                        raise
                    entry["check_skipped"] = _skipped(
                        f"keep-size vs compact at {size}x{size}", exc)
        if isinstance(report, passes.LatencyReport):
            entry["latency_table"] = (tables or {}).get(k)
        if isinstance(report, passes.LatencyReport) and args.latency_repeats > 0:
            with console.status(f"measuring the pruned network on {report.table.engine} "
                                "(interleaved with its input)..."):
                entry["latency_model"] = measure_latency_model(args, report,
                                                               pruned.original, after)
        if args.data:
            with console.status("evaluating mAP@0.5 of the four networks..."):
                try:
                    entry["map50"] = evaluate_three_ways(args.data, pruned.original, pruned)
                except (MemoryError, RuntimeError) as exc:
                    if not out_of_memory(exc):
                        raise
                    entry["map50_skipped"] = _skipped("mAP@0.5 of the four networks", exc)
        slim.append(entry)
    latency = None
    blocks = any(isinstance(r, passes.BlocksReport) for r in result.reports)
    if blocks and args.latency_repeats > 0:
        from darkslim.latency import measure_latency

        with console.status("measuring CPU latency before and after..."):
            latency = measure_latency([original, (result.graph, result.variables)],
                                      repeats=args.latency_repeats)
    return {"slim_channels": slim, "latency": reports.latency_json(latency)}


def evaluate_three_ways(data: str, program, result: passes.PruneResult) -> dict:
    """mAP@0.5 on the valid split of the original, γ-zeroed, keep-size and compact
    networks, with the seed's protocol (conf 0.01, NMS 0.5, IoU 0.5)."""
    from runtime.data import load_dataset
    from runtime.metrics import evaluate

    valid = load_dataset(data, "valid")
    networks = {"original": program, "gamma_zeroed": result.gamma_zeroed,
                "keep_size": result.keep_size, "compact": result.compact}
    return {name: evaluate(net[0], net[1], valid, coco=False).map50
            for name, net in networks.items()}


def print_reports(console, results: tuple[passes.PassReport, ...], checks: dict) -> None:
    slim_checks = iter(checks["slim_channels"])
    last_slim = max((k for k, r in enumerate(results) if isinstance(r, passes.SlimReport)),
                    default=None)
    for k, report in enumerate(results):
        if isinstance(report, passes.SlimReport):
            # The onnxruntime row (prune --export onnx) times the whole pipeline's result.
            onnx = checks.get("onnx") if k == last_slim else None
            console.print(render_table(report, onnx))
            for line in summary_lines(report, next(slim_checks)):
                console.print(line, highlight=False)
        elif isinstance(report, passes.BlocksReport):
            console.print(render_blocks_table(report))
    if any(isinstance(r, passes.BlocksReport) for r in results):
        console.print(render_totals(results[0].before, results[-1].after,
                                    checks["latency"]))


def _ratio_row(table: Table, name: str, before, after, fmt="{:,}") -> None:
    ratio = f"{after / before:.3f}" if before else ""
    table.add_row(name, fmt.format(before), fmt.format(after), ratio)


def render_table(report: passes.SlimReport, onnx: dict | None = None) -> Table:
    table = Table(title=report.text)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("", "left"), ("before", "right"), ("after", "right"), ("ratio", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    kept, total = report.prunable_channels
    _ratio_row(table, "prunable channels", total, kept)
    _ratio_row(table, "conv channels", report.before.channels, report.after.channels)
    _ratio_row(table, "params", report.before.params, report.after.params)
    _ratio_row(table, "BFLOPs", report.before.bflops, report.after.bflops, "{:.3f}")
    if onnx and onnx.get("onnxruntime_ms_before") is not None:
        _ratio_row(table, "onnxruntime ms", onnx["onnxruntime_ms_before"],
                   onnx["onnxruntime_ms_after"], "{:.2f}")
    return table


def summary_lines(report: passes.SlimReport, check: dict) -> list[str]:
    t = report.threshold
    lines = [f"threshold {t.value:.4g} (percent {t.percent:.3f}); highest safe threshold "
             f"{t.safe_value:.4g} (percent {t.safe_percent:.3f})"]
    if isinstance(report, passes.LatencyReport):
        lines = [f"latency model ({report.table.summary}): budget {report.target_ms:.2f} ms; "
                 f"predicted {report.predicted_before_ms:.2f} → "
                 f"{report.predicted_after_ms:.2f} ms ({report.predicted_speedup:.2f}×); "
                 f"{t.percent:.1%} of prunable channels dropped ({report.method})"]
        m = check.get("latency_model")
        if m:
            lines.append(f"measured on {m['engine']} ({m['threads']} thread(s), median of "
                         f"{m['repeats']} interleaved runs): {m['measured_ms_before']:.2f} → "
                         f"{m['measured_ms_after']:.2f} ms ({m['measured_speedup']:.2f}×; "
                         f"predicted {m['predicted_speedup']:.2f}×, "
                         f"{m['error']:+.1%})")
    if check["max_abs_diff_keepsize_vs_compact"] is not None:
        lines.append(
            f"check at {'x'.join(map(str, check['check_size']))}: "
            f"max |keep-size − compact| {check['max_abs_diff_keepsize_vs_compact']:.2e}; "
            f"max |γ-zeroed − compact| {check['max_abs_diff_gamma_zeroed_vs_compact']:.2e}"
            " (the border effect of folding into k×k convs" + (
                "; by ring from the edge of the finest head: " + ", ".join(
                    f"{v:.1e}" for v in check["border_effect"][-1]["max_abs_diff_by_ring"])
                if check.get("border_effect") else "") + ")")
    if "map50" in check:
        lines.append("mAP@0.5: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}"
                                             for k, v in check["map50"].items()))
    return lines


def render_blocks_table(report: passes.BlocksReport) -> Table:
    """The blocks a remove-blocks pass removed, with their scores."""
    table = Table(title=f"{report.text}: removed blocks ({len(report.removed)} of "
                  f"{report.found} removable)")
    for column in ("shortcut", "layers", "γ conv", f"score ({report.score})"):
        table.add_column(column, justify="right")
    for b in report.removed:
        table.add_row(str(b.shortcut), f"{b.layers[0]}..{b.layers[-1]}", str(b.gamma_conv),
                      "" if b.score is None else f"{b.score:.4g}")
    return table


def render_totals(before: passes.Counts, after: passes.Counts, latency: dict | None
                  ) -> Table:
    """Original vs final network, with the CPU latency when it was measured."""
    table = Table(title="original vs final")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("", "left"), ("before", "right"), ("final", "right"), ("ratio", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    _ratio_row(table, "layers", before.layers, after.layers)
    _ratio_row(table, "params", before.params, after.params)
    _ratio_row(table, "BFLOPs", before.bflops, after.bflops, "{:.3f}")
    if latency is not None:
        _ratio_row(table, "CPU latency ms", latency["ms_before"], latency["ms_after"],
                   "{:.1f}")
        table.caption = (f"latency: median of {latency['repeats']} interleaved runs, batch "
                         f"{latency['batch']}, {latency['device']}, at the cfg's size; "
                         f"compile {latency['compile_s_before']:.1f} s / "
                         f"{latency['compile_s_after']:.1f} s apart")
    return table
