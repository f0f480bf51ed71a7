"""The jit-compiled train step and what surrounds it: the training state, head-bias
priors, the γ statistics the step reports, and BatchNorm recalibration ("precise BN").

With a mesh (`runtime.parallel.data_mesh`) the step is compiled with the batch sharded
along its ``data`` axis and the state replicated, so XLA inserts the gradient (and
BatchNorm statistics) all-reduces, across processes too. With one device the same
code runs unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import ir
from ir.variables import Variables
from runtime.loss import LossConfig, yolo_terms
from runtime.model import DarknetModule
from runtime.parallel import replicate
from runtime.sparsity import current_rate
from runtime.terms import LossTerm, StepOutputs, check_terms, sum_terms
from runtime.xla_options import compiler_options


def init_head_biases(graph: ir.Graph, variables: Variables, objects_per_image: float = 4.0
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
        assert isinstance(layer, ir.Yolo)  # a yolo_indices() layer
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


def _batch_moments(graph: ir.Graph, bn_eps: float, mesh: Mesh | None = None):
    """A jitted ``(params, images) -> (mean, var)`` trees of one batch's BatchNorm
    statistics, read through Flax's running-average update whatever its momentum:
    from running stats of 0 and of 1, ``new = m·old + (1 - m)·batch`` gives both
    ``1 - m`` and the batch statistic."""
    module = DarknetModule(graph, bn_eps=bn_eps)

    def moments(params, template, images):
        def run(fill):
            stats = jax.tree.map(lambda a: jnp.full_like(a, fill), template)
            _, new = module.apply({"params": params, "batch_stats": stats}, images,
                                  train=True, mutable=["batch_stats"])
            return new["batch_stats"]

        zero, one = run(0.0), run(1.0)
        return jax.tree.map(lambda a, b: a / (1.0 - (b - a)), zero, one)

    if mesh is None:
        return jax.jit(moments, compiler_options=compiler_options())
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(moments, in_shardings=(replicated, replicated,
                                          NamedSharding(mesh, PartitionSpec("data"))),
                   out_shardings=replicated, compiler_options=compiler_options())


def recalibrate_bn(graph: ir.Graph, variables: Variables, batches, bn_eps: float = 1e-5,
                   mesh: Mesh | None = None) -> Variables:
    """Replace the running BatchNorm statistics by their average over ``batches``
    (arrays of images): "precise BN" (Wu & Johnson 2021, detectron2). Darknet's
    running average (momentum .99) lags far behind the weights in a run of a few
    hundred steps; evaluated with it, a net that already detects well in train mode
    scores near zero. With ``mesh``, ``batches`` are arrays sharded over it
    (`runtime.parallel.global_batch`)."""
    if not variables.get("batch_stats"):
        return variables
    moments = _batch_moments(graph, bn_eps, mesh)
    total, count = None, 0
    for images in batches:
        stats = moments(variables["params"], variables["batch_stats"], images)
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        count += 1
    if count == 0:
        return variables
    return {**variables, "batch_stats": jax.tree.map(lambda a: a / count, total)}


def init_train_state(variables: Variables, tx: optax.GradientTransformation) -> TrainState:
    params = variables["params"]
    return TrainState(params=params, batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))



def place_extras(extras: tuple, mesh: Mesh | None) -> tuple:
    """The terms' extra pytrees on the devices, once (replicated over ``mesh``), so a
    step does not copy them from the host again each time."""
    if all(extra is None for extra in extras):
        return extras
    return replicate(extras, mesh) if mesh is not None else jax.device_put(extras)


class TrainStep:
    """The compiled train step: ``step(state, images, targets[, extras]) -> (state,
    metrics)``, and ``step.lower(...)`` with the same arguments (its ``compile()``
    takes all four: ``compiled(state, images, targets, step.extras)``).

    ``extras`` (one pytree per loss term, in order) is an argument of the compiled
    function; left out, it is the terms' own ``extra`` fields, put on the devices once
    (replicated over the mesh) when the step is made.
    """

    def __init__(self, jitted, terms: tuple[LossTerm, ...], mesh: Mesh | None) -> None:
        self.jitted, self.terms = jitted, terms
        self.extras = place_extras(tuple(term.extra for term in terms), mesh)

    def __call__(self, state: TrainState, images, targets, extras: tuple | None = None
                 ) -> tuple[TrainState, dict]:
        return self.jitted(state, images, targets, self.extras if extras is None else extras)

    def lower(self, state: TrainState, images, targets, extras: tuple | None = None):
        return self.jitted.lower(state, images, targets,
                                 self.extras if extras is None else extras)


def make_train_step(graph: ir.Graph, tx: optax.GradientTransformation, *,
                    terms: Sequence[LossTerm] | None = None,
                    loss_config: LossConfig = LossConfig(), bn_eps: float = 1e-5,
                    prunable: tuple[int, ...] = (), mesh: Mesh | None = None) -> TrainStep:
    """A jit-compiled ``step(state, images, targets) -> (state, metrics)`` (`TrainStep`).

    The loss is the sum of ``terms`` (`runtime.terms`; default
    ``yolo_terms(loss_config)``), each seeing the forward pass of ``images`` and its
    own ``extra`` pytree, an argument of the compiled step. BatchNorm runs in train
    mode (batch statistics) and its running statistics are updated (Flax
    ``mutable=["batch_stats"]``). ``metrics`` holds ``loss`` (the total), every
    metric the terms report under its name, the sparsity strength ``s`` applied, and
    the γ statistics of the ``prunable`` convs after the update (`gamma_stats`). With
    ``mesh`` the batch is sharded over its ``data`` axis; the state, the extras and the
    metrics (scalars) are replicated.
    """
    terms = check_terms(yolo_terms(loss_config) if terms is None else terms)
    module = DarknetModule(graph, bn_eps=bn_eps)

    def step(state: TrainState, images, targets, extras):
        def loss_fn(params):
            out, updates = module.apply({"params": params, "batch_stats": state.batch_stats},
                                        images, train=True, mutable=["batch_stats"])
            outputs = StepOutputs(heads=out.heads, forward=out, images=images,
                                  input_hw=images.shape[1:3], graph=graph, params=params)
            total, parts = sum_terms(terms, outputs, targets, extras)
            return total, (parts, updates["batch_stats"])

        # Only the trained params are differentiated: the extras (a teacher's
        # variables, say) enter as constants of the loss and leave untouched.
        (total, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total, **parts, "s": current_rate(opt_state),
                   **gamma_stats(params, prunable)}
        return TrainState(params, batch_stats, opt_state, state.step + 1), metrics

    if mesh is None:
        return TrainStep(jax.jit(step, compiler_options=compiler_options()), terms, None)
    replicated = NamedSharding(mesh, PartitionSpec())
    batched = NamedSharding(mesh, PartitionSpec("data"))
    jitted = jax.jit(step, in_shardings=(replicated, batched, batched, replicated),
                     out_shardings=(replicated, replicated),
                     compiler_options=compiler_options())
    return TrainStep(jitted, terms, mesh)
