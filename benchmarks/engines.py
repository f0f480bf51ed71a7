"""Reference engines for the benchmarks, each timed in a process of its own, and the
alternating timing loop (`benchmarks/forward.py`, `benchmarks/train.py`).

A reference engine (torch eager, OpenCV DNN) shares no allocator or thread pool with
darkslim or another engine: after one OpenCV batch-8 forward in a process, torch's
batch-8 forward in the same process ran 1.3x slower (2.35 against 1.5-1.8 s, with more
CPU seconds), even after a pause. And each timed run starts on idle cores: torch's
OpenMP threads keep spinning for a few hundred ms after a call returns, and with 0.2 s
of idle the darkslim yolov3 b1 forward that followed took 186 ms instead of 159.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ir


def timed(fn: Callable[[], Any]) -> Callable[[], tuple[float, float]]:
    """``fn`` as a run of `alternate`: returns its wall and CPU seconds."""
    def run():
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - start_cpu
    return run


def alternate(runs, repeats: int, warmup: int, pause: float = 0.0
              ) -> list[tuple[float, float, float]]:
    """Call ``runs`` (each returns the wall and CPU seconds of one run) in alternation
    (a b, then b a, ...) so other processes' load falls on all alike, after ``pause``
    seconds of idle each; per run the median wall seconds, median CPU seconds and
    fastest wall."""
    for run in runs:
        for _ in range(warmup):
            run()
    wall: list[list[float]] = [[] for _ in runs]
    cpu: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for i in range(repeats):
        for k in (order if i % 2 == 0 else order[::-1]):
            time.sleep(pause)
            seconds, cpu_seconds = runs[k]()
            wall[k].append(seconds)
            cpu[k].append(cpu_seconds)
    return [(statistics.median(w), statistics.median(c), min(w)) for w, c in zip(wall, cpu)]


def _torch_forward(graph: ir.Graph, batch: int, options: dict):
    import torch

    from tests.torch_reference import Darknet

    model = Darknet(graph, darknet_maxpool=True).eval()
    x = torch.rand(batch, graph.channels, graph.height, graph.width)

    def run():
        with torch.inference_mode():
            model(x)
    return run, torch.get_num_threads()


def _opencv_forward(graph: ir.Graph, batch: int, options: dict):
    import cv2

    net = cv2.dnn.readNetFromDarknet(str(graph.path), str(options["weights"]))
    names = net.getUnconnectedOutLayersNames()
    net.setInput(np.random.default_rng(0).random(
        (batch, graph.channels, graph.height, graph.width), dtype=np.float32))

    def run():
        net.forward(names)
    return run, cv2.getNumThreads()


def _torch_train_step(graph: ir.Graph, batch: int, options: dict):
    import torch

    import passes
    from benchmarks.reference.torch_train_step import TorchTrainStep, as_rows
    from darkslim.bench import random_images, random_targets

    step = TorchTrainStep(graph, passes.analyze_prunability(graph).prunable,
                          options["sparsity"])
    images = torch.from_numpy(random_images(graph, batch).transpose(0, 3, 1, 2).copy())
    targets = as_rows(random_targets(graph, batch))
    return (lambda: step(images, targets)), torch.get_num_threads()


ENGINES = {"torch": _torch_forward, "opencv": _opencv_forward,
           "torch-train": _torch_train_step}
LABELS = {"torch": "torch eager", "opencv": "OpenCV DNN", "torch-train": "torch eager"}


def _engine_worker(conn, kind: str, cfg: str, size: int, batch: int, options: dict
                   ) -> None:
    """A reference engine in its own process: reports its thread count and its set-up
    seconds (None when the package is missing), then times one run per request until
    told to stop."""
    start = time.perf_counter()
    try:
        run, threads = ENGINES[kind](ir.with_input_size(ir.parse_cfg(cfg), size), batch,
                                     options)
    except ImportError:
        conn.send(None)
        return
    conn.send((threads, time.perf_counter() - start))
    while conn.recv():
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        conn.send((time.perf_counter() - start, time.process_time() - start_cpu))


class EngineProcess:
    """One reference engine (`ENGINES`) in a process of its own. Calling it runs one
    batch there and returns the wall and CPU seconds measured there; ``threads`` is
    None when the engine's package is not installed; ``setup_s`` is what building it
    took there."""

    def __init__(self, kind: str, cfg: str | Path, size: int, batch: int,
                 **options) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_engine_worker, daemon=True,
                                        args=(child, kind, str(cfg), size, batch, options))
        self._process.start()
        self.kind, self.label = kind, LABELS[kind]
        ready = self._conn.recv()
        self.threads, self.setup_s = ready if ready is not None else (None, None)

    def __call__(self) -> tuple[float, float]:
        self._conn.send(True)
        return self._conn.recv()

    def close(self) -> None:
        if self.threads is not None:
            self._conn.send(False)
        self._process.join()


def machine() -> str:
    """The machine a benchmark table was measured on, in one line."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    return (f"{os.cpu_count()} cores ({model}), {mem / 2**20:.0f} GiB RAM, "
            f"Python {platform.python_version()}")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, printed beside each table."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
