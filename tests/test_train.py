"""Loss, sparse training with optax, checkpoints and data parallelism (runtime.loss,
runtime.train) on a tiny synthetic set."""

from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ir
from ir import layer_key
from darkslim.commands.synth import synth_cfg_path
from darkslim.testing import programs
from frontends import CheckpointError, load_variables
from passes import analyze_prunability
from runtime import init_variables
from runtime.data import NO_AUGMENT, load_dataset
from runtime.loss import LossConfig, yolo_loss
from runtime.model import decode_yolo
from runtime.sparsity import bn_l1, gamma_mask, init_gammas, sparsity, sparsity_schedule
from runtime.synth import write_synth
from runtime.train import (CHECKPOINT, TrainConfig, fit, init_head_biases, init_train_state,
                           load_checkpoint, make_optimizer, recalibrate_bn)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data = write_synth(root, train=32, valid=8, size=64, seed=0,
                       cfg=ir.parse_cfg(synth_cfg_path()))
    graph = ir.narrow(ir.parse_cfg(data.cfg), 4, min_filters=4)
    (root / "tiny.cfg").write_text(ir.write_cfg(graph))
    return SimpleNamespace(root=root, data=data.data, cfg=root / "tiny.cfg", graph=graph,
                           train=load_dataset(data.data, "train"),
                           valid=load_dataset(data.data, "valid"))


def _config(**changes) -> TrainConfig:
    base = dict(epochs=12, batch_size=8, lr=0.03, optimizer="adam", warmup_epochs=0.5,
                augment=NO_AUGMENT, precise_bn=2)
    return TrainConfig(**{**base, **changes})


def _prunable_gammas(graph, variables, mode="regular") -> np.ndarray:
    prunable = analyze_prunability(graph, mode).prunable
    return np.concatenate([np.abs(np.asarray(variables["params"][layer_key(i)]["bn"]["scale"]))
                           for i in prunable])


# ------------------------------------------------------------------------------ loss

def _perfect_heads(graph, targets, size):
    """Raw heads whose decoded boxes, objectness and classes equal the targets."""
    heads = []
    for index in graph.yolo_indices():
        layer = graph.layers[index]
        shapes = ir.verify(graph)
        h, w = shapes[index].h, shapes[index].w
        count, classes = len(layer.mask), layer.classes
        p = np.full((len(targets), h, w, count, 5 + classes), -12.0, np.float32)
        p[..., 2:4] = 0
        anchors = np.asarray(layer.anchors)
        for n, rows in enumerate(targets):
            for cls, cx, cy, bw, bh in rows:
                if cls < 0:
                    continue
                inter = np.minimum(bw * size, anchors[:, 0]) * np.minimum(bh * size, anchors[:, 1])
                best = int(np.argmax(inter / (bw * bh * size * size + anchors.prod(1) - inter)))
                if best not in layer.mask:
                    continue
                a = list(layer.mask).index(best)
                gi, gj = int(cx * w), int(cy * h)
                fx, fy = cx * w - gi, cy * h - gj
                p[n, gj, gi, a, :5] = [np.log(fx / (1 - fx)), np.log(fy / (1 - fy)),
                                       np.log(bw * size / anchors[best, 0]),
                                       np.log(bh * size / anchors[best, 1]), 12.0]
                p[n, gj, gi, a, 5 + int(cls)] = 12.0
        heads.append(jnp.asarray(p.reshape(len(targets), h, w, -1)))
    return tuple(heads)


TARGETS = np.array([[[0, 0.3, 0.4, 0.12, 0.14], [2, 0.7, 0.6, 0.4, 0.36], [-1] * 5],
                    [[1, 0.52, 0.27, 0.3, 0.2], [-1] * 5, [-1] * 5]], np.float32)


@pytest.mark.parametrize("box", ["giou", "xywh"])
def test_perfect_predictions_have_near_zero_loss(tiny, box):
    heads = _perfect_heads(tiny.graph, TARGETS, 64)
    parts = jax.jit(yolo_loss, static_argnums=(0, 3, 4))(
        tiny.graph, heads, TARGETS, (64, 64), LossConfig(box=box))
    assert float(parts.box) < 1e-5 and float(parts.cls) < 1e-3 and float(parts.obj) < 1e-3
    assert float(parts.total) == pytest.approx(float(parts.box + parts.obj + parts.cls))
    # ... and they decode to the target boxes (the loss and the runtime agree).
    boxes = np.concatenate([np.asarray(decode_yolo(h, tiny.graph.layers[i], (64, 64)))
                            for h, i in zip(heads, tiny.graph.yolo_indices())], 1)
    found = boxes[0][boxes[0][:, 4] > 0.5][:, :4] / 64
    assert sorted(found.round(4).tolist()) == sorted(TARGETS[0, :2, 1:].round(4).tolist())


