"""The epoch loop (`fit`) and its configuration.

`fit` trains data-parallel over a mesh of every device of every process
(`runtime.parallel`): each process loads its rows of every batch, the jitted step
(`runtime.step`) all-reduces, the state is replicated. Per epoch it re-estimates the
BatchNorm statistics, computes the sparsity diagnostics (`passes.diagnostics`) and
mAP, hands the epoch to ``on_epoch`` (the app writes weights, logs and plots there,
in process 0 only) and saves the training state with Orbax (`runtime.checkpoint`).
The runtime itself writes nothing but those checkpoints.

Public names of the modules it was split from are re-exported here.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh

import ir
from ir import Variables
from passes import analyze_prunability
from passes.analysis import Mode
from passes.diagnostics import sparsity_metrics
from runtime.batches import NO_AUGMENT, Augment, iterate_batches, prefetch
from runtime.checkpoint import CHECKPOINTS, Checkpointer, TrainStateError
from runtime.dataset import Dataset
from runtime.loss import LossConfig, yolo_terms
from runtime.model import init_variables
from runtime.optim import build_optimizer, kernel_mask, lr_schedule, make_optimizer
from runtime.parallel import data_mesh, global_batch, process_rows, replicate, shard_batch, to_host
from runtime.sparsity import init_gammas, sparsity
from runtime.step import (
    TrainState,
    TrainStep,
    gamma_stats,
    init_head_biases,
    init_train_state,
    make_train_step,
    place_extras,
    recalibrate_bn,
)
from runtime.terms import LossTerm, check_terms, term_names, without_extra

__all__ = [
    "CHECKPOINTS", "Checkpointer", "EpochInfo", "StepInfo", "TrainConfig", "TrainResult",
    "TrainState", "TrainStateError", "TrainStep", "build_optimizer", "check_classes",
    "data_mesh", "fit", "gamma_stats", "init_gammas", "init_head_biases", "init_train_state",
    "kernel_mask", "lr_schedule", "make_optimizer", "make_train_step", "recalibrate_bn",
    "replicate", "shard_batch", "sparsity",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything `fit` needs besides the network and the data.

    The defaults are the recipe measured on the synthetic demo set (Adam 3e-3, cosine
    with one warm-up epoch, batch 16). ``sparsity`` is s (0 disables it);
    ``sparsity_schedule`` one of `runtime.sparsity.SPARSITY_SCHEDULES`, switching at
    ``sparsity_fraction`` of the run, or ``auto``: s is the starting strength of a
    controller that steers it until ``target_prune`` of the prunable |γ| are below
    1e-2, aiming to get there by ``sparsity_fraction`` of the run
    (`runtime.sparsity.bn_l1_auto`); ``mode`` chooses the penalised γ
    (``regular``/``shortcut``, as the prune pass). ``precise_bn`` batches of
    un-augmented training images re-estimate the BatchNorm statistics at the end of
    each epoch (`recalibrate_bn`; 0 keeps Darknet's running averages). ``freeze`` N > 0
    trains only the layers from N on (`runtime.optim.freeze`, Darknet's
    ``stopbackward``), for the first ``freeze_epochs`` epochs (None: the whole run).
    With sparsity, ``gamma_lr`` multiplies the learning rate of the penalised γ (Adam
    moves a parameter ~lr per step, so a pretrained γ of ~1.7 needs ~1,700 steps to
    reach 0 at lr 1e-3: more than a small set's short run has).
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
    target_prune: float = 0.5
    mode: Mode = "regular"
    seed: int = 0
    augment: Augment = field(default_factory=Augment)
    loss: LossConfig = field(default_factory=LossConfig)
    bn_eps: float = 1e-5
    eval_batch_size: int = 32
    precise_bn: int = 8
    freeze: int = 0
    freeze_epochs: float | None = None
    gamma_lr: float = 1.0


class StepInfo(NamedTuple):
    epoch: int          # 0-based epoch being run
    step: int           # global step after this one
    steps_per_epoch: int
    lr: float
    metrics: dict       # floats: loss, each term's (box, obj, cls, ...), s, gamma_mean, ...
    terms: tuple[str, ...] = ("box", "obj", "cls")  # the loss terms' metric names


class EpochInfo(NamedTuple):
    epoch: int          # epochs completed
    variables: dict     # host (numpy) params and batch_stats
    metrics: dict       # mean train losses, s, sparsity diagnostics, mAP with a valid set
    best: bool          # this epoch scored best so far
    history: tuple      # every epoch's metrics so far (after a resume too)
    terms: tuple[str, ...] = ("box", "obj", "cls")  # the loss terms' metric names


@dataclass(frozen=True)
class TrainResult:
    variables: dict
    history: tuple[dict, ...]
    best_map: float | None
    out_dir: Path | None


def check_classes(graph: ir.Graph, classes: int, source: str) -> None:
    """Raise ValueError when a ``[yolo]`` head predicts another number of classes than
    the dataset has."""
    for index in graph.yolo_indices():
        head = graph.layers[index]
        assert isinstance(head, ir.Yolo)  # a yolo_indices() layer
        if head.classes != classes:
            raise ValueError(f"{head.path}:{head.line}: [yolo] classes={head.classes} but "
                             f"the dataset ({source}) has classes={classes}: use a cfg "
                             "made for this dataset")



@functools.lru_cache(maxsize=8)
def _compiled(graph: ir.Graph, config: TrainConfig, total_steps: int, steps_per_epoch: int,
              mesh: Mesh | None, terms: tuple[LossTerm, ...]
              ) -> tuple[optax.GradientTransformation, optax.Schedule, TrainStep]:
    """The optimiser, LR schedule and jitted step of a run, cached so a resumed run or a
    second run of the same setting in one process does not compile again. The params
    only matter through their tree structure, which the graph determines; the terms
    through their static fields (``fit`` passes their extras at each step)."""
    params = jax.eval_shape(lambda: init_variables(graph))["params"]
    tx, schedule = build_optimizer(graph, params, config, total_steps, steps_per_epoch)
    prunable = analyze_prunability(graph, config.mode).prunable
    step = make_train_step(graph, tx, terms=terms, bn_eps=config.bn_eps,
                           prunable=prunable, mesh=mesh)
    return tx, schedule, step


def _batches(graph: ir.Graph, train_set: Dataset, config: TrainConfig, epoch: int,
             mesh: Mesh | None, *, seed: int, augment: Augment):
    """This process's rows of every batch of ``epoch``, as arrays the step takes."""
    rows = process_rows(mesh, config.batch_size) if mesh is not None else None
    batches = iterate_batches(train_set, (graph.height, graph.width), config.batch_size,
                              seed=seed, epoch=epoch, augment=augment, rows=rows)
    for batch in batches:
        if mesh is None:
            yield batch.images, batch.targets
        else:
            yield (global_batch(batch.images, mesh, config.batch_size),
                   global_batch(batch.targets, mesh, config.batch_size))


