"""Prune speed and memory: `darkslim prune` on full-width yolov3-416 against the seed's way.

Seeded random weights for the cfg (γ made sparse: `darkslim.testing.random_variables`,
``sparsity=0.6``) are written once as a Darknet ``.weights`` file (246 MB for yolov3).
Then, median of ``--repeats``:

- in process: each pass of the pipeline ``darkslim prune`` runs (parse + verify, load,
  analysis, threshold, masks, fold, slice, write), its wall time and the peak of the
  memory Python and numpy hold while it runs (tracemalloc, in a separate untimed run);
- whole process: ``darkslim prune CFG W --percent P --no-check --out DIR`` (the
  installed entry point), wall time and peak resident memory;
- the reference, measured in the same run the same way: the seed's job written the
  seed's way in torch (`benchmarks/reference/seed_prune_torch.py`), as a whole
  process too, so both pay their interpreter and imports. Its output is checked
  against darkslim's (same prunable layers, threshold and filters per conv; compact
  weights allclose) before any number is printed, so the two do the same job.

Columns: median wall seconds, CPU seconds (user + system; less sensitive than wall to
other processes on the machine), peak memory, and ratios to the torch reference.
``darkslim prune`` with its check (three forwards at a small size, numpy:
`darkslim.check`) runs interleaved with them, as a whole process too.
Peak RSS is read by ``/usr/bin/time -f %M``: a child's own ``ru_maxrss`` from
``wait4`` counts the forking parent's RSS too (it is inherited at fork), so it would
count this script's 250+ MB against every child.

    .venv/bin/python benchmarks/prune.py [--cfg yolov3.cfg] [--percent 0.5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import frontends  # noqa: E402
import ir  # noqa: E402
import passes  # noqa: E402
from benchmarks.engines import loadavg, machine  # noqa: E402
from darkslim import report as reports  # noqa: E402
from darkslim.testing import random_variables  # noqa: E402

SHARED_CFG = ROOT.parent / "shared" / "cfg"
DEFAULT_CFG = SHARED_CFG / "yolov3.cfg"
# The installed entry point; without a .venv here, the same CLI through `python -m`.
DARKSLIM = ([str(ROOT / ".venv" / "bin" / "darkslim")]
            if (ROOT / ".venv" / "bin" / "darkslim").exists()
            else [sys.executable, "-m", "darkslim.cli"])
REFERENCE = ROOT / "benchmarks" / "reference" / "seed_prune_torch.py"
TIME = "/usr/bin/time"
MB = 1e6


def run_child(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one child
    process, which must succeed."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        start = time.perf_counter()
        done = subprocess.run([TIME, "-f", "%U %S %M", "-o", tf.name, *argv], cwd=ROOT,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        user, system, rss_kb = tf.read().strip().splitlines()[-1].split()
    return wall, float(user) + float(system), int(rss_kb) * 1024 / MB


# ---------------------------------------------------------------- in process


def passes_in_process(cfg: Path, weights: Path, out: Path, percent: float, step):
    """The pipeline of ``darkslim prune --no-check``, one pass per ``step(name)``."""
    with step("parse + verify cfg"):
        graph = ir.parse_cfg(cfg)
        ir.verify(graph)
    with step("load weights"):
        loaded = frontends.load_variables(graph, weights)
        variables = loaded.variables
    with step("SlimChannels (analysis, threshold, masks, fold, slice)"):
        slim = passes.SlimChannels(percent=percent)
        result = passes.pipeline(slim).run(graph, variables)
        compact = (result.graph, result.variables)
    with step("write cfg + weights"):
        out.mkdir(parents=True, exist_ok=True)
        reports.write_text(out / "pruned.cfg", ir.write_cfg(compact[0]))
        frontends.save_variables(*compact, out / "pruned.weights")
    with step("report.json + channels.png"):
        reports.write_json(out / "report.json", passes.dump_reports(str(slim), result.reports))
        reports.plot_channels_kept(result.reports[0], out / "channels.png")


class Timer:
    """Wall and CPU seconds of each step."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name):
        timer = self

        class _Step:
            def __enter__(self):
                self.start = time.perf_counter()
                self.cpu = time.process_time()

            def __exit__(self, *exc):
                timer.seconds[name] = time.perf_counter() - self.start
                timer.cpu[name] = time.process_time() - self.cpu

        return _Step()