def _new_coords(graph):
    return graph.replace_layers({i: dataclasses.replace(graph.layers[i], new_coords=True)
                                 for i in graph.yolo_indices()})


@pytest.mark.parametrize("box", ["giou", "xywh"])
def test_new_coords_perfect_predictions_have_near_zero_loss(tiny, box):
    """new_coords=1 heads carry probabilities: x, y as offsets, w = (2 tw)² anchor."""
    graph = _new_coords(tiny.graph)
    heads = []
    for raw, index in zip(_perfect_heads(tiny.graph, TARGETS, 64), graph.yolo_indices()):
        layer = graph.layers[index]
        n, h, w, c = raw.shape
        p = np.asarray(raw).reshape(n, h, w, len(layer.mask), -1).copy()
        logits = p.copy()
        p = 1 / (1 + np.exp(-logits))                        # x, y, obj, classes
        anchors = np.asarray(layer.anchors)[list(layer.mask)]
        p[..., 2:4] = np.sqrt(np.exp(logits[..., 2:4])) / 2  # (2 tw)² = exp(tw_old)
        heads.append(jnp.asarray(p.reshape(n, h, w, c)))
        assert anchors.shape[0] == len(layer.mask)
    parts = jax.jit(yolo_loss, static_argnums=(0, 3, 4))(
        graph, tuple(heads), TARGETS, (64, 64), LossConfig(box=box))
    assert float(parts.box) < 1e-4 and float(parts.cls) < 1e-3 and float(parts.obj) < 1e-3
    boxes = np.concatenate([np.asarray(decode_yolo(h, graph.layers[i], (64, 64)))
                            for h, i in zip(heads, graph.yolo_indices())], 1)
    found = boxes[0][boxes[0][:, 4] > 0.5][:, :4] / 64
    assert sorted(found.round(4).tolist()) == sorted(TARGETS[0, :2, 1:].round(4).tolist())
    # ... while reading them as logits (new_coords=0) is far off.
    off = yolo_loss(tiny.graph, tuple(heads), TARGETS, (64, 64), LossConfig(box=box))
    assert float(off.total) > 10 * float(parts.total) + 1


def test_loss_refuses_heads_it_does_not_cover():
    graph = ir.parse_cfg("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=7\n"
                         "[region]\nanchors=1,1\nclasses=2\nnum=1\n")
    with pytest.raises(ir.CfgError, match=r"<text>:6: \[region\] \(layer 1\) the training "
                       r"loss covers \[yolo\] heads"):
        yolo_loss(graph, (jnp.zeros((1, 1, 1, 7)),), np.full((1, 1, 5), -1, np.float32))


def test_each_target_trains_one_cell_of_the_head_holding_its_best_anchor(tiny):
    graph = tiny.graph
    heads = tuple(jnp.zeros_like(h) for h in _perfect_heads(graph, TARGETS[:1, :1], 64))
    grads = jax.jit(jax.grad(lambda hs: yolo_loss(graph, hs, TARGETS[:1, :1],
                                                  config=LossConfig(obj_gain=0.0)).total))(heads)
    touched = [np.argwhere(np.abs(np.asarray(g)).reshape(*g.shape[:3], 3, -1).sum(-1) > 0)
               for g in grads]
    # box + class gradients reach exactly one (cell, anchor): the best anchor's head.
    assert sorted(len(t) for t in touched) == [0, 1]
    layer_anchors = [graph.layers[i].mask for i in graph.yolo_indices()]
    head = [len(t) for t in touched].index(1)
    anchors = np.asarray(graph.layers[graph.yolo_indices()[0]].anchors)
    wh = TARGETS[0, 0, 3:5] * 64
    inter = np.minimum(wh[0], anchors[:, 0]) * np.minimum(wh[1], anchors[:, 1])
    best = int(np.argmax(inter / (wh.prod() + anchors.prod(1) - inter)))
    assert layer_anchors[head][touched[head][0][3]] == best
    h, w = heads[head].shape[1:3]
    assert tuple(touched[head][0][1:3]) == (int(0.4 * h), int(0.3 * w))


