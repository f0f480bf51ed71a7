"""Training with optax: the jit-compiled step, optimisers, BatchNorm recalibration,
checkpoints, data parallelism and the epoch loop (`fit`).

Sparse training chains `runtime.sparsity.sparsity` (``optax.masked(bn_l1(s), mask)``)
in front of the optimiser (`build_optimizer`)::

    tx = optax.chain(sparsity(graph, params, s=1e-2), make_optimizer("adam", 3e-3))

Data parallelism: `data_mesh` builds a `jax.sharding.Mesh` over a ``data`` axis of all
local devices; the step is jit-compiled with the batch sharded along it and the state
replicated, so XLA inserts the gradient (and BatchNorm statistics) all-reduces. With
one device the same code runs unchanged.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import ir
from frontends import write_atomic
from passes import analyze_prunability
from runtime.data import NO_AUGMENT, Augment, Dataset, iterate_batches, prefetch
from runtime.loss import LossConfig, yolo_loss
from runtime.model import DarknetModule, init_variables
from runtime.sparsity import init_gammas, sparsity  # noqa: F401 (init_gammas re-exported)

# -------------------------------------------------------------------- optimiser

def kernel_mask(params: dict) -> dict:
    """True at conv kernels (weight decay applies to them only, as in ultralytics)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: getattr(path[-1], "key", None) == "kernel", params)


def lr_schedule(lr: float, total_steps: int, *, warmup_steps: int = 0,
                kind: str = "cosine", steps: tuple[float, ...] = (0.8, 0.9),
                scales: float = 0.1, final: float = 0.01) -> optax.Schedule:
    """Linear warm-up to ``lr``, then ``cosine`` (to ``lr·final``), ``step`` (×
    ``scales`` at each fraction in ``steps`` of the run, Darknet's ``policy=steps``)
    or ``constant``."""
    rest = max(1, total_steps - warmup_steps)
    if kind == "cosine":
        main = optax.cosine_decay_schedule(lr, rest, alpha=final)
    elif kind == "step":
        main = optax.piecewise_constant_schedule(
            lr, {max(1, int(f * total_steps) - warmup_steps): scales for f in steps})
    elif kind == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ValueError(f"kind={kind!r}: expected 'cosine', 'step' or 'constant'")
    if warmup_steps <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(lr * 0.01, lr, warmup_steps), main],
                                [warmup_steps])


def make_optimizer(kind: str = "sgd", learning_rate: float | optax.Schedule = 1e-3, *,
                   momentum: float = 0.9, weight_decay: float = 5e-4,
                   decay_mask: Any = None) -> optax.GradientTransformation:
    """SGD with (Nesterov-free) momentum and L2 weight decay, Darknet style, or Adam
    with decoupled weight decay. ``decay_mask`` limits the decay (e.g. `kernel_mask`)."""
    if kind == "sgd":
        return optax.chain(optax.add_decayed_weights(weight_decay, decay_mask),
                           optax.sgd(learning_rate, momentum=momentum))
    if kind == "adam":
        return optax.adamw(learning_rate, b1=momentum, weight_decay=weight_decay,
                           mask=decay_mask)
    raise ValueError(f"optimizer={kind!r}: expected 'sgd' or 'adam'")


# ------------------------------------------------------------------------- step

