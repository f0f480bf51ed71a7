"""Forward-pass latency of several networks, measured side by side on the CPU.

Library code: returns data, never prints. Compilation (trace, lower, XLA compile) is
timed apart from the runs. After warm-up, the networks run round-robin (a, b, a, b,
...), so load from other processes on a shared machine falls on all of them alike,
and the median of each network's runs is reported.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

import ir


@dataclass(frozen=True, slots=True)
class Latency:
    """One network's timings. Times in milliseconds, compile time in seconds."""

    median_ms: float
    times_ms: tuple[float, ...]
    compile_s: float
    batch: int
    device: str


def measure_latency(programs: Sequence[tuple[ir.Graph, Any]], *, repeats: int = 5,
                    warmup: int = 1, batch: int = 1, device: str = "cpu", seed: int = 0
                    ) -> tuple[Latency, ...]:
    """Median inference latency of each ``(graph, variables)`` at its cfg size.

    Args:
        programs: the networks to compare (e.g. before and after a prune).
        repeats: timed runs per network, interleaved across networks.
        warmup: untimed runs per network after compiling.
        batch: images per run.
        device: the JAX platform to run on; ``"cpu"`` even where a GPU exists.
        seed: the random input images.

    Returns:
        One `Latency` per program, in order.
    """
    import jax
    import jax.numpy as jnp

    import runtime

    if repeats < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"measure_latency(repeats={repeats}, warmup={warmup}, "
                         f"batch={batch}): expected repeats >= 1, warmup >= 0, batch >= 1")
    target = jax.devices(device)[0]
    rng = np.random.default_rng(seed)
    runs, compile_s = [], []
    for graph, variables in programs:
        x = jax.device_put(jnp.asarray(rng.random(
            (batch, graph.height, graph.width, graph.channels), dtype=np.float32)), target)
        params = jax.device_put(variables, target)
        start = time.perf_counter()
        compiled = runtime.forward.lower(graph, params, x).compile()
        compile_s.append(time.perf_counter() - start)

        def run(compiled=compiled, params=params, x=x):
            jax.block_until_ready(compiled(params, x))

        for _ in range(warmup):
            run()
        runs.append(run)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[k].append((time.perf_counter() - start) * 1e3)
    return tuple(Latency(median_ms=statistics.median(t), times_ms=tuple(t),
                         compile_s=c, batch=batch, device=str(target))
                 for t, c in zip(times, compile_s))
