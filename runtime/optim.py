"""Optimisers for `runtime.train.fit`: the learning-rate schedule, SGD/Adam with weight
decay on the kernels, and the sparsity transform chained in front (`build_optimizer`)::

    tx = optax.chain(sparsity(graph, params, s=1e-2), make_optimizer("adam", 3e-3))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import ir
from ir.variables import layer_index
from runtime.sparsity import auto_sparsity, gamma_mask, sparsity

if TYPE_CHECKING:  # pragma: no cover
    from runtime.train import TrainConfig


def freeze_mask(params: dict, upto: int) -> dict:
    """True at every parameter of the layers before ``upto`` (``layer_i``, i < upto)."""
    def frozen(path, _leaf) -> bool:
        index = layer_index(str(getattr(path[0], "key", "")))
        return index is not None and index < upto

    return jax.tree_util.tree_map_with_path(frozen, params)


class FreezeState(NamedTuple):
    # shadows tuple.count, as optax's own states do; renaming would change the state tree
    count: jax.Array  # type: ignore[assignment]


def freeze(params: dict, upto: int, steps: int | None = None
           ) -> optax.GradientTransformation:
    """Zero the updates of the layers before ``upto``: only layers ``upto`` on train,
    as Darknet's ``stopbackward`` (and ultralytics' ``--freeze``). Chained *after* the
    optimiser, so weight decay does not move a frozen parameter either: after a step
    it is bit-identical. With ``steps`` the freeze lifts after that many steps (the
    first epochs of a transfer: the new heads settle before the backbone moves).

    BatchNorm running statistics are not parameters: in train mode they still follow
    the data in frozen layers, as in Darknet and ultralytics.
    """
    mask = freeze_mask(params, upto)
    if steps is None:
        return optax.masked(optax.set_to_zero(), mask)

    def init(_params):
        return FreezeState(count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        on = state.count < steps
        updates = jax.tree.map(lambda u, m: jnp.where(on, jnp.zeros_like(u), u) if m else u,
                               updates, mask)
        return updates, FreezeState(count=optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init, update)


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



def build_optimizer(graph: ir.Graph, params: dict, config: TrainConfig,
                    total_steps: int, steps_per_epoch: int
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The transform `fit` trains with: sparsity (if any; ``auto`` is the controller
    `runtime.sparsity.auto_sparsity` steering s toward ``config.target_prune``) chained
    before the optimiser, and `freeze` (``config.freeze`` > 0) after it; with sparsity,
    ``config.gamma_lr`` scales the penalised γ's updates (their own learning rate)."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    schedule = lr_schedule(config.lr, total_steps, warmup_steps=min(warmup, total_steps // 2),
                           kind=config.lr_schedule)
    base = make_optimizer(config.optimizer, schedule, momentum=config.momentum,
                          weight_decay=config.weight_decay, decay_mask=kernel_mask(params))
    if config.freeze > 0:
        steps = (None if config.freeze_epochs is None
                 else int(round(config.freeze_epochs * steps_per_epoch)))
        base = optax.chain(base, freeze(params, config.freeze, steps))
    if config.sparsity <= 0:
        return base, schedule
    if config.gamma_lr != 1.0:
        # after the optimiser: Adam's step is ~lr whatever the L1 subgradient, so on a
        # short run γ cannot travel from a pretrained ~1.7 to 0 at the shared lr
        base = optax.chain(base, optax.masked(optax.scale(config.gamma_lr),
                                              gamma_mask(graph, params, config.mode)))
    if config.sparsity_schedule == "auto":
        sparse = auto_sparsity(graph, params, config.sparsity, config.target_prune,
                               mode=config.mode, period=steps_per_epoch,
                               total_steps=total_steps, reach=config.sparsity_fraction)
    else:
        sparse = sparsity(graph, params, config.sparsity, config.sparsity_schedule,
                          mode=config.mode, total_steps=total_steps,
                          fraction=config.sparsity_fraction)
    return optax.chain(sparse, base), schedule