def test_ignore_thresh_leaves_overlapping_negatives_out(tiny):
    graph = tiny.graph
    perfect = _perfect_heads(graph, TARGETS, 64)
    # Perfect boxes but objectness 0 everywhere: the assigned cells are pulled up,
    # and with ignore_thresh=0 every other cell overlapping a target is left alone.
    def obj_zero(hs):
        return tuple(h.reshape(*h.shape[:3], 3, -1).at[..., 4].set(0.0).reshape(h.shape)
                     for h in hs)

    heads = obj_zero(perfect)
    loss = jax.jit(yolo_loss, static_argnums=(0, 3, 4))
    strict = loss(graph, heads, TARGETS, (64, 64), LossConfig(ignore_thresh=1.0))
    lenient = loss(graph, heads, TARGETS, (64, 64), LossConfig(ignore_thresh=0.0))
    assert float(lenient.obj) < float(strict.obj)
    assert float(lenient.box) == pytest.approx(float(strict.box))


def test_loss_rejects_a_bad_box_kind():
    with pytest.raises(ValueError, match="box='iou'"):
        LossConfig(box="iou")


# -------------------------------------------------------------------------- sparsity

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


def test_gamma_mask_marks_the_bn_scales_of_prunable_convs(tiny):
    params = init_variables(tiny.graph)["params"]
    mask = gamma_mask(tiny.graph, params)
    marked = sorted(int(k.removeprefix("layer_")) for k, v in mask.items()
                    if v.get("bn", {}).get("scale"))
    assert marked == list(analyze_prunability(tiny.graph).prunable) and marked
    assert not any(v["conv"]["kernel"] for v in mask.values())


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


