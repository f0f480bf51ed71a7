"""The latency model on a real network: does the table predict onnxruntime, and does
`slim-to-latency` buy the speed-up it is asked for?

yolov3 at 416 (``--cfg`` for others) with ``ir.init_variables(graph, "sparse", seed=0)``.
The `LatencyTable` is measured first (onnxruntime, batch 1, ``--threads`` intra-op
threads), then:

(a) ``--prunes`` random prunes -- half a global |γ| threshold at a random percent
    (regular or shortcut mode), half random per-unit keep fractions -- are exported to
    ONNX and timed interleaved with the unpruned reference in one run; the table's
    prediction of each is compared with its measured time: Spearman ρ of the ranks and
    the median |error| (targets: ρ >= 0.95, median error <= 15%).
(b) ``slim-to-latency{target_speedup=X}``: its measured speed-up over the reference,
    and its Σ|γ| kept against a global-threshold prune whose percent is bisected until
    its *measured* latency matches (each step timed interleaved with the reference and
    the slim-to-latency network).

Every latency is a median of ``--repeats`` interleaved runs of one process; compare
ratios, not absolute times, on a shared machine. Prints tables; ``--json`` writes every
number.

With ``--weights`` a trained network replaces the seeded γ, and with ``--data`` (b) also
gives mAP@0.5 on the valid split right after each prune (the global prune's interpolated
between the bracketing bisection steps), e.g. the real-data benchmark's sparse network:

    .venv/bin/python benchmarks/latency_model.py [--cfg ../shared/cfg/yolov3.cfg]
        [--size 416] [--prunes 20] [--repeats 5] [--speedup 2] [--threads 1]
    .venv/bin/python benchmarks/latency_model.py --cfg build/real/model.cfg
        --weights build/real/sparse/last.weights --data build/real/data/raccoon.data
        --skip-random
"""

from __future__ import annotations

import argparse
import json
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
from darkslim.latency_table import measure_latency_table  # noqa: E402
from darkslim.onnx_deploy import onnx_latencies  # noqa: E402
from passes import tree  # noqa: E402


