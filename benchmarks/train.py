"""Train-step time beside torch eager: yolov3-tiny at 416, batch 8, on CPU.

Three steps are compiled (darkslim) or built (torch), then timed in alternation
(A B C, then C B A, ...) so drift from other processes hits all alike:

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
        [--batch 8] [--steps 12] [--sparsity 1e-3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
from darkslim.bench import prepare_train_step, random_images, random_targets  # noqa: E402
from runtime import init_variables  # noqa: E402

CFG_DIR = ROOT.parent / "shared" / "cfg"


def torch_step(graph: ir.Graph, batch: int, sparsity: float):
    import torch

    import passes
    from benchmarks.reference.torch_train_step import TorchTrainStep, as_rows

    step = TorchTrainStep(graph, passes.analyze_prunability(graph).prunable, sparsity)
    images = torch.from_numpy(random_images(graph, batch).transpose(0, 3, 1, 2).copy())
    targets = as_rows(random_targets(graph, batch))
    start = time.perf_counter()
    step(images, targets)
    return (lambda: step(images, targets)), time.perf_counter() - start, \
        torch.get_num_threads()


def bench(cfg: Path, size: int, batch: int, steps: int, s: float, torch_too: bool) -> dict:
    graph = ir.with_input_size(ir.parse_cfg(cfg), size)
    variables = init_variables(graph, 0)
    runs = {}
    for name, sparsity in (("darkslim sparse", s), ("darkslim plain", 0.0)):
        run, compile_s = prepare_train_step(graph, variables, batch, sparsity=sparsity)
        run()
        runs[name] = {"run": run, "compile": compile_s, "times": []}
    if torch_too:
        run, first, threads = torch_step(graph, batch, s)
        runs[f"torch eager ×{threads}"] = {"run": run, "compile": first, "times": []}
    names = list(runs)
    for i in range(steps):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            runs[name]["run"]()
            runs[name]["times"].append(time.perf_counter() - start)
    return {"cfg": cfg.name, "flops": ir.count_flops(graph), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfgs", nargs="+", default=["yolov3-tiny.cfg"])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--sparsity", type=float, default=1e-3)
    parser.add_argument("--no-torch", action="store_true")
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
        r = bench(path, args.size, args.batch, args.steps, args.sparsity, not args.no_torch)
        ref = next((v for k, v in r["runs"].items() if k.startswith("torch")), None)
        for step, v in r["runs"].items():
            med, low = statistics.median(v["times"]), min(v["times"])
            speed = ["", ""]
            if ref is not None:
                speed = [f"{statistics.median(ref['times']) / med:.2f}×",
                         f"{min(ref['times']) / low:.2f}×"]
            table.add_row(r["cfg"], step, f"{v['compile']:.1f}", f"{med:.3f}", f"{low:.3f}",
                          f"{args.batch / med:.1f}", *speed)
    console.print(table)
    console.print(f"{args.steps} alternating steps each (order reversed every round); "
                  "× torch = torch's time / this step's (above 1: faster than torch). "
                  f"Load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} cores (other processes share them).",
                  highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
