"""Sparsity for network slimming as optax transforms.

Sparse training (Liu et al. 2017) adds ``s·sign(γ)`` to the gradient of every penalised
BatchNorm scale γ, the subgradient of ``s·Σ|γ|``. `bn_l1` is that transform; wrapped in
``optax.masked`` with `gamma_mask` (the BatchNorm scales of the convs the prunability
analysis ranks, the same analysis the prune pass uses) it penalises exactly those γ, and
it chains in front of any optimiser::

    tx = optax.chain(sparsity(graph, params, s=1e-2), optax.adam(3e-3))

The schedules the field uses are transforms too, their only state a step count in the
optax state: ``constant`` s, ``global`` decay (s × 0.01 after a fraction of the run) and
``local`` decay (after that fraction, the largest 15% of |γ| get 100× less penalty).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import ir
from passes import analyze_prunability

SPARSITY_SCHEDULES = ("constant", "global", "local")


class BnL1State(NamedTuple):
    count: jax.Array  # steps taken; the schedules read it


def _as_schedule(s: float | optax.Schedule) -> optax.Schedule:
    return s if callable(s) else (lambda count: jnp.asarray(s, jnp.float32))


def bn_l1(s: float | optax.Schedule) -> optax.GradientTransformation:
    """Add ``s·sign(γ)`` to the updates (the L1 subgradient of ``s·Σ|γ|``).

    Chain it before the optimiser, as the seed adds it to ``.grad`` before
    ``optimizer.step()``. Apply it to γ only by wrapping it in ``optax.masked`` (see
    `sparsity`). ``s`` may be an optax schedule of the step count.

    >>> tx = bn_l1(0.1)
    >>> g, _ = tx.update({"g": jnp.zeros(2)}, tx.init(None), {"g": jnp.array([-2., 3.])})
    >>> g["g"].tolist()
    [-0.10000000149011612, 0.10000000149011612]
    """
    schedule = _as_schedule(s)

    def init(params) -> BnL1State:
        del params
        return BnL1State(count=jnp.zeros((), jnp.int32))

    def update(updates, state: BnL1State, params=None):
        if params is None:
            raise ValueError("bn_l1 needs params: call tx.update(grads, state, params)")
        rate = schedule(state.count)
        updates = jax.tree.map(lambda u, p: u + (rate * jnp.sign(p)).astype(u.dtype),
                               updates, params)
        return updates, BnL1State(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def bn_l1_local(s: float, start: int, keep: float = 0.15, factor: float = 0.01
                ) -> optax.GradientTransformation:
    """`bn_l1` with the ``local`` decay: from step ``start`` on, the ``keep`` fraction
    of γ with the largest |γ| (ranked over every leaf the transform sees, i.e. all
    penalised γ) get ``s·factor`` instead of ``s``: the channels that survive are
    left to recover."""

    def init(params) -> BnL1State:
        del params
        return BnL1State(count=jnp.zeros((), jnp.int32))

    def update(updates, state: BnL1State, params=None):
        if params is None:
            raise ValueError("bn_l1_local needs params: call tx.update(grads, state, params)")
        leaves = jax.tree.leaves(params)
        if not leaves:
            return updates, BnL1State(count=optax.safe_increment(state.count))
        magnitudes = jnp.concatenate([jnp.abs(p).ravel() for p in leaves])
        threshold = jnp.quantile(magnitudes, 1 - keep)
        late = state.count >= start

        def one(u, p):
            rate = jnp.where(late & (jnp.abs(p) >= threshold), s * factor, s)
            return u + (rate * jnp.sign(p)).astype(u.dtype)

        return (jax.tree.map(one, updates, params),
                BnL1State(count=optax.safe_increment(state.count)))

    return optax.GradientTransformation(init, update)


def sparsity_schedule(s: float, schedule: str = "constant", total_steps: int = 1,
                      fraction: float = 0.5, keep: float = 0.15, factor: float = 0.01
                      ) -> optax.GradientTransformation:
    """The L1 transform of a named schedule (unmasked: wrap it with ``optax.masked``).

    Args:
        s: the penalty.
        schedule: ``constant``; ``global`` (``s × factor`` from ``fraction`` of
            ``total_steps`` on); ``local`` (from there, the top ``keep`` of |γ| get
            ``s × factor``).
    """
    start = int(round(fraction * total_steps))
    if schedule == "constant":
        return bn_l1(s)
    if schedule == "global":
        return bn_l1(optax.piecewise_constant_schedule(s, {start: factor}))
    if schedule == "local":
        return bn_l1_local(s, start, keep, factor)
    raise ValueError(f"schedule={schedule!r}: expected one of {SPARSITY_SCHEDULES}")


def gamma_mask(graph: ir.Graph, params: dict, mode: str = "regular",
               ignore: tuple[int, ...] = ()) -> dict:
    """A pytree of bools shaped like ``params``: True at the BatchNorm scales of the
    convs `passes.analyze_prunability` calls prunable in ``mode``, False elsewhere."""
    prunable = set(analyze_prunability(graph, mode, ignore).prunable)

    def mark(path, leaf) -> bool:
        keys = [getattr(k, "key", None) for k in path]
        return (len(keys) == 3 and keys[1:] == ["bn", "scale"]
                and int(str(keys[0]).removeprefix("layer_")) in prunable)

    return jax.tree_util.tree_map_with_path(mark, params)


def sparsity(graph: ir.Graph, params: dict, s: float, schedule: str = "constant", *,
             mode: str = "regular", total_steps: int = 1, fraction: float = 0.5,
             ignore: tuple[int, ...] = ()) -> optax.GradientTransformation:
    """``optax.masked(sparsity_schedule(...), gamma_mask(graph, params, mode))``."""
    return optax.masked(sparsity_schedule(s, schedule, total_steps, fraction),
                        gamma_mask(graph, params, mode, ignore))


def init_gammas(variables: dict, value: float = 0.5) -> dict:
    """Variables with every BatchNorm scale γ set to ``value``: network slimming's
    initialisation for sparse training from scratch (Liu et al. 2017 start γ at 0.5,
    so the L1 term reaches the useless channels within a short run)."""
    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (jnp.full_like(leaf, value)
                            if [getattr(k, "key", None) for k in path[-2:]] == ["bn", "scale"]
                            else leaf), variables["params"])
    return {**variables, "params": params}