class Tracer:
    """Peak traced memory (Python + numpy) while each step runs, absolute."""

    def __init__(self):
        self.peak: dict[str, float] = {}

    def __call__(self, name):
        tracer = self

        class _Step:
            def __enter__(self):
                tracemalloc.reset_peak()

            def __exit__(self, *exc):
                tracer.peak[name] = tracemalloc.get_traced_memory()[1] / MB

        return _Step()


# ---------------------------------------------------------------- checks


def read_floats(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype=np.float32, offset=20)


def check_same_job(graph: ir.Graph, ours: Path, seed: Path) -> float:
    """Assert the reference did darkslim's job; return the max |weight difference|."""

    _, (a,) = passes.load_reports(json.loads((ours / "report.json").read_text()))
    b = json.loads((seed / "report.json").read_text())
    assert list(a.prunable) == b["prunable_layers"], (a.prunable, b["prunable_layers"])
    assert np.float32(a.threshold.value) == np.float32(b["threshold"]), (
        a.threshold.value, b["threshold"])
    ga, gb = ir.parse_cfg(ours / "pruned.cfg"), ir.parse_cfg(seed / "pruned.cfg")
    fa = [ga.layers[i].filters for i in graph.conv_indices()]
    fb = [gb.layers[i].filters for i in graph.conv_indices()]
    assert fa == fb, [(i, x, y) for i, x, y in zip(graph.conv_indices(), fa, fb) if x != y]
    assert fa != [graph.layers[i].filters for i in graph.conv_indices()], "nothing pruned"
    wa, wb = read_floats(ours / "pruned.weights"), read_floats(seed / "pruned.weights")
    assert wa.shape == wb.shape, (wa.shape, wb.shape)
    assert np.allclose(wa, wb, rtol=1e-5, atol=1e-5), float(np.abs(wa - wb).max())
    return float(np.abs(wa - wb).max())


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default=str(DEFAULT_CFG),
                        help="a cfg path, or a name in ../shared/cfg (default yolov3.cfg)")
    parser.add_argument("--percent", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--no-check-run", dest="check_run", action="store_false",
                        help="skip the runs of `darkslim prune` with its check")
    args = parser.parse_args()
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} not found: it measures each child's peak RSS")
    console = Console(width=120)
    load_start = loadavg()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cfg = Path(args.cfg)
    if not cfg.exists() and (SHARED_CFG / cfg).exists():  # a bare name: ../shared/cfg
        cfg = SHARED_CFG / cfg
    cfg = cfg.resolve()
    graph = ir.parse_cfg(cfg)
    r = args.repeats

    with tempfile.TemporaryDirectory(prefix="darkslim-prune-bench-") as tmp:
        d = Path(tmp)
        weights = d / "in.weights"
        variables = random_variables(graph, args.seed, sparsity=args.sparsity)
        frontends.save_variables(graph, variables, weights)
        del variables
        gc.collect()
        size = weights.stat().st_size

        # Whole processes, interleaved so both see the same background load.
        common = [str(cfg), str(weights), "--percent", str(args.percent)]
        ours_cmd = [*DARKSLIM, "prune", *common, "--no-check", "--out", str(d / "ours")]
        checked_cmd = [*DARKSLIM, "prune", *common, "--out", str(d / "checked")]
        seed_cmd = [sys.executable, str(REFERENCE), *common, "--out", str(d / "seed")]
        children = {
            "ours": ours_cmd, "seed": seed_cmd,
            **({"checked": checked_cmd} if args.check_run else {}),
            "imports": [sys.executable, "-c",
                        "import darkslim.cli, darkslim.commands.prune"],
            "mpl": [sys.executable, "-c", "from matplotlib.figure import Figure; "
                    "from matplotlib.backends.backend_agg import FigureCanvasAgg"],
            "torch": [sys.executable, "-c", "import torch"]}
        whole: dict[str, list] = {k: [] for k in children}
        seed_phases: list[dict] = []
        for _ in range(r):
            for key, argv in children.items():
                whole[key].append(run_child(argv))
            seed_phases.append(json.loads(
                (d / "seed" / "report.json").read_text())["seconds"])
        max_diff = check_same_job(graph, d / "ours", d / "seed")

        # In process: timed runs, then one traced run for memory.
        runs, cpus = [], []
        for _ in range(r):
            timer = Timer()
            passes_in_process(cfg, weights, d / "inproc", args.percent, timer)
            runs.append(timer.seconds)
            cpus.append(timer.cpu)
            gc.collect()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0] / MB
        tracer = Tracer()
        passes_in_process(cfg, weights, d / "inproc", args.percent, tracer)
        tracemalloc.stop()
        assert (d / "inproc" / "pruned.weights").read_bytes() == \
            (d / "ours" / "pruned.weights").read_bytes(), "in-process != CLI output"

        checked = (json.loads((d / "checked" / "checks.json").read_text())["slim_channels"][0]
                   if args.check_run else None)
    load_end = loadavg()

    def med(pairs, k):
        return statistics.median(p[k] for p in pairs)

    seed_wall, seed_rss = med(whole["seed"], 0), med(whole["seed"], 2)

    def ratio(x, ref):
        return f"{x / ref:.2f}×"

    table = Table(title=f"prune {cfg.name} --percent {args.percent} (regular mode): "
                        f"{size / MB:.0f} MB of weights, median of {r}")
    table.add_column("")
    table.add_column("wall s", justify="right")
    table.add_column("× torch", justify="right")
    table.add_column("cpu s", justify="right")
    table.add_column("peak MB", justify="right")
    table.add_column("× torch", justify="right")
    table.add_row("darkslim in process, by pass:", "", "", "", "", "")
    for name in runs[0]:
        wall = statistics.median(run[name] for run in runs)
        cpu = statistics.median(run[name] for run in cpus)
        table.add_row(f"  {name}", f"{wall:.3f}", ratio(wall, seed_wall), f"{cpu:.3f}",
                      f"{tracer.peak[name] - base:.0f}ᵗ", "")
    total = statistics.median(sum(run.values()) for run in runs)
    cpu = statistics.median(sum(run.values()) for run in cpus)
    table.add_row("darkslim in-process total", f"{total:.3f}", ratio(total, seed_wall),
                  f"{cpu:.3f}", f"{max(tracer.peak.values()) - base:.0f}ᵗ", "",
                  end_section=True)
    for key, name in (("imports", "  python -c 'import darkslim.commands.prune'"),
                      ("mpl", "  python -c 'import matplotlib Figure, Agg'"),
                      ("ours", "darkslim prune --no-check (whole process)"),
                      ("checked", "darkslim prune, with its check (whole process)"),
                      ("torch", "  python -c 'import torch'"),
                      ("seed", "seed-style torch (whole process)")):
        if key not in whole:
            continue
        wall, cpu, rss = (med(whole[key], k) for k in range(3))
        table.add_row(name, f"{wall:.3f}", ratio(wall, seed_wall), f"{cpu:.3f}",
                      f"{rss:.0f}", ratio(rss, seed_rss))
    console.print(f"{started}; {machine()}")
    console.print(f"load average (1/5/15 min) at start {load_start}, at end {load_end} "
                  "(other processes share this machine)")
    console.print(table)
    console.print("ᵗ in-process peak: memory traced by tracemalloc (Python + numpy) "
                  "while that pass ran, above the baseline before parsing; "
                  "whole-process peak: resident set (/usr/bin/time %M)")
    if checked is not None:
        keep = checked["max_abs_diff_keepsize_vs_compact"]
        zeroed = checked["max_abs_diff_gamma_zeroed_vs_compact"]
        rings = "; ".join(
            f"head {h['layer']} ({h['grid'][0]}x{h['grid'][1]}): "
            + ", ".join(f"{v:.2e}" for v in h["max_abs_diff_by_ring"])
            for h in checked["border_effect"])
        console.print(f"check run at {checked['check_size'][0]} px: max |keep-size − "
                      f"compact| {keep:.2e}, max |γ-zeroed − compact| {zeroed:.2e}; "
                      f"by ring from the edge: {rings}")
    console.print(f"same job: prunable layers, threshold, filters per conv equal; compact "
                  f"weights max |darkslim − torch| = {max_diff:.2e}")
    console.print("every whole-process run (wall s / peak MB): darkslim "
                  + ", ".join(f"{w:.2f}/{m:.0f}" for w, _, m in whole["ours"])
                  + "; torch " + ", ".join(f"{w:.2f}/{m:.0f}" for w, _, m in whole["seed"])
                  + ("; with check " + ", ".join(f"{w:.2f}/{m:.0f}"
                                                 for w, _, m in whole["checked"])
                     if "checked" in whole else ""))
    phases = Table(title="seed-style torch reference, by phase (median)")
    phases.add_column("phase")
    phases.add_column("s", justify="right")
    for name in seed_phases[0]:
        phases.add_row(name, f"{statistics.median(p[name] for p in seed_phases):.3f}")
    console.print(phases)


if __name__ == "__main__":
    main()
