"""Sparsity for network slimming as optax transforms.

Sparse training (Liu et al. 2017) adds ``s·sign(γ)`` to the gradient of every penalised
BatchNorm scale γ, the subgradient of ``s·Σ|γ|``. `bn_l1` is that transform; wrapped in
``optax.masked`` with `gamma_mask` (the BatchNorm scales of the convs the prunability
analysis ranks, the same analysis the prune pass uses) it penalises exactly those γ, and
it chains in front of any optimiser::

    tx = optax.chain(sparsity(graph, params, s=1e-2), optax.adam(3e-3))

The schedules the field uses are transforms too, their only state a step count in the
optax state: ``constant`` s, ``global`` decay (s × 0.01 after a fraction of the run) and
``local`` decay (after that fraction, the largest 15% of |γ| get 100× less penalty);
``auto`` (`bn_l1_auto`) is a controller that steers s between epochs until a target
share of the penalised γ has collapsed, then holds it. Every state carries ``rate``,
the s of the last step, so ``optax.tree_utils.tree_get(opt_state, "rate")`` reads it
whatever the schedule (`current_rate`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import ir
from ir import Variables
from passes import analyze_prunability
from passes.analysis import Mode

SPARSITY_SCHEDULES = ("constant", "global", "local", "auto")


class BnL1State(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # a NamedTuple field named like a tuple method; steps taken
    rate: jax.Array   # the s applied at the last step (for logs)


def _init_state() -> BnL1State:
    return BnL1State(count=jnp.zeros((), jnp.int32), rate=jnp.zeros((), jnp.float32))


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
        return _init_state()

    def update(updates, state: BnL1State, params=None):
        if params is None:
            raise ValueError("bn_l1 needs params: call tx.update(grads, state, params)")
        rate = jnp.asarray(schedule(state.count), jnp.float32)
        updates = jax.tree.map(lambda u, p: u + (rate * jnp.sign(p)).astype(u.dtype),
                               updates, params)
        return updates, BnL1State(count=optax.safe_increment(state.count), rate=rate)

    return optax.GradientTransformation(init, update)


def bn_l1_local(s: float, start: int, keep: float = 0.15, factor: float = 0.01
                ) -> optax.GradientTransformation:
    """`bn_l1` with the ``local`` decay: from step ``start`` on, the ``keep`` fraction
    of γ with the largest |γ| (ranked over every leaf the transform sees, i.e. all
    penalised γ) get ``s·factor`` instead of ``s``: the channels that survive are
    left to recover."""

    def init(params) -> BnL1State:
        del params
        return _init_state()

    def update(updates, state: BnL1State, params=None):
        if params is None:
            raise ValueError("bn_l1_local needs params: call tx.update(grads, state, params)")
        leaves = jax.tree.leaves(params)
        rate = jnp.asarray(s, jnp.float32)  # the base s; the top |γ| get s·factor
        if not leaves:
            return updates, BnL1State(count=optax.safe_increment(state.count), rate=rate)
        magnitudes = jnp.concatenate([jnp.abs(p).ravel() for p in leaves])
        threshold = jnp.quantile(magnitudes, 1 - keep)
        late = state.count >= start

        def one(u, p):
            rate = jnp.where(late & (jnp.abs(p) >= threshold), s * factor, s)
            return u + (rate * jnp.sign(p)).astype(u.dtype)

        return (jax.tree.map(one, updates, params),
                BnL1State(count=optax.safe_increment(state.count),
                          rate=jnp.asarray(s, jnp.float32)))

    return optax.GradientTransformation(init, update)


class AutoSparsityState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # a NamedTuple field named like a tuple method; steps taken
    rate: jax.Array     # the current s
    reached: jax.Array  # True once the target share collapsed: s is held from then on
    share: jax.Array    # share of penalised |γ| below the threshold at the last check


def bn_l1_auto(s: float, target: float, period: int, total_steps: int, *,
               threshold: float = 1e-2, reach: float = 0.5, gain: float = 2.0,
               max_factor: float = 1.5, s_min: float | None = None,
               s_max: float | None = None) -> optax.GradientTransformation:
    """`bn_l1` whose s steers itself: a controller of the penalty strength.

    Every ``period`` steps (one epoch in `fit`, so "between epochs") it measures
    ``share``, the fraction of the |γ| it sees (wrap it in ``optax.masked`` with
    `gamma_mask`: the prunable γ) below ``threshold``, and compares it with the target
    path ``target · min(1, count / (reach · total_steps))``: behind the path s grows,
    ahead of it s shrinks, by ``exp(gain · (path − share))`` clipped to
    ``[1/max_factor, max_factor]`` per period and to ``[s_min, s_max]`` (default
    ``s .. 100·s``: never below the start, because the share answers s late and a
    penalty relaxed while ahead leaves it stalled short of the target). Once
    ``share >= target`` it holds s for the rest of the run,
    so the network can recover its accuracy at a steady penalty. The state (s, the
    latch, the last share) is an optax state, so it is checkpointed with the
    optimiser's.

    Args:
        s: the starting penalty.
        target: the share of prunable |γ| to drive below ``threshold`` (the prune
            ratio wanted, ``--target-prune``).
        period: steps between two adjustments.
        total_steps: the run's length (the target path reaches ``target`` at
            ``reach`` of it).
    """
    if not 0 < target < 1:
        raise ValueError(f"target={target}: expected a share in (0, 1)")
    if period < 1 or total_steps < 1:
        raise ValueError(f"period={period}, total_steps={total_steps}: expected >= 1")
    low = s if s_min is None else s_min
    high = s * 100 if s_max is None else s_max
    horizon = max(1.0, reach * total_steps)

    def init(params) -> AutoSparsityState:
        del params
        return AutoSparsityState(count=jnp.zeros((), jnp.int32),
                                 rate=jnp.asarray(s, jnp.float32),
                                 reached=jnp.zeros((), bool),
                                 share=jnp.zeros((), jnp.float32))

    def update(updates, state: AutoSparsityState, params=None):
        if params is None:
            raise ValueError("bn_l1_auto needs params: call tx.update(grads, state, params)")
        leaves = jax.tree.leaves(params)
        rate, reached, share = state.rate, state.reached, state.share
        if leaves:
            check = (state.count > 0) & (state.count % period == 0)
            magnitudes = jnp.concatenate([jnp.abs(p).ravel() for p in leaves])
            measured = (magnitudes < threshold).mean().astype(jnp.float32)
            path = target * jnp.minimum(1.0, state.count / horizon)
            factor = jnp.clip(jnp.exp(gain * (path - measured)), 1 / max_factor, max_factor)
            steered = jnp.clip(rate * factor, low, high).astype(jnp.float32)
            now_reached = reached | (check & (measured >= target))
            rate = jnp.where(check & ~now_reached, steered, rate)
            share = jnp.where(check, measured, share)
            reached = now_reached
        updates = jax.tree.map(lambda u, p: u + (rate * jnp.sign(p)).astype(u.dtype),
                               updates, params)
        return updates, AutoSparsityState(count=optax.safe_increment(state.count),
                                          rate=rate, reached=reached, share=share)

    return optax.GradientTransformation(init, update)


def current_rate(opt_state) -> jax.Array:
    """The s the sparsity transform inside ``opt_state`` applied last (0 without one)."""
    found = optax.tree_utils.tree_get(opt_state, "rate")
    return jnp.zeros((), jnp.float32) if found is None else found


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
    if schedule == "auto":
        raise ValueError("schedule='auto' needs a target: use auto_sparsity or bn_l1_auto")
    raise ValueError(f"schedule={schedule!r}: expected one of {SPARSITY_SCHEDULES}")


def gamma_mask(graph: ir.Graph, params: dict, mode: Mode = "regular",
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
             mode: Mode = "regular", total_steps: int = 1, fraction: float = 0.5,
             ignore: tuple[int, ...] = ()) -> optax.GradientTransformation:
    """``optax.masked(sparsity_schedule(...), gamma_mask(graph, params, mode))``."""
    return optax.masked(sparsity_schedule(s, schedule, total_steps, fraction),
                        gamma_mask(graph, params, mode, ignore))


def auto_sparsity(graph: ir.Graph, params: dict, s: float, target: float, *,
                  mode: Mode = "regular", period: int, total_steps: int,
                  ignore: tuple[int, ...] = (), **options) -> optax.GradientTransformation:
    """``optax.masked(bn_l1_auto(...), gamma_mask(graph, params, mode))``: the
    controller over exactly the γ the prune pass ranks."""
    return optax.masked(bn_l1_auto(s, target, period, total_steps, **options),
                        gamma_mask(graph, params, mode, ignore))


def init_gammas(variables: Variables, value: float = 0.5) -> dict:
    """Variables with every BatchNorm scale γ set to ``value``: network slimming's
    initialisation for sparse training from scratch (Liu et al. 2017 start γ at 0.5,
    so the L1 term reaches the useless channels within a short run)."""
    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (jnp.full_like(leaf, value)
                            if [getattr(k, "key", None) for k in path[-2:]] == ["bn", "scale"]
                            else leaf), variables["params"])
    return {**variables, "params": params}
