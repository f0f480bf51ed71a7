"""Latency of several networks, measured side by side on the CPU: darkslim's runtime
(`measure_latency`) and onnxruntime on exported files (`measure_onnx_latency`).

Library code: returns data, never prints. One-off work (XLA compile, session creation)
is timed apart from the runs. After warm-up, the networks run round-robin (a, b, a, b,
...), so load from other processes on a shared machine falls on all of them alike,
and the median of each network's runs is reported (`time_interleaved`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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

        runs.append(run)
    return tuple(Latency(median_ms=statistics.median(t), times_ms=t,
                         compile_s=c, batch=batch, device=str(target))
                 for t, c in zip(time_interleaved(runs, repeats, warmup), compile_s))


def time_interleaved(runs: Sequence[Callable[[], Any]], repeats: int, warmup: int
                     ) -> tuple[tuple[float, ...], ...]:
    """Each run's ``warmup`` untimed calls, then ``repeats`` timed rounds of every run in
    turn; per run, its times in milliseconds."""
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[k].append((time.perf_counter() - start) * 1e3)
    return tuple(tuple(t) for t in times)


@dataclass(frozen=True, slots=True)
class OrtLatency:
    """One exported model's onnxruntime timings (milliseconds), session load apart."""

    median_ms: float
    times_ms: tuple[float, ...]
    load_s: float
    batch: int


def measure_onnx_latency(models: Sequence, input_chw: Sequence[tuple[int, int, int]], *,
                         repeats: int = 5, warmup: int = 2, batch: int = 1,
                         threads: int | None = None, seed: int = 0) -> tuple[OrtLatency, ...]:
    """Median onnxruntime CPU latency of each model, runs interleaved.

    Args:
        models: ``ModelProto`` or bytes, each with a static or dynamic batch axis.
        input_chw: each model's input (C, H, W).
        repeats, warmup: timed and untimed runs per model.
    """
    from export.runtimes import ort_session

    rng = np.random.default_rng(seed)
    runs, loads = [], []
    for model, chw in zip(models, input_chw, strict=True):
        start = time.perf_counter()
        session = ort_session(model, threads)
        loads.append(time.perf_counter() - start)
        feed = {"images": rng.random((batch, *chw), dtype=np.float32)}
        runs.append(lambda session=session, feed=feed: session.run(None, feed))
    return tuple(OrtLatency(statistics.median(t), t, load, batch)
                 for t, load in zip(time_interleaved(runs, repeats, warmup), loads))