def init_head_biases(graph: ir.Graph, variables: dict, objects_per_image: float = 4.0
                     ) -> dict:
    """Variables with the biases of the convs feeding ``[yolo]`` set to priors
    (ultralytics' recipe): objectness ``log(p / (1 - p))`` with ``p`` the chance that a
    cell-anchor holds one of ``objects_per_image`` objects, classes ``log(0.6 / (C -
    0.99))``. A net trained from scratch then starts near the answer "background
    everywhere" instead of 0.5 everywhere, which spares its first few hundred steps."""
    params = dict(variables["params"])
    shapes = ir.verify(graph)
    for index in graph.yolo_indices():
        conv = graph.layers[index - 1]
        key = f"layer_{index - 1}"
        if not isinstance(conv, ir.Conv) or "bias" not in params.get(key, {}).get("conv", {}):
            continue
        layer = graph.layers[index]
        count = len(layer.mask)
        bias = np.asarray(params[key]["conv"]["bias"], np.float32).reshape(count, -1).copy()
        grid = shapes[index].h * shapes[index].w * count * len(graph.yolo_indices())
        p = min(0.5, objects_per_image / grid)
        bias[:, 4] = math.log(p / (1 - p))
        if layer.classes > 1:
            bias[:, 5:] = math.log(0.6 / (layer.classes - 0.99))
        params[key] = {**params[key], "conv": {**params[key]["conv"],
                                              "bias": jnp.asarray(bias.reshape(-1))}}
    return {**variables, "params": params}


class TrainState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array


def gamma_stats(params: dict, prunable: tuple[int, ...]) -> dict[str, jax.Array]:
    """Mean |γ| of the prunable convs and the fraction below 0.01 (and 0.001)."""
    if not prunable:
        zero = jnp.zeros((), jnp.float32)
        return {"gamma_mean": zero, "gamma_small": zero, "gamma_tiny": zero}
    g = jnp.abs(jnp.concatenate([params[f"layer_{i}"]["bn"]["scale"] for i in prunable]))
    return {"gamma_mean": g.mean(), "gamma_small": (g < 1e-2).mean(),
            "gamma_tiny": (g < 1e-3).mean()}


def _batch_moments(graph: ir.Graph, bn_eps: float):
    """A jitted ``(params, images) -> (mean, var)`` trees of one batch's BatchNorm
    statistics, read through Flax's running-average update whatever its momentum:
    from running stats of 0 and of 1, ``new = m·old + (1 - m)·batch`` gives both
    ``1 - m`` and the batch statistic."""
    module = DarknetModule(graph, bn_eps=bn_eps)

    @jax.jit
    def moments(params, template, images):
        def run(fill):
            stats = jax.tree.map(lambda a: jnp.full_like(a, fill), template)
            _, new = module.apply({"params": params, "batch_stats": stats}, images,
                                  train=True, mutable=["batch_stats"])
            return new["batch_stats"]

        zero, one = run(0.0), run(1.0)
        return jax.tree.map(lambda a, b: a / (1.0 - (b - a)), zero, one)

    return moments


def recalibrate_bn(graph: ir.Graph, variables: dict, batches, bn_eps: float = 1e-5
                   ) -> dict:
    """Replace the running BatchNorm statistics by their average over ``batches``
    (arrays of images): "precise BN" (Wu & Johnson 2021, detectron2). Darknet's
    running average (momentum .99) lags far behind the weights in a run of a few
    hundred steps; evaluated with it, a net that already detects well in train mode
    scores near zero."""
    if not variables.get("batch_stats"):
        return variables
    moments = _batch_moments(graph, bn_eps)
    total, count = None, 0
    for images in batches:
        stats = moments(variables["params"], variables["batch_stats"], images)
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        count += 1
    if count == 0:
        return variables
    return {**variables, "batch_stats": jax.tree.map(lambda a: a / count, total)}


