"""Train-step time with and without distillation (`runtime.distill.Distill`).

The demo network (`darkslim synth`'s model.cfg) at ``--size`` px, batch ``--batch``, SGD:
the plain step (forward in train mode, the YOLO loss, backward, update) against the
same step with a teacher run in eval mode on the same batch. The teacher is the demo
network itself (the worst case: a teacher as large as the student); ``--student-narrow
K`` makes the student K times narrower (a pruned student). Steps are timed in
alternation, median and minimum after compilation.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/distill.py [--size 128] [--batch 16]
        [--steps 10] [--student-narrow 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
from darkslim.commands.synth import synth_cfg_path  # noqa: E402
from runtime import init_variables  # noqa: E402
from runtime.distill import Distill  # noqa: E402
from runtime.loss import yolo_terms  # noqa: E402
from runtime.train import init_train_state, make_train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--student-narrow", type=int, default=1)
    args = parser.parse_args()

    teacher = ir.with_input_size(ir.parse_cfg(synth_cfg_path()), args.size)
    student = (teacher if args.student_narrow == 1
               else ir.narrow(teacher, args.student_narrow, min_filters=4))
    rng = np.random.default_rng(0)
    images = jax.numpy.asarray(rng.random((args.batch, args.size, args.size, 3), np.float32))
    targets = np.full((args.batch, 8, 5), -1.0, np.float32)
    targets[:, :2] = [[0, 0.3, 0.3, 0.2, 0.2], [1, 0.7, 0.6, 0.3, 0.4]]
    targets = jax.numpy.asarray(targets)
    tx = optax.sgd(1e-3, momentum=0.9)
    state = init_train_state(init_variables(student, 0), tx)
    term = Distill(teacher=teacher, extra=init_variables(teacher, 1))
    steps = {"plain": make_train_step(student, tx),
             "distilled": make_train_step(student, tx, terms=(*yolo_terms(), term))}

    def once(name: str) -> float:
        start = time.perf_counter()
        new, metrics = steps[name](state, images, targets)
        jax.block_until_ready((new, metrics))
        return time.perf_counter() - start

    for name in steps:  # compile
        once(name)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for k in range(args.steps):
        for name in (steps if k % 2 == 0 else reversed(list(steps))):
            times[name].append(once(name))
    print(f"demo network {args.size}px batch {args.batch}, student narrowed "
          f"x{args.student_narrow}, {jax.devices()[0].platform}, {args.steps} steps each")
    for name, ts in times.items():
        print(f"  {name:10s} median {statistics.median(ts) * 1e3:8.1f} ms  "
              f"min {min(ts) * 1e3:8.1f} ms")
    ratio = statistics.median(times["distilled"]) / statistics.median(times["plain"])
    print(f"  distilled / plain (median): {ratio:.2f}x")


if __name__ == "__main__":
    main()