def _precise_stats(graph: ir.Graph, state: TrainState, train_set: Dataset,
                   config: TrainConfig, epoch: int, mesh: Mesh | None):
    batches = _batches(graph, train_set, config, epoch, mesh, seed=config.seed + 1,
                       augment=NO_AUGMENT)
    images = (images for _, (images, _) in zip(range(config.precise_bn), batches))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return recalibrate_bn(graph, variables, images, config.bn_eps, mesh)["batch_stats"]


def _mean_metrics(rows: list[dict]) -> dict:
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def fit(graph: ir.Graph, variables: Variables, train_set: Dataset, config: TrainConfig, *,
        valid_set: Dataset | None = None, out_dir: str | os.PathLike | None = None,
        resume: bool = False, mesh: Mesh | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        on_epoch: Callable[[EpochInfo], None] | None = None,
        max_steps: int | None = None, extra_terms: Sequence[LossTerm] = ()) -> TrainResult:
    """Train ``variables`` of ``graph`` on ``train_set``.

    Per epoch: shuffled, augmented batches prefetched in the background (each process
    loads its own rows); the jitted step; BatchNorm recalibration; the epoch summary
    (mean losses, the sparsity strength ``s``, `passes.diagnostics.sparsity_metrics`,
    and with ``valid_set`` mAP@0.5); ``on_epoch``; then (with ``out_dir``) an Orbax
    checkpoint in ``out_dir/checkpoints``. Weights files, logs and plots are the
    caller's, in ``on_epoch`` (`darkslim.trainlog` writes them in process 0).

    Args:
        resume: continue from the latest checkpoint in ``out_dir`` (epoch, step,
            optimiser and sparsity-controller state); batches depend on (seed, epoch)
            only, so a resumed run repeats the uninterrupted one, with any number of
            processes.
        mesh: a `runtime.parallel.data_mesh` to train data-parallel (the batch size
            must divide over its devices); a multi-process run always uses one over
            every device.
        on_step, on_epoch: progress callbacks, called in every process.
        max_steps: stop after this many steps of the run (tests, benchmarks); an epoch
            cut short is neither summarised nor checkpointed.
        extra_terms: loss terms (`runtime.terms.LossTerm`) added after the YOLO loss
            ``yolo_terms(config.loss)``; their metrics join the step's and the
            epoch's under their names (``StepInfo.terms`` and ``EpochInfo.terms``
            list every term's). Their ``extra`` pytrees are put on the devices once and
            passed to every step.
    """
    check_classes(graph, train_set.classes, str(train_set.source))
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} training images for a batch of "
                         f"{config.batch_size}: expected at least one full batch")
    if mesh is None and jax.process_count() > 1:
        mesh = data_mesh()
    total_steps = steps_per_epoch * config.epochs
    terms = check_terms((*yolo_terms(config.loss), *extra_terms))
    names = term_names(terms)
    tx, schedule, step_fn = _compiled(graph, config, total_steps, steps_per_epoch, mesh,
                                      tuple(without_extra(term) for term in terms))
    extras = place_extras(tuple(term.extra for term in terms), mesh)
    state = init_train_state(variables, tx)
    checkpoints = Checkpointer(Path(out_dir) / CHECKPOINTS) if out_dir is not None else None
    start_epoch, history, best = 0, [], None
    if resume and checkpoints is not None and checkpoints.latest_epoch() is not None:
        state, meta = checkpoints.restore(state, mesh)
        start_epoch, history, best = int(meta["epoch"]), list(meta["history"]), meta["best"]
    elif mesh is not None:
        state = replicate(state, mesh)
    left_out = len(train_set) - steps_per_epoch * config.batch_size
    try:
        for epoch in range(start_epoch, config.epochs):
            rows, cut = [], False
            batches = _batches(graph, train_set, config, epoch, mesh, seed=config.seed,
                               augment=config.augment)
            with prefetch(batches, depth=3) as loader:
                for images, targets in loader:
                    if max_steps is not None and int(state.step) >= max_steps:
                        cut = True
                        break
                    lr = float(schedule(state.step))
                    state, metrics = step_fn(state, images, targets, extras)
                    metrics = {k: float(v) for k, v in metrics.items()}
                    rows.append(metrics)
                    if on_step is not None:
                        on_step(StepInfo(epoch, int(state.step), steps_per_epoch, lr,
                                         metrics, names))
            if cut or len(rows) < steps_per_epoch:
                break
            if config.precise_bn > 0:
                state = state._replace(batch_stats=_precise_stats(
                    graph, state, train_set, config, epoch, mesh))
            host = to_host({"params": state.params, "batch_stats": state.batch_stats})
            summary = {"epoch": epoch + 1, "step": int(state.step), "left_out": left_out,
                       **_mean_metrics(rows), **sparsity_metrics(graph, host, config.mode)}
            if valid_set is not None and len(valid_set):
                from runtime.metrics import evaluate

                result = evaluate(graph, host, valid_set, batch_size=config.eval_batch_size,
                                  bn_eps=config.bn_eps, coco=False)
                summary["map50"] = score = result.map50
            else:
                score = -summary.get("loss", math.inf)
            improved = best is None or score > best
            best = score if improved else best
            history.append(summary)
            if on_epoch is not None:
                on_epoch(EpochInfo(epoch + 1, host, summary, improved, tuple(history),
                                   names))
            if checkpoints is not None:
                checkpoints.save(epoch + 1, state, {"epoch": epoch + 1, "history": history,
                                                    "best": best, "seed": config.seed})
            if max_steps is not None and int(state.step) >= max_steps:
                break
    finally:
        if checkpoints is not None:
            checkpoints.close()
    final = to_host({"params": state.params, "batch_stats": state.batch_stats})
    best_map = best if valid_set is not None else None
    return TrainResult(variables=final, history=tuple(history), best_map=best_map,
                       out_dir=Path(out_dir) if out_dir is not None else None)
