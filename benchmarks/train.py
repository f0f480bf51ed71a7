"""Train-step time beside torch eager: yolov3-tiny at 416, batch 8, on CPU.

Three steps are compiled (darkslim) or built (torch, in a process of its own:
`benchmarks.engines`), then timed in alternation (A B C, then C B A, ...), each after
``--pause`` seconds of idle, so drift from other processes hits all alike:

- **darkslim sparse**: `darkslim.bench.prepare_train_step`, the step `fit` runs:
  forward in train mode, `runtime.loss.yolo_loss`, backward, and
  ``optax.chain(sparsity(s), SGD(momentum 0.9, weight decay 5e-4))`` — the sparsity
  penalty on the prunable γ (`runtime.sparsity`);
- **darkslim plain**: the same without the penalty (what the penalty costs);
- **torch eager** (reference, `reference/torch_train_step.py`): the same network in
  torch (`tests/torch_reference.py`), ultralytics' v3 ``compute_loss``, ``backward()``,
  the seed's ``updateBN`` (``s·sign(γ)`` added to γ's grad), ``SGD.step()``.

Each reports the median and the minimum step time; compile time apart.

    .venv/bin/python benchmarks/train.py [--cfgs yolov3-tiny.cfg] [--size 416]
        [--batch 8] [--steps 12] [--sparsity 1e-3] [--pause 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
from benchmarks.engines import EngineProcess, alternate, timed  # noqa: E402
from darkslim.bench import prepare_train_step  # noqa: E402
from runtime import init_variables  # noqa: E402

CFG_DIR = ROOT.parent / "shared" / "cfg"


def bench(cfg: Path, size: int, batch: int, steps: int, s: float, torch_too: bool,
          pause: float) -> dict:
    graph = ir.with_input_size(ir.parse_cfg(cfg), size)
    variables = init_variables(graph, 0)
    names, runs, setup = [], [], []
    for name, sparsity in (("darkslim sparse", s), ("darkslim plain", 0.0)):
        run, compile_s = prepare_train_step(graph, variables, batch, sparsity=sparsity)
        names.append(name)
        runs.append(timed(run))
        setup.append(compile_s)
    engine = EngineProcess("torch-train", cfg, size, batch, sparsity=s) if torch_too else None
    if engine is not None and engine.threads is not None:
        names.append(f"{engine.label} ×{engine.threads}")
        runs.append(engine)
        setup.append(engine.setup_s)
    results = alternate(runs, steps, 1, pause)
    if engine is not None:
        engine.close()
    return {"cfg": cfg.name, "flops": ir.count_flops(graph),
            "runs": {name: {"median": median, "min": fastest, "compile": first}
                     for name, (median, _, fastest), first in zip(names, results, setup)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfgs", nargs="+", default=["yolov3-tiny.cfg"])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--sparsity", type=float, default=1e-3)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--pause", type=float, default=1.0,
                        help="seconds of idle before each timed step (torch's OpenMP "
                             "threads spin for a while after a step; benchmarks.engines)")
    args = parser.parse_args(argv)
    console = Console(width=max(132, Console().width))
    device = jax.devices()[0]
    load = os.getloadavg()[0]
    table = Table(title=f"train step, {args.size}x{args.size}, batch {args.batch}, "
                  f"SGD; sparse = L1 s={args.sparsity:g} on the prunable γ; "
                  f"{device.platform} ({os.cpu_count()} cores), jax {jax.__version__}")
    for col in ("network", "step", "compile / first s", "median s", "min s", "img/s",
                "× torch (median)", "× torch (min)"):
        table.add_column(col, justify="left" if col in ("network", "step") else "right")
    for name in args.cfgs:
        path = Path(name) if Path(name).exists() else CFG_DIR / name
        r = bench(path, args.size, args.batch, args.steps, args.sparsity, not args.no_torch,
                  args.pause)
        ref = next((v for k, v in r["runs"].items() if k.startswith("torch")), None)
        for step, v in r["runs"].items():
            med, low = v["median"], v["min"]
            speed = ["", ""]
            if ref is not None:
                speed = [f"{ref['median'] / med:.2f}×", f"{ref['min'] / low:.2f}×"]
            table.add_row(r["cfg"], step, f"{v['compile']:.1f}", f"{med:.3f}", f"{low:.3f}",
                          f"{args.batch / med:.1f}", *speed)
    console.print(table)
    console.print(f"{args.steps} alternating steps each (order reversed every round), "
                  f"each after {args.pause:g} s of idle; torch in a process of its own; "
                  "× torch = torch's time / this step's (above 1: faster than torch). "
                  f"Load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} cores (other processes share them).",
                  highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
