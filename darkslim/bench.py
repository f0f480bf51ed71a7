"""How fast a network runs on this machine: `darkslim bench`'s measurements.

Library code: returns data, never prints. For each batch size it compiles the darkslim
runtime's forward (`runtime.forward`) and, on request, its training step
(`runtime.train.make_train_step`: forward in train mode, the YOLOv3 loss, backward, the
sparsity penalty chained before SGD), times the compilation apart, then reports the
median of ``repeats`` steady-state runs after ``warmup`` untimed ones.

Other engines sit beside the runtime through `ENGINES`, a table ``{name: prepare}``
where ``prepare(graph, variables, images) -> run`` does its one-off work (export,
session creation; timed as its compile time) and returns a zero-argument callable that
runs one batch to completion. It raises `EngineUnavailable` when the engine cannot run
here (a missing package); the table then shows why instead of a number. The
onnxruntime entry exports the network with `darkslim export`'s defaults.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import ir
from darkslim.latency import time_interleaved
from ir import Variables


class EngineUnavailable(RuntimeError):
    """An engine of `ENGINES` cannot run on this machine (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class Timing:
    """One measurement: median and every run in milliseconds, compile in seconds."""

    median_ms: float
    times_ms: tuple[float, ...]
    compile_s: float


def _time_runs(run: Callable[[], Any], repeats: int, warmup: int, compile_s: float
               ) -> Timing:
    (times,) = time_interleaved([run], repeats, warmup)
    return Timing(statistics.median(times), times, compile_s)


def random_images(graph: ir.Graph, batch: int, seed: int = 0) -> np.ndarray:
    """``(batch, H, W, C)`` float32 uniform images at the graph's input size."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, graph.height, graph.width, graph.channels), dtype=np.float32)


def random_targets(graph: ir.Graph, batch: int, per_image: int = 8, seed: int = 0
                   ) -> np.ndarray:
    """``(batch, per_image, 5)`` targets ``class cx cy w h``, 1 to ``per_image - 1`` real
    boxes per image, the rest padding (class -1), as `runtime.data` batches them."""
    if not graph.yolo_indices():
        raise ValueError(f"{graph.path}: no [yolo] layer, so no YOLOv3 loss to train with")
    rng = np.random.default_rng(seed)
    head = graph.layers[graph.yolo_indices()[0]]
    assert isinstance(head, ir.Yolo)  # a yolo_indices() layer
    classes = head.classes
    targets = np.full((batch, per_image, 5), -1.0, np.float32)
    for n in range(batch):
        k = int(rng.integers(1, per_image))
        targets[n, :k] = np.column_stack([rng.integers(0, classes, k),
                                          rng.uniform(0.2, 0.8, (k, 2)),
                                          rng.uniform(0.05, 0.4, (k, 2))])
    return targets


def prepare_forward(graph: ir.Graph, variables: Variables, batch: int, *, device=None,
                    seed: int = 0) -> tuple[Callable[[], Any], float]:
    """A zero-argument run of the compiled inference forward (`runtime.forward`,
    running BN statistics) at ``batch``, and its compile seconds."""
    import jax

    import runtime

    device = device or jax.devices()[0]
    x = jax.device_put(random_images(graph, batch, seed), device)
    params = jax.device_put(variables, device)
    start = time.perf_counter()
    compiled = runtime.forward.lower(graph, params, x).compile()
    compile_s = time.perf_counter() - start
    return (lambda: jax.block_until_ready(compiled(params, x))), compile_s


def prepare_train_step(graph: ir.Graph, variables: Variables, batch: int, *,
                       sparsity: float = 1e-3, learning_rate: float = 1e-3,
                       optimizer: str = "sgd", device=None, seed: int = 0
                       ) -> tuple[Callable[[], Any], float]:
    """A zero-argument run of one training step at ``batch`` (the step `fit` runs:
    forward in train mode, YOLOv3 loss, backward, ``optax.chain(sparsity(s),
    optimizer)``; ``sparsity=0`` leaves the penalty out), and its compile seconds.
    Each run continues from the state the previous one left."""
    import jax
    import optax

    from passes import analyze_prunability
    from runtime.sparsity import sparsity as sparsity_tx
    from runtime.train import init_train_state, make_optimizer, make_train_step

    device = device or jax.devices()[0]
    variables = jax.device_put(variables, device)
    tx = make_optimizer(optimizer, learning_rate)
    if sparsity:
        tx = optax.chain(sparsity_tx(graph, variables["params"], sparsity), tx)
    step = make_train_step(graph, tx, prunable=analyze_prunability(graph).prunable)
    images = jax.device_put(random_images(graph, batch, seed), device)
    targets = jax.device_put(random_targets(graph, batch, seed=seed), device)
    state = init_train_state(variables, tx)
    start = time.perf_counter()
    compiled = step.lower(state, images, targets).compile()
    compile_s = time.perf_counter() - start
    box = [state]

    def run():
        box[0], metrics = compiled(box[0], images, targets, step.extras)
        jax.block_until_ready(metrics)

    return run, compile_s


def forward_timing(graph: ir.Graph, variables: Variables, batch: int, *, repeats: int = 5,
                   warmup: int = 1, device=None, seed: int = 0) -> Timing:
    """Inference latency of `runtime.forward` at ``batch`` (`prepare_forward`)."""
    run, compile_s = prepare_forward(graph, variables, batch, device=device, seed=seed)
    return _time_runs(run, repeats, warmup, compile_s)


def train_step_timing(graph: ir.Graph, variables: Variables, batch: int, *, repeats: int = 5,
                      warmup: int = 1, sparsity: float = 1e-3, device=None, seed: int = 0
                      ) -> Timing:
    """One SGD training step with the sparsity penalty (`prepare_train_step`)."""
    run, compile_s = prepare_train_step(graph, variables, batch, sparsity=sparsity,
                                        device=device, seed=seed)
    return _time_runs(run, repeats, warmup, compile_s)


def _onnxruntime(graph: ir.Graph, variables: Variables, images: np.ndarray) -> Callable[[], Any]:
    """The network exported to ONNX (BN folded, `darkslim export`'s defaults) in an
    onnxruntime CPU session with full graph optimisation, as a deployment runs it."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(f"onnxruntime is not installed ({exc})") from None
    from darkslim.onnx_deploy import export_checked
    from export import ExportOptions
    from export.runtimes import ort_session

    model = export_checked(graph, variables, ExportOptions(batch=images.shape[0]))
    session = ort_session(model)
    feed = {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32)}
    return lambda: session.run(None, feed)


# name -> prepare(graph, variables, images NHWC float32) -> run(); see the docstring.
ENGINES: dict[str, Callable[[ir.Graph, Any, np.ndarray], Callable[[], Any]]] = {
    "onnxruntime": _onnxruntime,
}


def engine_timing(name: str, graph: ir.Graph, variables: Variables, batch: int, *,
                  repeats: int = 5, warmup: int = 1, seed: int = 0) -> Timing:
    """Latency of one of `ENGINES` at ``batch``; raises `EngineUnavailable`."""
    images = random_images(graph, batch, seed)
    start = time.perf_counter()
    run = ENGINES[name](graph, variables, images)
    return _time_runs(run, repeats, warmup, time.perf_counter() - start)


def device_facts(device=None) -> dict[str, str]:
    """What the runtime runs on: device, platform, kind, jax version, CPU count, and the
    XLA options the runtime is compiled with (`runtime.xla_options`)."""
    import os

    import jax

    from runtime.xla_options import compiler_options

    device = device or jax.devices()[0]
    return {"device": str(device), "platform": device.platform,
            "device_kind": device.device_kind, "jax_version": jax.__version__,
            "cpu_count": str(os.cpu_count()),
            "compiler_options": " ".join(f"{k}={v}" for k, v in compiler_options().items())}


def bench(graph: ir.Graph, variables: Variables, batches: tuple[int, ...] = (1, 8), *,
          train: bool = False, engines: tuple[str, ...] = (), repeats: int = 5,
          warmup: int = 1, sparsity: float = 1e-3, device=None) -> dict[str, Any]:
    """Every measurement as a JSON-able dict (`darkslim bench --json`'s content).

    Keys: ``forward_ms`` and (with ``train``) ``train_step_ms``, each ``{batch: ms}``
    (the median); ``gflops_per_s`` ``{"forward" | "train_step": {batch: GFLOP/s}}``
    (training counts 3× the forward FLOPs: forward, and backward for inputs and
    weights); ``compile_s`` alike; ``runs_ms`` every timed run; ``engines``
    ``{name: {"forward_ms": {batch: ms}} or {"unavailable": reason}}``; and the
    `device_facts`.
    """
    flops = ir.count_flops(graph)
    out: dict[str, Any] = {
        "cfg": graph.path, "size": [graph.height, graph.width],
        "gflops_per_image": flops / 1e9, "repeats": repeats, "warmup": warmup,
        **device_facts(device), "forward_ms": {}, "compile_s": {"forward": {}},
        "gflops_per_s": {"forward": {}}, "runs_ms": {"forward": {}}}
    kinds: list[tuple[str, Callable[..., Any], float, dict[str, Any]]] = [
        ("forward", forward_timing, 1.0, {})]
    if train:
        kinds.append(("train_step", train_step_timing, 3.0, {"sparsity": sparsity}))
        out.update({"train_step_ms": {}, "sparsity": sparsity})
        for key in ("compile_s", "gflops_per_s", "runs_ms"):
            out[key]["train_step"] = {}
    for kind, measure, flop_factor, options in kinds:
        for batch in batches:
            t = measure(graph, variables, batch, repeats=repeats, warmup=warmup,
                        device=device, **options)
            out[f"{kind}_ms"][str(batch)] = t.median_ms
            out["compile_s"][kind][str(batch)] = t.compile_s
            out["gflops_per_s"][kind][str(batch)] = flop_factor * flops * batch / t.median_ms / 1e6
            out["runs_ms"][kind][str(batch)] = list(t.times_ms)
    out["engines"] = {}
    for name in engines:
        try:
            timings = {str(b): engine_timing(name, graph, variables, b, repeats=repeats,
                                             warmup=warmup) for b in batches}
        except EngineUnavailable as exc:
            out["engines"][name] = {"unavailable": str(exc)}
            continue
        out["engines"][name] = {"forward_ms": {b: t.median_ms for b, t in timings.items()},
                                "compile_s": {b: t.compile_s for b, t in timings.items()}}
    return out


__all__ = ["ENGINES", "EngineUnavailable", "Timing", "bench", "device_facts",
           "engine_timing", "forward_timing", "prepare_forward", "prepare_train_step",
           "random_images", "random_targets", "train_step_timing"]
