"""Train-step time with and without the sparsity transform: yolov3 and yolov3-tiny at 416,
batch 8, on this machine's default JAX device.

For each network the jitted step (forward in train mode, YOLOv3 loss, backward, optax
update; `runtime.train.make_train_step`) is compiled for plain Adam and for
``optax.chain(sparsity(...), Adam)`` (the L1 on the prunable γ, `runtime.sparsity.sparsity`),
then timed in alternation (A B A B ...) so drift from other processes hits both alike.
The sparsity overhead is reported twice: from the whole steps (noisy when a step takes
seconds on a shared CPU) and from the optimiser update alone (`tx.update` jitted by
itself), which is exactly what the transform adds. Reference measured in the same run:
a float32 2048² matmul (attainable GFLOP/s through XLA).

    .venv/bin/python benchmarks/train.py [--cfgs yolov3-tiny.cfg yolov3.cfg] [--size 416]
        [--batch 8] [--steps 3 2] [--sparsity 1e-3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
from runtime import init_variables  # noqa: E402
from runtime.sparsity import sparsity  # noqa: E402
from runtime.train import init_train_state, make_optimizer, make_train_step  # noqa: E402

CFG_DIR = ROOT.parent / "shared" / "cfg"


def matmul_gflops() -> float:
    a = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(5))
    return 2 * 2048 ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(cfg: Path, size: int, batch: int, steps: int, s: float) -> dict:
    graph = ir.with_input_size(ir.parse_cfg(cfg), size)
    variables = init_variables(graph, 0)
    params = variables["params"]
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
    classes = graph.layers[graph.yolo_indices()[0]].classes
    targets = np.full((batch, 8, 5), -1.0, np.float32)
    for n in range(batch):
        k = int(rng.integers(1, 8))
        targets[n, :k] = np.column_stack([rng.integers(0, classes, k),
                                          rng.uniform(0.2, 0.8, (k, 2)),
                                          rng.uniform(0.05, 0.4, (k, 2))])
    targets = jnp.asarray(targets)
    base = make_optimizer("adam", 1e-3)
    txs = {"plain": base, "sparse": optax.chain(sparsity(graph, params, s), base)}
    runs = {}
    for name, tx in txs.items():
        step = make_train_step(graph, tx)
        state = init_train_state(variables, tx)
        start = time.perf_counter()
        state, metrics = step(state, images, targets)
        jax.block_until_ready(metrics)
        update = jax.jit(tx.update)
        grads = jax.tree.map(jnp.ones_like, params)
        jax.block_until_ready(update(grads, state.opt_state, params))
        runs[name] = {"step": step, "state": state, "update": update, "grads": grads,
                      "compile": time.perf_counter() - start, "times": [], "update_times": []}
    names = list(runs)
    for i in range(steps):  # alternate (and swap who goes first): drift hits both alike
        for run in (runs[n] for n in (names if i % 2 == 0 else names[::-1])):
            start = time.perf_counter()
            run["state"], metrics = run["step"](run["state"], images, targets)
            jax.block_until_ready(metrics)
            run["times"].append(time.perf_counter() - start)
    for _ in range(20):
        for run in runs.values():
            start = time.perf_counter()
            jax.block_until_ready(run["update"](run["grads"], run["state"].opt_state,
                                                run["state"].params))
            run["update_times"].append(time.perf_counter() - start)
    out = {"cfg": cfg.name, "flops": ir.count_flops(graph)}
    for name, run in runs.items():
        out[name] = {"compile": run["compile"], "step": statistics.median(run["times"]),
                     "step_min": min(run["times"]),
                     "update": statistics.median(run["update_times"])}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfgs", nargs="+", default=["yolov3-tiny.cfg", "yolov3.cfg"])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 4],
                        help="timed steps per variant, one number per cfg (last repeats)")
    parser.add_argument("--sparsity", type=float, default=1e-3)
    args = parser.parse_args(argv)
    console = Console(width=max(132, Console().width))
    device = jax.devices()[0]
    console.print(f"device: {device.platform} ({device.device_kind}), "
                  f"{jax.local_device_count()} local device(s); "
                  f"matmul reference {matmul_gflops():.0f} GFLOP/s")
    table = Table(title=f"train step, {args.size}x{args.size}, batch {args.batch} "
                  f"(Adam; sparse = L1 s={args.sparsity:g} on the prunable γ)")
    for col in ("network", "variant", "GFLOPs/img", "compile s", "step s", "img/s",
                "update ms", "overhead (steps)", "overhead (update)"):
        table.add_column(col, justify="left" if col in ("network", "variant") else "right")
    for i, name in enumerate(args.cfgs):
        path = Path(name) if Path(name).exists() else CFG_DIR / name
        steps = args.steps[min(i, len(args.steps) - 1)]
        r = bench(path, args.size, args.batch, steps, args.sparsity)
        plain, sparse = r["plain"], r["sparse"]
        for variant in ("plain", "sparse"):
            v = r[variant]
            whole = isolated = ""
            if variant == "sparse":
                whole = f"{sparse['step'] / plain['step'] - 1:+.1%}"
                isolated = f"{(sparse['update'] - plain['update']) / plain['step']:+.2%}"
            table.add_row(r["cfg"], variant, f"{r['flops'] / 1e9:.1f}", f"{v['compile']:.1f}",
                          f"{v['step']:.3f}", f"{args.batch / v['step']:.1f}",
                          f"{v['update'] * 1e3:.2f}", whole, isolated)
    console.print(table)
    console.print("sparsity overhead target: under 3% of the step. 'overhead (steps)' "
                  "compares whole steps (median of alternating runs, noisy on a shared CPU); "
                  "'overhead (update)' is the extra time of the optimiser update alone "
                  "(what the transform adds), relative to the plain step.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