def init_train_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
    params = variables["params"]
    return TrainState(params=params, batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(array, mesh: Mesh):
    """Split ``array``'s leading (batch) axis over the mesh's ``data`` axis."""
    size = mesh.shape["data"]
    if array.shape[0] % size:
        raise ValueError(f"batch of {array.shape[0]} does not split over {size} devices: "
                         "choose a batch size that is a multiple of the device count")
    return jax.device_put(array, NamedSharding(mesh, PartitionSpec("data")))


def make_train_step(graph: ir.Graph, tx: optax.GradientTransformation, *,
                    loss_config: LossConfig = LossConfig(), bn_eps: float = 1e-5,
                    prunable: tuple[int, ...] = (), mesh: Mesh | None = None
                    ) -> Callable[[TrainState, Any, Any], tuple[TrainState, dict]]:
    """A jit-compiled ``step(state, images, targets) -> (state, metrics)``.

    BatchNorm runs in train mode (batch statistics) and its running statistics are
    updated (Flax ``mutable=["batch_stats"]``). ``metrics`` holds the loss parts and
    the γ statistics of the ``prunable`` convs after the update (`gamma_stats`). With ``mesh`` the
    batch is sharded over its ``data`` axis and the state replicated.
    """
    module = DarknetModule(graph, bn_eps=bn_eps)

    def step(state: TrainState, images, targets):
        def loss_fn(params):
            out, updates = module.apply({"params": params, "batch_stats": state.batch_stats},
                                        images, train=True, mutable=["batch_stats"])
            parts = yolo_loss(graph, out.heads, targets, images.shape[1:3], loss_config)
            return parts.total, (parts, updates["batch_stats"])

        (_, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": parts.total, "box": parts.box, "obj": parts.obj, "cls": parts.cls,
                   **gamma_stats(params, prunable)}
        return TrainState(params, batch_stats, opt_state, state.step + 1), metrics

    if mesh is None:
        return jax.jit(step)
    replicated = NamedSharding(mesh, PartitionSpec())
    batched = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(step, in_shardings=(replicated, batched, batched),
                   out_shardings=(replicated, replicated))


# ------------------------------------------------------------------- checkpoints

CHECKPOINT = "checkpoint.msgpack"


def save_checkpoint(path: str | os.PathLike, state: TrainState, *, epoch: int,
                    extra: dict | None = None) -> None:
    """Params, batch_stats, opt_state, step and ``epoch`` (epochs completed), plus
    ``extra`` JSON-able facts (best mAP, history, seed), as flax msgpack; atomic.

    There is no PRNG key to save: batches and augmentation are functions of (seed,
    epoch, image index) and the step itself draws no random numbers."""
    payload = {"state": flax.serialization.to_state_dict(jax.device_get(state)),
               "epoch": epoch, "extra": json.dumps(extra or {})}
    write_atomic(Path(path), flax.serialization.msgpack_serialize(payload))


def load_checkpoint(path: str | os.PathLike, template: TrainState
                    ) -> tuple[TrainState, int, dict]:
    """Restore a `save_checkpoint` file into the structure of ``template``.

    Raises:
        frontends.CheckpointError: unreadable file, or one written for another network,
            optimiser or sparsity setting (the state trees differ).
    """
    from frontends import CheckpointError

    path = Path(path)
    try:
        payload = flax.serialization.msgpack_restore(path.read_bytes())
        state = flax.serialization.from_state_dict(template, payload["state"])
        shapes_ok = all(np.shape(a) == np.shape(b) for a, b in
                        zip(jax.tree.leaves(template), jax.tree.leaves(state)))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot restore the training state: {exc} "
                              "(expected a darkslim checkpoint of this cfg and the same "
                              "optimiser and sparsity options)") from exc
    if not shapes_ok:
        raise CheckpointError(f"{path}: array shapes differ from this cfg's: expected a "
                              "checkpoint of the same network")
    return state, int(payload["epoch"]), json.loads(payload.get("extra", "{}"))


# --------------------------------------------------------------------- the loop

@dataclass(frozen=True)
class TrainConfig:
    """Everything `fit` needs besides the network and the data.

    The defaults are the recipe measured on the synthetic demo set (Adam 3e-3, cosine
    with one warm-up epoch, batch 16). ``sparsity`` is s (0 disables it);
    ``sparsity_schedule`` one of `runtime.sparsity.SPARSITY_SCHEDULES`, switching at
    ``sparsity_fraction`` of the run; ``mode`` chooses the penalised γ
    (``regular``/``shortcut``, as the prune pass). ``precise_bn`` batches of
    un-augmented training images re-estimate the BatchNorm statistics at the end of
    each epoch (`recalibrate_bn`; 0 keeps Darknet's running averages).
    """

    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    warmup_epochs: float = 1.0
    sparsity: float = 0.0
    sparsity_schedule: str = "constant"
    sparsity_fraction: float = 0.5
    mode: str = "regular"
    seed: int = 0
    augment: Augment = field(default_factory=Augment)
    loss: LossConfig = field(default_factory=LossConfig)
    bn_eps: float = 1e-5
    eval_batch_size: int = 32
    precise_bn: int = 8


