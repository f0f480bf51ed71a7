"""The sparsity transforms of network slimming (runtime.sparsity): the masked L1
subgradient on γ, its schedules, and the auto controller of its strength."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darkslim.testing import programs
from passes import analyze_prunability
from runtime.sparsity import bn_l1, bn_l1_auto, sparsity, sparsity_schedule


def test_bn_l1_masked_matches_a_hand_computed_update():
    params = {"layer_0": {"bn": {"scale": jnp.array([0.5, -0.2, 0.0])},
                          "conv": {"kernel": jnp.array([1.0, -1.0])}},
              "layer_1": {"bn": {"scale": jnp.array([0.3, -0.4])}}}
    mask = {"layer_0": {"bn": {"scale": True}, "conv": {"kernel": False}},
            "layer_1": {"bn": {"scale": False}}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
    s, lr, momentum = 0.01, 0.5, 0.9
    tx = optax.chain(optax.masked(bn_l1(s), mask), optax.sgd(lr, momentum=momentum))
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    # γ - lr * (g + s * sign(γ)); sign(0) = 0; other leaves plain SGD.
    assert np.allclose(new["layer_0"]["bn"]["scale"],
                       [0.5 - 0.5 * 0.11, -0.2 - 0.5 * 0.09, 0.0 - 0.5 * 0.1])
    assert np.allclose(new["layer_0"]["conv"]["kernel"], [1.0 - 0.05, -1.0 - 0.05])
    assert np.allclose(new["layer_1"]["bn"]["scale"], [0.3 - 0.05, -0.4 - 0.05])
    # Second step: momentum buffer m = 0.9 m + g', update -lr m.
    updates2, _ = tx.update(grads, state, new)
    m1 = 0.1 + 0.01 * np.sign([0.5, -0.2, 0.0])
    m2 = 0.9 * m1 + 0.1 + 0.01 * np.sign(np.asarray(new["layer_0"]["bn"]["scale"]))
    assert np.allclose(updates2["layer_0"]["bn"]["scale"], -lr * m2)


@settings(max_examples=15, deadline=None)
@given(programs(max_blocks=5, sparsity=0.3), st.sampled_from(["regular", "shortcut"]),
       st.floats(1e-4, 1e-1), st.integers(0, 2**16))
def test_masked_bn_l1_changes_only_the_prunable_gammas(program, mode, s, seed):
    graph, variables = program
    params = jax.tree.map(jnp.asarray, variables["params"])
    rng = np.random.default_rng(seed)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    tx = sparsity(graph, params, s, "constant", mode=mode)
    updates, _ = tx.update(grads, tx.init(params), params)
    prunable = set(analyze_prunability(graph, mode).prunable)
    for key, layer in params.items():
        index = int(key.removeprefix("layer_"))
        for part, leaves in layer.items():
            for name, value in leaves.items():
                got = np.asarray(updates[key][part][name])
                want = np.asarray(grads[key][part][name])
                if index in prunable and (part, name) == ("bn", "scale"):
                    want = want + np.float32(s) * np.sign(np.asarray(value))
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7,
                                           err_msg=f"{key}/{part}/{name}")


def _rates(transform, gammas, steps):
    """The penalty rate the transform applies to each γ at each step (zero grads)."""
    params = {"g": jnp.asarray(gammas)}
    state = transform.init(params)
    rates = []
    for _ in range(steps):
        updates, state = transform.update({"g": jnp.zeros_like(params["g"])}, state, params)
        rates.append(np.asarray(updates["g"]) * np.sign(gammas))
    return np.asarray(rates)


def test_sparsity_schedules():
    gammas = np.linspace(0.05, 1.0, 20).astype(np.float32)
    constant = _rates(sparsity_schedule(0.1, "constant", 10), gammas, 10)
    assert np.allclose(constant, 0.1)
    late = _rates(sparsity_schedule(0.1, "global", 10, fraction=0.5), gammas, 10)
    assert np.allclose(late[:5], 0.1) and np.allclose(late[5:], 0.001)
    local = _rates(sparsity_schedule(0.1, "local", 10, fraction=0.5), gammas, 10)
    assert np.allclose(local[:5], 0.1)
    # after the switch the largest 15% (3 of 20) get 100x less
    assert np.allclose(local[5:, -3:], 0.001) and np.allclose(local[5:, :-3], 0.1)
    with pytest.raises(ValueError, match="schedule='linear'"):
        sparsity_schedule(0.1, "linear")


def test_auto_controller_steps_toward_the_target_path_then_latches():
    tx = bn_l1_auto(0.1, target=0.5, period=2, total_steps=8, reach=0.5, gain=2.0,
                    max_factor=2.0)
    grads = {"g": jnp.zeros(4)}
    state = tx.init(None)
    behind = {"g": jnp.array([0.5, 0.5, 0.5, 0.5])}     # share below 1e-2: 0
    ahead = {"g": jnp.array([0.0, 0.0, 0.0, 0.5])}      # share 0.75 >= target
    rates = []
    for params in (behind, behind, behind, behind, ahead, ahead, behind, behind):
        _, state = tx.update(grads, state, params)
        rates.append(float(state.rate))
    # steps 0-1: no check yet; step 2: path 0.5·2/4 = 0.25 above a share of 0: s grows
    # ×e^(2·0.25); step 4: share 0.75 >= 0.5: latched; step 6 (share 0 again): held.
    assert rates[:2] == pytest.approx([0.1, 0.1])
    assert rates[2] == pytest.approx(0.1 * np.exp(0.5), rel=1e-5)
    assert rates[4] == pytest.approx(rates[3]) and bool(state.reached)
    assert rates[-1] == pytest.approx(rates[3])
    # Ahead of the path s shrinks, but never below where it started.
    ahead_tx = bn_l1_auto(0.1, target=0.9, period=1, total_steps=10, reach=1.0)
    state = ahead_tx.init(None)
    for params in (behind, behind, behind):  # grows at counts 1 and 2
        _, state = ahead_tx.update(grads, state, params)
    grown = float(state.rate)
    _, state = ahead_tx.update(grads, state, ahead)  # share 0.75 > path 0.27: shrinks
    assert 0.1 < float(state.rate) < grown and not bool(state.reached)
    _, state = ahead_tx.update(grads, state, ahead)  # would shrink below the start
    assert float(state.rate) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="target=1.5"):
        bn_l1_auto(0.1, target=1.5, period=1, total_steps=1)