# ---------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """Three runs from the same start: plain, sparse, and sparse interrupted after one
    epoch then resumed (one compile per setting, shared by the two sparse runs)."""
    out = tmp_path_factory.mktemp("runs")
    start = init_gammas(init_head_biases(tiny.graph, init_variables(tiny.graph, 0)))
    plain = fit(tiny.graph, start, tiny.train, _config(), out_dir=out / "plain")
    sparse_config = _config(sparsity=0.2)
    sparse = fit(tiny.graph, start, tiny.train, sparse_config, out_dir=out / "sparse")
    steps = len(tiny.train) // 8
    fit(tiny.graph, start, tiny.train, sparse_config, out_dir=out / "resumed",
        max_steps=steps)
    interrupted = json.loads((out / "resumed" / "history.json").read_text())
    resumed = fit(tiny.graph, start, tiny.train, sparse_config, out_dir=out / "resumed",
                  resume=True)
    return SimpleNamespace(out=out, start=start, plain=plain, sparse=sparse,
                           interrupted=interrupted, resumed=resumed)


def test_a_short_run_lowers_the_loss(runs):
    losses = [row["loss"] for row in runs.plain.history]
    assert len(losses) == 12
    assert losses[-1] < 0.7 * losses[0], losses


def test_sparsity_drives_prunable_gammas_to_zero(tiny, runs):
    small = {name: float((_prunable_gammas(tiny.graph, run.variables) < 0.01).mean())
             for name, run in (("plain", runs.plain), ("sparse", runs.sparse))}
    assert small["plain"] < 0.05, small
    assert small["sparse"] > 0.5, small
    # history holds the last epoch's mean over its steps; γ still moves within it.
    assert runs.sparse.history[-1]["gamma_small"] == pytest.approx(small["sparse"], abs=0.05)
    # Not-penalised γ (the convs feeding the heads have no BN; others may not be
    # prunable in regular mode) are not pushed to zero.
    assert (_prunable_gammas(tiny.graph, runs.start) == 0.5).all()


def test_resume_continues_with_the_same_losses(runs):
    assert len(runs.interrupted) == 1
    full = [row["loss"] for row in runs.sparse.history]
    resumed = [row["loss"] for row in runs.resumed.history]
    assert resumed == pytest.approx(full, rel=1e-5, abs=1e-6)
    for a, b in zip(jax.tree.leaves(runs.sparse.variables),
                    jax.tree.leaves(runs.resumed.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_run_writes_weights_checkpoint_and_history(tiny, runs):
    folder = runs.out / "sparse"
    for name in ("best.weights", "last.weights", CHECKPOINT, "history.json"):
        assert (folder / name).exists(), name
    last = load_variables(tiny.graph, folder / "last.weights").variables
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(runs.sparse.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_of_another_network_is_refused(tiny, runs):
    other = ir.narrow(tiny.graph, 2)
    tx = make_optimizer("adam", 1e-3)
    template = init_train_state(init_variables(other), tx)
    with pytest.raises(CheckpointError, match=CHECKPOINT):
        load_checkpoint(runs.out / "plain" / CHECKPOINT, template)


def test_recalibrate_bn_uses_the_batch_statistics(tiny):
    variables = init_variables(tiny.graph, 1)
    images = np.random.default_rng(0).uniform(size=(2, 4, 64, 64, 3)).astype(np.float32)
    new = recalibrate_bn(tiny.graph, variables, list(images))
    # Layer 0 normalises conv(image): its statistics are those of the conv output.
    kernel = np.asarray(variables["params"]["layer_0"]["conv"]["kernel"])
    outs = [np.asarray(jax.lax.conv_general_dilated(
        b, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
        for b in images]
    mean = np.mean([o.mean((0, 1, 2)) for o in outs], 0)
    var = np.mean([o.var((0, 1, 2)) for o in outs], 0)
    stats = new["batch_stats"]["layer_0"]["bn"]
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(stats["var"], var, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------- data parallel

_PARALLEL = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import ir
    from runtime import init_variables
    from runtime.train import (TrainConfig, build_optimizer, data_mesh, init_train_state,
                               make_train_step, replicate, shard_batch)
    graph = ir.parse_cfg(sys.argv[1])
    variables = init_variables(graph, 0)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 64, 64, 3)).astype(np.float32)
    targets = np.full((4, 8, 5), -1, np.float32)
    targets[:, 0] = [[0, .3, .4, .2, .3], [1, .6, .5, .4, .3], [2, .5, .5, .3, .3],
                     [0, .7, .2, .2, .2]]
    config = TrainConfig(sparsity=0.01, lr=0.01, optimizer="sgd")
    tx, _ = build_optimizer(graph, variables["params"], config, 10, 10)
    results = {}
    for name, devices in (("one", jax.devices()[:1]), ("two", jax.devices()[:2])):
        mesh = data_mesh(devices)
        step = make_train_step(graph, tx, mesh=mesh)
        state = replicate(init_train_state(variables, tx), mesh)
        for _ in range(2):
            state, metrics = step(state, shard_batch(images, mesh),
                                  shard_batch(targets, mesh))
        results[name] = [np.asarray(x).ravel().tolist()
                         for x in jax.tree.leaves((state.params, state.batch_stats))]
        results[name + "_loss"] = float(metrics["loss"])
        results[name + "_devices"] = len(state.params["layer_0"]["bn"]["scale"]
                                         .sharding.device_set)
    json.dump(results, sys.stdout)
""")


def test_two_host_devices_give_the_same_update_as_one(tiny):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PARALLEL, str(tiny.cfg)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["one_devices"] == 1 and result["two_devices"] == 2
    assert result["one_loss"] == pytest.approx(result["two_loss"], rel=1e-5)
    for a, b in zip(result["one"], result["two"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------- CLI

def test_train_and_eval_commands(tiny, tmp_path):
    from darkslim.cli import main

    out = tmp_path / "run"
    assert main(["train", str(tiny.data), str(tiny.cfg), "--epochs", "1", "--batch", "8",
                 "--sparsity", "0.01", "--out", str(out), "--quiet"]) == 0
    for name in ("best.weights", "last.weights", "checkpoint.msgpack", "history.json",
                 "summary.json", "gamma/epoch_000.png", "gamma/epoch_001.png"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and 0 <= history[0]["map50"] <= 1
    report = tmp_path / "eval.json"
    assert main(["eval", str(tiny.data), str(tiny.cfg), str(out / "best.weights"),
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["images"] == 8 and len(result["classes"]) == 3
    assert 0 <= result["map50_95"] <= result["map50"] + 1e-9 <= 1 + 1e-9
    assert [c["name"] for c in result["classes"]] == ["circle", "square", "triangle"]


def test_train_command_reports_a_class_mismatch(tiny, tmp_path, capsys):
    from darkslim.cli import main

    other = tmp_path / "two.data"
    other.write_text(f"classes=2\ntrain={tiny.root / 'train.txt'}\n")
    assert main(["train", str(other), str(tiny.cfg), "--out", str(tmp_path / "x")]) == 2
    assert "classes=3" in capsys.readouterr().err
