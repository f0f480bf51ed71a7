"""The prune's check on every cfg of Darknet's zoo: `darkslim prune` with and without it.

For each ``*.cfg`` in ``--zoo DIR`` (Darknet's ``cfg/`` folder, e.g. a checkout of
AlexeyAB/darknet; without one the script says so and exits 0: CI cannot fetch it):

- cfgs darkslim refuses (a parse or verify error, or a layer it does not execute:
  rnn, xnor, ...) are listed as refused, with the reason;
- the others are resized to ``--size`` (256; detectors always, other networks when
  they are larger and still verify with the same variable shapes, else their own
  size), given seeded sparse-γ weights (``ir.init_variables(graph, "sparse", seed=0)``,
  written by ``frontends.save_variables``), and pruned by the CLI twice, each in a
  process of its own: ``darkslim prune CFG W --percent P --out DIR`` and the same with
  ``--no-check``. Wall time and peak RSS of each process come from ``/usr/bin/time``
  (a child's ``ru_maxrss`` counts the forking parent's RSS: see benchmarks/prune.py).

The bar: with its check, a prune takes at most 2x the time of ``--no-check`` plus 1 s,
and at most 1.5x its peak RSS. Rows outside it are marked ``MISS``. A cfg with nothing
to prune (no BN convs) fails the same way with and without the check (exit status 2)
and is listed as such.

    .venv/bin/python benchmarks/prune_zoo.py --zoo ../darknet-src/cfg [--readme]

With ``--readme`` the table replaces the "prune check on the zoo" section of
benchmarks/README.md (appended when missing), with the date, load and machine.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import frontends  # noqa: E402  (after the sys.path line: run as a script from anywhere)
import ir  # noqa: E402
from benchmarks.engines import loadavg, machine  # noqa: E402
from ir.variables import layer_shapes  # noqa: E402

DARKSLIM = [sys.executable, "-c", "import sys; from darkslim.cli import main; sys.exit(main())"]
TIME = "/usr/bin/time"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- prune_zoo: begin -->", "<!-- prune_zoo: end -->"
TIME_BAR, TIME_SLACK_S, RSS_BAR = 2.0, 1.0, 1.5


@dataclass(frozen=True)
class Run:
    status: int
    wall: float
    rss_mb: float
    tail: str


@dataclass(frozen=True)
class Row:
    cfg: str
    size: str = ""
    check: Run | None = None
    no_check: Run | None = None
    check_size: str = ""
    refused: str = ""

    @property
    def time_ratio(self) -> float:
        return self.check.wall / self.no_check.wall

    @property
    def rss_ratio(self) -> float:
        return self.check.rss_mb / self.no_check.rss_mb

    @property
    def pruned(self) -> bool:
        return (self.check is not None and self.check.status in (0, 3)
                and self.no_check.status == 0)

    @property
    def meets_bar(self) -> bool:
        return (self.check.status == 0
                and self.check.wall <= TIME_BAR * self.no_check.wall + TIME_SLACK_S
                and self.check.rss_mb <= RSS_BAR * self.no_check.rss_mb)


def run_child(argv: list[str], timeout: float) -> Run:
    """Exit status, wall seconds and peak RSS (MB) of one child process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        start = time.perf_counter()
        try:
            done = subprocess.run([TIME, "-f", "%M", "-o", tf.name, *argv], check=False,
                                  cwd=ROOT,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Run(124, time.perf_counter() - start, float("nan"), "timed out")
        wall = time.perf_counter() - start
        lines = tf.read().strip().splitlines()
    rss = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    return Run(done.returncode, wall, rss, (done.stdout + done.stderr)[-3000:])


def prepare(cfg: Path, size: int) -> tuple[ir.Graph | None, str]:
    """The graph the benchmark prunes, or None and why darkslim refuses the cfg."""
    try:
        graph = ir.parse_cfg(cfg)
        ir.verify(graph)
    except (ValueError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    refused = [(i, layer.kind, reason) for i, layer in enumerate(graph.layers)
               if (reason := ir.unsupported_reason(layer)) is not None]
    if refused:
        i, kind, reason = refused[0]
        return None, (f"{len(refused)} layer(s) not executed, e.g. layer {i} [{kind}]"
                      + (f": {reason}" if reason else ""))
    if (graph.height, graph.width) == (size, size):
        return graph, ""
    resized = ir.with_input_size(graph, size)
    if not graph.head_indices() and max(graph.height, graph.width) <= size:
        return graph, ""
    try:
        ir.verify(resized)
        same = layer_shapes(resized) == layer_shapes(graph)
    except ir.CfgError:
        same = False
    return (resized if same else graph), ""


def bench_cfg(cfg: Path, size: int, percent: float, work: Path, timeout: float) -> Row:
    graph, refused = prepare(cfg, size)
    if graph is None:
        return Row(cfg.name, refused=refused)
    here = work / cfg.stem
    here.mkdir(parents=True, exist_ok=True)
    try:
        model, weights = here / "model.cfg", here / "model.weights"
        model.write_text(ir.write_cfg(graph))
        frontends.save_variables(graph, ir.init_variables(graph, "sparse", seed=0), weights)
        base = [*DARKSLIM, "prune", str(model), str(weights), "--percent", str(percent)]
        no_check = run_child([*base, "--no-check", "--out", str(here / "no-check")], timeout)
        check = run_child([*base, "--out", str(here / "check")], timeout)
        found = re.search(r"check at (\d+x\d+)", check.tail)
        return Row(cfg.name, f"{graph.width}x{graph.height}", check, no_check,
                   found.group(1) if found else "")
    finally:
        shutil.rmtree(here, ignore_errors=True)


def status_of(row: Row) -> str:
    if row.refused:
        return f"refused: {row.refused}"
    if not row.pruned:
        if row.check.status == row.no_check.status == 2:
            last = [ln for ln in row.no_check.tail.splitlines() if ln.strip()]
            return "nothing pruned: " + (last[-1].strip() if last else "exit status 2")
        tail = (row.check.tail if row.check.status else row.no_check.tail).strip()
        last = tail.splitlines()[-1] if tail else ""
        return f"FAILED: exit {row.check.status} / {row.no_check.status}: {last}"
    if row.check.status == 3:
        return "MISS: check skipped (exit 3)"
    return "ok" if row.meets_bar else "MISS"


def table(rows: list[Row]) -> list[str]:
    out = [("| cfg | size | check at | wall check s | wall no-check s | ratio "
            "| peak RSS check MB | peak RSS no-check MB | ratio | status |"),
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        if row.refused or not row.pruned:
            continue
        out.append(f"| {row.cfg} | {row.size} | {row.check_size or '—'} "
                   f"| {row.check.wall:.1f} | {row.no_check.wall:.1f} | {row.time_ratio:.2f} "
                   f"| {row.check.rss_mb:.0f} | {row.no_check.rss_mb:.0f} "
                   f"| {row.rss_ratio:.2f} | {status_of(row)} |")
    others = [row for row in rows if row.refused or not row.pruned]
    if others:
        out += ["", "Not in the table:", ""]
        out += [f"- {row.cfg}: {status_of(row).replace('|', '/')}" for row in others]
    return out


def write_readme(lines: list[str]) -> None:
    text = README.read_text()
    section = "\n".join([BEGIN, *lines, END])
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(README)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", metavar="DIR", help="Darknet's cfg/ folder")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--percent", type=float, default=0.5)
    parser.add_argument("--only", metavar="NAME,...", help="only these cfgs (file names)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--readme", action="store_true",
                        help="write the table into benchmarks/README.md")
    args = parser.parse_args()
    zoo = Path(args.zoo) if args.zoo else None
    if zoo is None or not zoo.is_dir():
        print(f"no zoo folder ({args.zoo or 'give --zoo DIR'}): skipped")
        return 0
    cfgs = sorted(zoo.glob("*.cfg"))
    if args.only:
        wanted = set(args.only.split(","))
        cfgs = [c for c in cfgs if c.name in wanted or c.stem in wanted]
    started = datetime.datetime.now(datetime.UTC)
    loads = [loadavg()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="prune_zoo_") as work:
        for k, cfg in enumerate(cfgs):
            row = bench_cfg(cfg, args.size, args.percent, Path(work), args.timeout)
            rows.append(row)
            if row.refused or not row.pruned:
                print(f"[{k + 1}/{len(cfgs)}] {cfg.name}: {status_of(row)}", flush=True)
            else:
                print(f"[{k + 1}/{len(cfgs)}] {cfg.name}: check at {row.check_size or '—'}, "
                      f"{row.check.wall:.1f} vs {row.no_check.wall:.1f} s "
                      f"({row.time_ratio:.2f}x), {row.check.rss_mb:.0f} vs "
                      f"{row.no_check.rss_mb:.0f} MB ({row.rss_ratio:.2f}x): "
                      f"{status_of(row)}  [load {loadavg()}]", flush=True)
            loads.append(loadavg())
    pruned = [row for row in rows if row.pruned]
    missed = [row.cfg for row in pruned if not row.meets_bar]
    minutes = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
    lines = table(rows)
    summary = (f"{len(pruned)} cfgs pruned, {len(missed)} outside the bar"
               + (f" ({', '.join(missed)})" if missed else "")
               + f"; {sum(bool(r.refused) for r in rows)} refused; "
               f"{len(rows) - len(pruned) - sum(bool(r.refused) for r in rows)} "
               "with nothing pruned or failed")
    print("\n".join(lines))
    print(summary)
    if args.readme:
        write_readme([
            f"## The prune's check on Darknet's cfg zoo, {started:%Y-%m-%d %H:%M} UTC",
            "",
            (f"`benchmarks/prune_zoo.py --zoo {zoo}` (issue 19): every cfg of the zoo at "
            f"{args.size} px, seeded sparse-γ weights, `darkslim prune --percent "
            f"{args.percent}` with its check and with `--no-check`, one process each "
            f"(wall, and peak RSS by `/usr/bin/time`). Bar: with the check <= "
            f"{TIME_BAR:g}x the wall of `--no-check` + {TIME_SLACK_S:g} s and <= "
            f"{RSS_BAR:g}x its peak RSS. Machine: {machine()}. Load average (1, 5, 15 "
            f"min) at the start {loads[0]}, at the end {loads[-1]}; {minutes:.0f} min "
            "in all. One run each: wall times move with the load of the other "
            "processes on the machine."),
            "",
            *lines, "", summary + "."])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