def spearman(a, b) -> float:
    """Spearman's ρ (average ranks for ties)."""
    def ranks(x):
        x = np.asarray(x, float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def kept_gamma(graph: ir.Graph, variables, masks: passes.ChannelMasks,
               units: tuple[tuple[int, ...], ...]) -> float:
    """Σ|γ| of the kept channels over the given units' convs."""
    by = masks.as_dict()
    total = 0.0
    for unit in units:
        for i in unit:
            gamma = np.abs(np.asarray(tree.get(variables, i, tree.GAMMA), np.float64))
            total += float(gamma[by[i]].sum()) if i in by else float(gamma.sum())
    return total


def random_prune(graph, variables, rng, k: int):
    """The k-th random prune: (label, compact program, masks, analysis units)."""
    mode = "shortcut" if k % 4 in (1, 2) else "regular"
    if k % 2 == 0:
        percent = float(rng.uniform(0.1, 0.9))
        result = passes.SlimChannels(percent=percent, mode=mode).run(graph, variables)
        return (f"global {percent:.2f} {mode}", (result.graph, result.variables),
                result.report.masks, result.report.units)
    analysis = passes.analyze_prunability(graph, mode)
    lo = float(rng.uniform(0.05, 0.6))
    masks = {}
    for unit in analysis.units:
        score = passes.slim_latency.unit_importance(graph, variables, unit)
        count = max(1, int(round(rng.uniform(lo, 1.0) * len(score))))
        keep = np.zeros(len(score), bool)
        keep[np.argsort(-score, kind="stable")[:count]] = True
        for i in unit:
            masks[i] = keep
    cm = passes.ChannelMasks.from_arrays(masks, graph)
    out = passes.SliceChannels(cm)(*passes.FoldPrunedBias(cm)(graph, variables))
    return f"per-unit U({lo:.2f},1) {mode}", out, cm, analysis.units


def time_onnx(programs, repeats: int, threads: int) -> list[float]:
    return list(onnx_latencies(programs, repeats=repeats, warmup=1, threads=threads))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", default=str(ROOT.parent / "shared" / "cfg" / "yolov3.cfg"))
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--prunes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--table-repeats", type=int, default=5)
    ap.add_argument("--speedup", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bisect", type=int, default=7, help="bisection steps on percent")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--weights", default=None, help="trained weights (e.g. the real-data "
                    "benchmark's sparse/last.weights) instead of the seeded sparse γ")
    ap.add_argument("--data", default=None, help="DATA.data: (b) also compares mAP@0.5 on "
                    "its valid split (slim-to-latency vs the global prune at the same "
                    "measured latency, right after the prune)")
    ap.add_argument("--skip-random", action="store_true", help="skip (a)")
    args = ap.parse_args()
    console = Console(width=150)
    graph = ir.with_input_size(ir.parse_cfg(args.cfg), args.size)
    if args.weights:
        import frontends
        variables = frontends.load_variables(graph, args.weights).variables
    else:
        variables = ir.init_variables(graph, "sparse", seed=0)
    valid = None
    if args.data:
        from runtime.data import load_dataset
        valid = load_dataset(args.data, "valid")

    def map50(program) -> float | None:
        if valid is None:
            return None
        from runtime.metrics import evaluate
        return float(evaluate(program[0], program[1], valid, coco=False).map50)
    out: dict = {"cfg": Path(args.cfg).name, "size": args.size, "threads": args.threads,
                 "repeats": args.repeats, "loadavg_start": os.getloadavg()}
    t0 = time.perf_counter()
    table = measure_latency_table(graph, variables, repeats=args.table_repeats,
                                  threads=args.threads)
    out["table_s"] = time.perf_counter() - t0
    out["table"] = table.summary
    console.print(f"table: {table.summary}; calibration {table.calibration:.3f}; "
                  f"measured in {out['table_s']:.0f} s")

    # (a) random prunes, predicted vs measured
    if args.skip_random:
        args.prunes = 0
    rng = np.random.default_rng(args.seed)
    prunes = [random_prune(graph, variables, rng, k) for k in range(args.prunes)]
    # The reference three times among the prunes (first, middle, last of each round):
    # its median of the three is steadier against load that shifts within a round.
    half = len(prunes) // 2
    programs = ([(graph, variables)] + [p[1] for p in prunes[:half]] + [(graph, variables)]
                + [p[1] for p in prunes[half:]] + [(graph, variables)])
    timed = time_onnx(programs, args.repeats, args.threads)
    refs = [timed[0], timed[half + 1], timed[-1]]
    measured = timed[1:half + 1] + timed[half + 2:-1]
    ref_meas, ref_pred = statistics.median(refs), table.predict(graph).total_ms
    predicted = [table.predict(p[1][0]).total_ms for p in prunes]
    rows = []
    for (label, (g, _), _, _), m, p in zip(prunes, measured, predicted):
        rows.append({"prune": label, "bflops": ir.count_flops(g) / 1e9, "measured_ms": m,
                     "predicted_ms": p, "abs_error": (p - m) / m,
                     "error": (p / ref_pred) / (m / ref_meas) - 1})
    rho = (spearman([r["measured_ms"] for r in rows], [r["predicted_ms"] for r in rows])
           if rows else float("nan"))
    med = statistics.median(abs(r["error"]) for r in rows) if rows else float("nan")
    t = Table(title=f"(a) {out['cfg']} {args.size}: predicted vs measured onnxruntime "
              f"latency, {args.threads} thread(s), median of {args.repeats} interleaved")
    for c in ("prune", "BFLOPs", "measured ms", "predicted ms", "measured ratio",
              "predicted ratio", "error", "abs. error"):
        t.add_column(c, justify="left" if c == "prune" else "right")
    t.add_row("reference (unpruned, median of 3 places)", f"{ir.count_flops(graph) / 1e9:.2f}",
              f"{ref_meas:.1f}", f"{ref_pred:.1f}", "1", "1", "",
              f"{(ref_pred - ref_meas) / ref_meas:+.1%}")
    for r in sorted(rows, key=lambda r: r["measured_ms"]):
        t.add_row(r["prune"], f"{r['bflops']:.2f}", f"{r['measured_ms']:.1f}",
                  f"{r['predicted_ms']:.1f}", f"{r['measured_ms'] / ref_meas:.3f}",
                  f"{r['predicted_ms'] / ref_pred:.3f}", f"{r['error']:+.1%}",
                  f"{r['abs_error']:+.1%}")
    med_abs = (statistics.median(abs(r["abs_error"]) for r in rows) if rows
               else float("nan"))
    t.caption = (f"Spearman ρ {rho:.3f} (target >= 0.95); median |error| {med:.1%} "
                 f"(<= 15%). error: predicted/measured, each as a ratio to the reference "
                 f"(the reference measured in this run, interleaved); abs. error: "
                 f"predicted ms vs measured ms, across runs (median {med_abs:.1%})")
    console.print(t)
    out["a"] = {"reference_measured_ms": ref_meas, "reference_runs_ms": refs,
                "reference_predicted_ms": ref_pred,
                "rows": rows, "spearman": rho, "median_abs_error": med,
                "median_abs_error_absolute": med_abs}

    # (b) slim-to-latency vs a global threshold at the same measured latency
    slt = passes.SlimToLatency(target_speedup=args.speedup, table=table).run(graph,
                                                                            variables)
    rep = slt.report
    slt_program = (slt.graph, slt.variables)
    units = rep.units
    slt_gamma = kept_gamma(graph, variables, rep.masks, units)
    full_gamma = kept_gamma(graph, variables, passes.ChannelMasks.from_arrays({}, graph),
                            units)
    ref_ms, slt_ms = time_onnx([(graph, variables), slt_program], args.repeats,
                               args.threads)
    lo, hi = 0.0, 0.99
    steps = []
    for _ in range(args.bisect):
        mid = (lo + hi) / 2
        g = passes.SlimChannels(percent=mid).run(graph, variables)
        r_ms, s_ms, g_ms = time_onnx([(graph, variables), slt_program, (g.graph, g.variables)],
                                     args.repeats, args.threads)
        gamma = kept_gamma(graph, variables, g.report.masks, g.report.units)
        steps.append({"percent": mid, "ratio_global": g_ms / r_ms, "ratio_slt": s_ms / r_ms,
                      "kept_gamma": gamma, "map50": map50((g.graph, g.variables))})
        if g_ms / r_ms > s_ms / r_ms:
            lo = mid
        else:
            hi = mid
    best = min(steps, key=lambda s: abs(s["ratio_global"] - s["ratio_slt"]))
    # Σ|γ| of a global prune at exactly slim-to-latency's measured latency: linear
    # between the two bisection steps that bracket it (each step's ratios are from
    # one interleaved measurement of reference, slim-to-latency and that global prune).
    slower = [s for s in steps if s["ratio_global"] >= s["ratio_slt"]]
    faster = [s for s in steps if s["ratio_global"] < s["ratio_slt"]]
    at_same = None
    if slower and faster:
        a = min(slower, key=lambda s: s["ratio_global"] - s["ratio_slt"])
        b = min(faster, key=lambda s: s["ratio_slt"] - s["ratio_global"])
        da, db = a["ratio_global"] - a["ratio_slt"], b["ratio_slt"] - b["ratio_global"]
        at_same = {"percent": (a["percent"] * db + b["percent"] * da) / (da + db),
                   "kept_gamma": (a["kept_gamma"] * db + b["kept_gamma"] * da) / (da + db),
                   "map50": None if valid is None else
                   (a["map50"] * db + b["map50"] * da) / (da + db)}
    slt_map = map50(slt_program)
    t = Table(title=f"(b) slim-to-latency{{target_speedup={args.speedup:g}}} vs a global "
              "threshold at the same measured latency")
    def fmt(value) -> str:
        return "" if value is None else f"{value:.4f}"

    for c in ("prune", "measured ms / ref", "speed-up", "predicted speed-up", "Σ|γ| kept",
              "mAP@0.5"):
        t.add_column(c, justify="left" if c == "prune" else "right")
    t.add_row("reference", "1.000", "1.00x", "1.00x", f"{full_gamma:.1f} (100%)",
              fmt(map50((graph, variables))))
    t.add_row("slim-to-latency", f"{slt_ms / ref_ms:.3f}", f"{ref_ms / slt_ms:.2f}x",
              f"{rep.predicted_speedup:.2f}x",
              f"{slt_gamma:.1f} ({slt_gamma / full_gamma:.1%})", fmt(slt_map))
    t.add_row(f"global percent {best['percent']:.3f}", f"{best['ratio_global']:.3f}",
              f"{1 / best['ratio_global']:.2f}x", "",
              f"{best['kept_gamma']:.1f} ({best['kept_gamma'] / full_gamma:.1%})",
              fmt(best["map50"]))
    if at_same is not None:
        t.add_row(f"global percent {at_same['percent']:.3f} (interpolated)",
                  f"{slt_ms / ref_ms:.3f}", f"{ref_ms / slt_ms:.2f}x", "",
                  f"{at_same['kept_gamma']:.1f} ({at_same['kept_gamma'] / full_gamma:.1%})",
                  fmt(at_same["map50"]))
    t.caption = (f"reference {ref_ms:.1f} ms measured in the same run; the first global "
                 f"row is the bisection step nearest slim-to-latency's measured ratio "
                 f"({best['ratio_slt']:.3f} in that step), the second is interpolated "
                 f"between the two steps that bracket it")
    console.print(t)
    out["b"] = {"reference_ms": ref_ms, "slt_ms": slt_ms, "speedup": ref_ms / slt_ms,
                "predicted_speedup": rep.predicted_speedup, "slt_kept_gamma": slt_gamma,
                "slt_map50": slt_map,
                "full_gamma": full_gamma, "bisection": steps, "global_best": best,
                "global_at_same_latency": at_same,
                "channels": rep.channels}
    out["loadavg_end"] = os.getloadavg()
    console.print(f"load average {out['loadavg_start'][0]:.1f} at start, "
                  f"{out['loadavg_end'][0]:.1f} at end; {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