class StepInfo(NamedTuple):
    epoch: int          # 0-based epoch being run
    step: int           # global step after this one
    steps_per_epoch: int
    lr: float
    metrics: dict       # floats: loss, box, obj, cls, gamma_mean, gamma_small, ...


class EpochInfo(NamedTuple):
    epoch: int          # epochs completed
    variables: dict
    metrics: dict       # mean train losses, γ stats, and mAP when a valid set is given
    best: bool


@dataclass(frozen=True)
class TrainResult:
    variables: dict
    history: tuple[dict, ...]
    best_map: float | None
    out_dir: Path | None


def build_optimizer(graph: ir.Graph, params: dict, config: TrainConfig,
                    total_steps: int, steps_per_epoch: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The transform `fit` trains with: sparsity (if any) chained before the optimiser."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    schedule = lr_schedule(config.lr, total_steps, warmup_steps=min(warmup, total_steps // 2),
                           kind=config.lr_schedule)
    base = make_optimizer(config.optimizer, schedule, momentum=config.momentum,
                          weight_decay=config.weight_decay, decay_mask=kernel_mask(params))
    if config.sparsity <= 0:
        return base, schedule
    sparse = sparsity(graph, params, config.sparsity, config.sparsity_schedule,
                      mode=config.mode, total_steps=total_steps,
                      fraction=config.sparsity_fraction)
    return optax.chain(sparse, base), schedule


def check_classes(graph: ir.Graph, classes: int, source: str) -> None:
    """Raise ValueError when a ``[yolo]`` head predicts another number of classes than
    the dataset has."""
    for index in graph.yolo_indices():
        head = graph.layers[index]
        if head.classes != classes:
            raise ValueError(f"{head.path}:{head.line}: [yolo] classes={head.classes} but "
                             f"the dataset ({source}) has classes={classes}: use a cfg "
                             "made for this dataset")


@functools.lru_cache(maxsize=8)
def _compiled(graph: ir.Graph, config: TrainConfig, total_steps: int, steps_per_epoch: int,
              mesh: Mesh | None):
    """The optimiser, LR schedule and jitted step of a run, cached so a resumed run or a
    second run of the same setting in one process does not compile again. The params
    only matter through their tree structure, which the graph determines."""
    params = jax.eval_shape(lambda: init_variables(graph))["params"]
    tx, schedule = build_optimizer(graph, params, config, total_steps, steps_per_epoch)
    prunable = analyze_prunability(graph, config.mode).prunable
    step = make_train_step(graph, tx, loss_config=config.loss, bn_eps=config.bn_eps,
                           prunable=prunable, mesh=mesh)
    return tx, schedule, step


def _precise_stats(graph: ir.Graph, state: TrainState, train_set: Dataset,
                   config: TrainConfig, epoch: int, mesh: Mesh | None):
    batches = iterate_batches(train_set, (graph.height, graph.width), config.batch_size,
                              seed=config.seed + 1, epoch=epoch, augment=NO_AUGMENT)
    images = (b.images if mesh is None else shard_batch(b.images, mesh)
              for _, b in zip(range(config.precise_bn), batches))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return recalibrate_bn(graph, variables, images, config.bn_eps)["batch_stats"]


