"""Distillation from a frozen teacher (runtime.distill): the term's value against numpy,
a zero gradient when the student is its teacher, a teacher left bit-identical by a
train step, and `darkslim train --teacher` end to end."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ir
from darkslim.commands.synth import synth_cfg_path
from frontends import save_variables
from runtime import DarknetModule, StepOutputs, init_variables
from runtime.data import NO_AUGMENT, iterate_batches, load_dataset
from runtime.distill import Distill, DistillError, check_head_layout, distill_heads
from runtime.loss import yolo_terms
from runtime.train import init_head_biases, init_train_state, make_train_step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from runtime.synth import write_synth

    root = tmp_path_factory.mktemp("distill")
    data = write_synth(root, train=8, valid=0, size=64, seed=0,
                       cfg=ir.parse_cfg(synth_cfg_path()))
    base = ir.parse_cfg(data.cfg)
    student = ir.narrow(base, 4, min_filters=4)   # a "pruned" student ...
    teacher = ir.narrow(base, 2, min_filters=4)   # ... of a wider teacher, same heads
    (root / "student.cfg").write_text(ir.write_cfg(student))
    (root / "teacher.cfg").write_text(ir.write_cfg(teacher))
    student = ir.parse_cfg(root / "student.cfg")
    teacher = ir.parse_cfg(root / "teacher.cfg")
    teacher_vars = init_head_biases(teacher, init_variables(teacher, 1))
    save_variables(teacher, teacher_vars, root / "teacher.weights")
    train = load_dataset(data.data, "train")
    batch = next(iterate_batches(train, (64, 64), 4, seed=0, augment=NO_AUGMENT))
    return SimpleNamespace(root=root, data=data.data, student=student, teacher=teacher,
                           student_vars=init_head_biases(student, init_variables(student, 0)),
                           teacher_vars=teacher_vars, images=jnp.asarray(batch.images),
                           targets=jnp.asarray(batch.targets))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _numpy_distill(graph, student, teacher, confidence=0.5) -> float:
    total = 0.0
    for index, s, t in zip(graph.yolo_indices(), student, teacher):
        a = len(graph.layers[index].mask)
        n, h, w, c = s.shape
        s = np.asarray(s, np.float64).reshape(n, h, w, a, c // a)
        t = np.asarray(t, np.float64).reshape(n, h, w, a, c // a)
        def bce(x, p):
            q = _sigmoid(x)
            return -(p * np.log(q) + (1 - p) * np.log(1 - q))
        t_obj = _sigmoid(t[..., 4])
        total += bce(s[..., 4], t_obj).mean() + bce(s[..., 5:], _sigmoid(t[..., 5:])).mean()
        confident = t_obj > confidence
        err = ((s[..., :4] - t[..., :4]) ** 2).sum(-1)
        total += err[confident].sum() / max(confident.sum(), 1)
    return total


def _heads(graph, seed, batch=2):
    rng = np.random.default_rng(seed)
    shapes = ir.verify(graph)
    return tuple(jnp.asarray(rng.normal(0, 2, (batch, shapes[i].h, shapes[i].w, shapes[i].c)),
                             jnp.float32) for i in graph.yolo_indices())


def test_the_term_equals_numpy(tiny):
    student, teacher = _heads(tiny.student, 0), _heads(tiny.student, 1)
    got = float(jax.jit(distill_heads, static_argnums=0)(tiny.student, student, teacher))
    confident = sum(int((_sigmoid(np.asarray(t)[..., 4::8]) > 0.5).sum()) for t in teacher)
    assert confident > 0  # the box part is exercised
    assert got == pytest.approx(_numpy_distill(tiny.student, student, teacher), rel=1e-5)


def test_the_term_scales_by_weight_and_batch(tiny):
    def value(weight):
        outputs = StepOutputs(heads=_heads(tiny.student, 0, 4), forward=None,
                              images=tiny.images, input_hw=(64, 64), graph=tiny.student,
                              params=None)
        term = Distill(teacher=tiny.teacher, weight=weight)
        return float(term(outputs, tiny.targets, tiny.teacher_vars)[0])

    taught = DarknetModule(tiny.teacher).apply(tiny.teacher_vars, tiny.images, train=False)
    expected = _numpy_distill(tiny.student, _heads(tiny.student, 0, 4), taught.heads)
    assert value(0.5) == pytest.approx(0.5 * 4 * expected, rel=1e-4)


def test_the_gradient_is_zero_when_student_is_teacher(tiny):
    heads = _heads(tiny.student, 3)

    def loss(student):
        return distill_heads(tiny.student, student, heads)

    grads = jax.jit(jax.grad(loss))(heads)
    other = jax.jit(jax.grad(loss))(_heads(tiny.student, 4))
    assert max(float(jnp.abs(g).max()) for g in other) > 1e-3  # it can be non-zero
    for g in grads:
        np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-7)


def test_a_train_step_leaves_the_teacher_bit_identical(tiny):
    before = jax.tree.map(np.array, tiny.teacher_vars)
    term = Distill(teacher=tiny.teacher, extra=tiny.teacher_vars)
    tx = optax.sgd(0.05)
    state = init_train_state(tiny.student_vars, tx)
    step = make_train_step(tiny.student, tx, terms=(*yolo_terms(), term))
    plain = make_train_step(tiny.student, tx)
    new, metrics = step(state, tiny.images, tiny.targets)
    new_plain, _ = plain(state, tiny.images, tiny.targets)
    assert float(metrics["distill"]) > 0
    new, _ = step(new, tiny.images, tiny.targets)  # the step's own copy, used twice
    for held in (term.extra, step.extras[1]):
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(held), strict=True):
            np.testing.assert_array_equal(a, np.asarray(b))
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(new_plain.params))]
    assert max(moved) > 0  # the term does change the student's update


def _other_anchors(graph) -> str:
    """``graph``'s cfg with the first anchor of each [yolo] widened by one pixel."""
    return re.sub(r"anchors\s*=\s*(\d+)", lambda m: f"anchors={int(m.group(1)) + 1}",
                  ir.write_cfg(graph))


def test_mismatched_heads_are_refused_naming_both_cfgs(tiny, tmp_path):
    other = tmp_path / "other.cfg"
    other.write_text(_other_anchors(tiny.teacher))
    with pytest.raises(DistillError,
                       match=r"student .*student\.cfg:\d+ \(layer \d+\) has anchors .*"
                       r"teacher .*other\.cfg:\d+ \(layer \d+\) has anchors"):
        check_head_layout(tiny.student, ir.parse_cfg(other))
    check_head_layout(tiny.student, tiny.teacher)  # same heads: fine


def test_train_command_with_teacher(tiny, tmp_path, capsys):
    from darkslim.cli import main

    out = tmp_path / "run"
    teacher = [str(tiny.root / "teacher.cfg"), str(tiny.root / "teacher.weights")]
    assert main(["train", str(tiny.data), str(tiny.root / "student.cfg"), "--epochs", "1",
                 "--batch", "8", "--teacher", *teacher, "--distill-weight", "2",
                 "--no-eval", "--precise-bn", "0", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["distill"] > 0
    assert re.search(r"epoch +1/1 .*\(box [\d.]+ obj [\d.]+ cls [\d.]+ distill [\d.]+\)",
                     capsys.readouterr().err)

    bad = tmp_path / "bad.cfg"
    bad.write_text(_other_anchors(tiny.teacher))
    assert main(["train", str(tiny.data), str(tiny.root / "student.cfg"), "--teacher",
                 str(bad), teacher[1], "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "student.cfg" in err and "bad.cfg" in err and "anchors" in err