def _mean_metrics(rows: list[dict]) -> dict:
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def fit(graph: ir.Graph, variables: dict, train_set: Dataset, config: TrainConfig, *,
        valid_set: Dataset | None = None, out_dir: str | os.PathLike | None = None,
        resume: bool = False, mesh: Mesh | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        on_epoch: Callable[[EpochInfo], None] | None = None,
        max_steps: int | None = None) -> TrainResult:
    """Train ``variables`` of ``graph`` on ``train_set``.

    Per epoch: shuffled, augmented batches prefetched in the background; the jitted
    step; then (with ``valid_set``) mAP@0.5, and (with ``out_dir``) the checkpoint
    ``checkpoint.msgpack``, ``last.weights`` and, when mAP (or, without a valid set,
    the train loss) improves, ``best.weights``, and ``history.json``.

    Args:
        resume: continue from ``out_dir/checkpoint.msgpack`` (epoch, step, optimiser
            state and all); batches depend on (seed, epoch) only, so a resumed run
            repeats the uninterrupted one.
        mesh: a `data_mesh` to train data-parallel (the batch size must divide).
        on_step, on_epoch: progress callbacks (the CLI's progress bar and plots).
        max_steps: stop after this many steps of the run (tests, benchmarks).
    """
    from frontends import save_variables
    from runtime.metrics import evaluate

    check_classes(graph, train_set.classes, str(train_set.source))
    input_hw = (graph.height, graph.width)
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} training images for a batch of "
                         f"{config.batch_size}: expected at least one full batch")
    total_steps = steps_per_epoch * config.epochs
    tx, schedule, step_fn = _compiled(graph, config, total_steps, steps_per_epoch, mesh)
    state = init_train_state(variables, tx)
    out = Path(out_dir) if out_dir is not None else None
    start_epoch, history, best = 0, [], None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and (out / CHECKPOINT).exists():
            state, start_epoch, extra = load_checkpoint(out / CHECKPOINT, state)
            history, best = list(extra.get("history", [])), extra.get("best")
    if mesh is not None:
        state = replicate(state, mesh)
    for epoch in range(start_epoch, config.epochs):
        batches = iterate_batches(train_set, input_hw, config.batch_size, seed=config.seed,
                                  epoch=epoch, augment=config.augment)
        rows = []
        with prefetch(batches, depth=3) as loader:
            for batch in loader:
                if max_steps is not None and int(state.step) >= max_steps:
                    break
                images, targets = batch.images, batch.targets
                if mesh is not None:
                    images, targets = shard_batch(images, mesh), shard_batch(targets, mesh)
                lr = float(schedule(state.step))
                state, metrics = step_fn(state, images, targets)
                metrics = {k: float(v) for k, v in metrics.items()}
                rows.append(metrics)
                if on_step is not None:
                    on_step(StepInfo(epoch, int(state.step), steps_per_epoch, lr, metrics))
        if config.precise_bn > 0:
            state = state._replace(batch_stats=_precise_stats(
                graph, state, train_set, config, epoch, mesh))
        summary = {"epoch": epoch + 1, "step": int(state.step), **_mean_metrics(rows)}
        current = {"params": state.params, "batch_stats": state.batch_stats}
        if valid_set is not None and len(valid_set):
            result = evaluate(graph, current, valid_set, batch_size=config.eval_batch_size,
                              bn_eps=config.bn_eps, coco=False)
            summary["map50"] = result.map50
            score = result.map50
        else:
            score = -summary.get("loss", math.inf)
        improved = best is None or score > best
        best = score if improved else best
        history.append(summary)
        if out is not None:
            host = jax.device_get(current)
            save_variables(graph, host, out / "last.weights")
            if improved:
                save_variables(graph, host, out / "best.weights")
            write_atomic(out / "history.json", json.dumps(history, indent=1).encode())
            save_checkpoint(out / CHECKPOINT, state, epoch=epoch + 1,
                            extra={"history": history, "best": best, "seed": config.seed})
        if on_epoch is not None:
            on_epoch(EpochInfo(epoch + 1, current, summary, improved))
        if max_steps is not None and int(state.step) >= max_steps:
            break
    final = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    best_map = best if valid_set is not None else None
    return TrainResult(variables=final, history=tuple(history), best_map=best_map,
                       out_dir=out)


