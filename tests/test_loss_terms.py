"""Loss terms compose (runtime.terms): a term written here, outside the runtime, changes
the loss and the gradient by exactly its share, reports its metric by name in the step,
in metrics.jsonl and on the CLI's lines, and a term's ``extra`` pytree (a frozen
teacher) is an argument of the compiled step that is neither differentiated nor
updated."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ir
from darkslim.commands.synth import synth_cfg_path
from darkslim.commands.train import _epoch_line, _terms_text
from darkslim.trainlog import RunWriter
from runtime import (
    DarknetModule,
    LossConfig,
    LossTerm,
    LossTermError,
    StepOutputs,
    YoloLoss,
    init_variables,
    term_names,
    yolo_loss,
    yolo_terms,
)
from runtime.data import NO_AUGMENT, iterate_batches, load_dataset
from runtime.parallel import data_mesh
from runtime.synth import write_synth
from runtime.train import (
    EpochInfo,
    TrainConfig,
    fit,
    init_head_biases,
    init_train_state,
    make_train_step,
)

LR, WEIGHT = 0.05, 1e-3


@dataclass(frozen=True, kw_only=True)
class HeadL2(LossTerm):
    """The toy term: ``weight · Σ head²`` over every raw head."""

    weight: float = 1.0
    names: tuple[str, ...] = ("l2",)

    def __call__(self, outputs, targets, extra):
        value = self.weight * sum(jnp.sum(h.astype(jnp.float32) ** 2) for h in outputs.heads)
        return value, {"l2": value}


@dataclass(frozen=True, kw_only=True)
class Distill(LossTerm):
    """The module docstring's distillation term: the heads' mean squared distance to a
    teacher network (``extra``: its variables) run on the same batch in eval mode."""

    teacher: ir.Graph
    names: tuple[str, ...] = ("distill",)

    def __call__(self, outputs, targets, extra):
        taught = DarknetModule(self.teacher).apply(extra, outputs.images, train=False)
        value = sum(jnp.mean((s - t) ** 2) for s, t in zip(outputs.heads, taught.heads))
        return value, {"distill": value}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("terms")
    data = write_synth(root, train=8, valid=0, size=64, seed=0,
                       cfg=ir.parse_cfg(synth_cfg_path()))
    graph = ir.narrow(ir.parse_cfg(data.cfg), 4, min_filters=4)
    train = load_dataset(data.data, "train")
    batch = next(iterate_batches(train, (64, 64), 4, seed=0, augment=NO_AUGMENT))
    variables = init_head_biases(graph, init_variables(graph, 0))
    return SimpleNamespace(graph=graph, train=train, images=jnp.asarray(batch.images),
                           targets=jnp.asarray(batch.targets), variables=variables)


@functools.partial(jax.jit, static_argnums=0)
def _heads(graph, variables, images):
    """The raw heads in train mode, as the step sees them."""
    out, _ = DarknetModule(graph).apply(variables, images, train=True,
                                        mutable=["batch_stats"])
    return out.heads


def test_the_yolo_term_is_yolo_loss(tiny):
    heads = _heads(tiny.graph, tiny.variables, tiny.images)
    config = LossConfig(box="xywh")
    (term,) = yolo_terms(config)

    @jax.jit
    def by_term(heads, targets):
        outputs = StepOutputs(heads=heads, forward=None, images=tiny.images,
                              input_hw=(64, 64), graph=tiny.graph, params=None)
        return term(outputs, targets, None)

    total, metrics = by_term(heads, tiny.targets)
    parts = jax.jit(yolo_loss, static_argnums=(0, 3, 4))(tiny.graph, heads, tiny.targets,
                                                         (64, 64), config)
    assert float(total) == float(parts.total)
    assert [float(metrics[k]) for k in ("box", "obj", "cls")] == \
        [float(parts.box), float(parts.obj), float(parts.cls)]
    assert term_names(yolo_terms()) == ("box", "obj", "cls")


def test_an_added_term_adds_its_value_to_the_loss_and_its_gradient_to_the_update(tiny):
    tx = optax.sgd(LR)  # linear in the gradient: the updates differ by -lr · ∇(w·L2)
    state = init_train_state(tiny.variables, tx)
    plain = make_train_step(tiny.graph, tx)
    added = make_train_step(tiny.graph, tx, terms=(*yolo_terms(), HeadL2(weight=WEIGHT)))
    new_plain, m_plain = plain(state, tiny.images, tiny.targets)
    new_added, m_added = added(state, tiny.images, tiny.targets)

    def l2(params):
        heads = _heads(tiny.graph, {**tiny.variables, "params": params}, tiny.images)
        return WEIGHT * sum(jnp.sum(h ** 2) for h in heads)

    expected, grad = jax.jit(jax.value_and_grad(l2))(tiny.variables["params"])
    assert "l2" not in m_plain and float(expected) > 0.01 * float(m_plain["loss"])
    assert float(m_added["l2"]) == pytest.approx(float(expected), rel=1e-5)
    for name in ("box", "obj", "cls"):
        assert float(m_added[name]) == pytest.approx(float(m_plain[name]), rel=1e-6)
    assert float(m_added["loss"]) == pytest.approx(
        sum(float(m_added[k]) for k in ("box", "obj", "cls", "l2")), rel=1e-6)
    assert float(m_added["loss"]) == pytest.approx(float(m_plain["loss"] + expected),
                                                   rel=1e-6)
    shift = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                         new_added.params, new_plain.params)
    for got, g in zip(jax.tree.leaves(shift), jax.tree.leaves(grad)):
        want = -LR * np.asarray(g)
        np.testing.assert_allclose(got, want, rtol=1e-3,
                                   atol=1e-6 + 1e-3 * float(np.abs(want).max()))
    assert max(float(np.abs(s).max()) for s in jax.tree.leaves(shift)) > 1e-4
    for a, b in zip(jax.tree.leaves(new_added.batch_stats),
                    jax.tree.leaves(new_plain.batch_stats)):
        np.testing.assert_array_equal(a, b)  # the term does not touch the forward


def test_a_teacher_in_extra_is_an_argument_neither_differentiated_nor_updated(tiny):
    tx = optax.sgd(LR)
    teacher = jax.tree.map(np.asarray, init_variables(tiny.graph, 1))
    before = jax.tree.map(np.copy, teacher)
    term = Distill(teacher=tiny.graph, extra=teacher)
    step = make_train_step(tiny.graph, tx, terms=(*yolo_terms(), term))
    state = init_train_state(tiny.variables, tx)
    new, metrics = step(state, tiny.images, tiny.targets)

    @jax.jit
    def distill(params, teacher_vars):
        heads = _heads(tiny.graph, {**tiny.variables, "params": params}, tiny.images)
        taught = DarknetModule(tiny.graph).apply(teacher_vars, tiny.images, train=False)
        return sum(jnp.mean((s - t) ** 2) for s, t in zip(heads, taught.heads))

    assert float(metrics["distill"]) == pytest.approx(
        float(distill(tiny.variables["params"], teacher)), rel=1e-5)
    # The teacher left as it came, and nothing of it in the new state.
    for a, b in zip(jax.tree.leaves(teacher), jax.tree.leaves(before)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(new.params) == jax.tree.structure(state.params)
    assert jax.tree.structure(new.opt_state) == jax.tree.structure(state.opt_state)
    # Another teacher through the same compiled step: an argument, not a constant.
    other = jax.device_put(init_variables(tiny.graph, 2))  # as the step placed the first
    _, again = step(state, tiny.images, tiny.targets, (None, other))
    assert step.jitted._cache_size() == 1
    assert float(again["distill"]) == pytest.approx(
        float(distill(tiny.variables["params"], other)), rel=1e-5)
    assert float(again["distill"]) != pytest.approx(float(metrics["distill"]), rel=1e-3)
    # Terms differing only in their extra are equal: one compilation serves them.
    assert term == Distill(teacher=tiny.graph, extra=other)
    assert hash(term) == hash(Distill(teacher=tiny.graph))


def test_fit_reports_added_terms_in_metrics_jsonl_and_the_cli_lines(tiny, tmp_path):
    """Two terms, one with a teacher as extra, through `fit` over a mesh (the extras
    replicated onto it), written by `RunWriter` and printed by the CLI's functions."""
    config = TrainConfig(epochs=1, batch_size=4, lr=0.01, augment=NO_AUGMENT, precise_bn=1)
    steps, epochs = [], []
    writer = RunWriter(tiny.graph, tmp_path, plots=False)

    def on_epoch(info):
        writer(info)
        epochs.append(info)

    teacher = init_variables(tiny.graph, 1)
    fit(tiny.graph, tiny.variables, tiny.train, config, out_dir=tmp_path,
        mesh=data_mesh(jax.devices()[:1]), on_step=steps.append, on_epoch=on_epoch,
        extra_terms=(HeadL2(weight=WEIGHT), Distill(teacher=tiny.graph, extra=teacher)))
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text()
              .splitlines()]
    names = ("box", "obj", "cls", "l2", "distill")
    assert set(names) | {"loss"} <= set(row)
    assert row["l2"] > 0 and row["distill"] > 0
    assert row["loss"] == pytest.approx(sum(row[k] for k in names), rel=1e-5)
    assert len(steps) == 2 and steps[0].terms == names
    assert f"l2 {steps[0].metrics['l2']:.3f}" in _terms_text(steps[0])
    line = _epoch_line(epochs[0], 1)
    assert (f"(box {row['box']:.3f} obj {row['obj']:.3f} cls {row['cls']:.3f} "
            f"l2 {row['l2']:.3f} distill {row['distill']:.3f})") in line, line
    # Without extra terms the line reads as it always did.
    plain = EpochInfo(1, {}, {"loss": 1.0, "box": 0.25, "obj": 0.5, "cls": 0.25, "s": 0.0},
                      False, ())
    assert "loss 1.000 (box 0.250 obj 0.500 cls 0.250)  s 0" in _epoch_line(plain, 3)


@dataclass(frozen=True, kw_only=True)
class Listed(LossTerm):
    sizes: list = None
    names: tuple[str, ...] = ("listed",)


@dataclass(frozen=True, kw_only=True)
class Misreported(HeadL2):
    def __call__(self, outputs, targets, extra):
        value, _ = super().__call__(outputs, targets, extra)
        return value, {"l2_typo": value}


@pytest.mark.parametrize("terms, match", [
    ((), "no loss terms"),
    ((*yolo_terms(), HeadL2(names=("loss",))), "metric 'loss' is reserved"),
    ((*yolo_terms(), HeadL2(names=("gamma_l2",))), "metric 'gamma_l2' is reserved"),
    ((*yolo_terms(), HeadL2(names=("box",))), r"'box' is also reported by YoloLoss"),
    ((*yolo_terms(), HeadL2(names=())), r"names=\(\); expected a non-empty tuple"),
    ((*yolo_terms(), Listed(sizes=[1])), "unhashable .*tuples, not lists"),
    ((*yolo_terms(), "l2"), "expected a LossTerm"),
])
def test_bad_terms_are_refused_naming_the_term(tiny, terms, match):
    with pytest.raises(LossTermError, match=match):
        make_train_step(tiny.graph, optax.sgd(LR), terms=terms)


def test_a_term_reporting_other_metrics_than_its_names_is_refused(tiny):
    tx = optax.sgd(LR)
    step = make_train_step(tiny.graph, tx, terms=(*yolo_terms(), Misreported()))
    with pytest.raises(LossTermError, match=r"Misreported.*reported metrics \['l2_typo'\]; "
                       r"expected its names \['l2'\]"):
        step(init_train_state(tiny.variables, tx), tiny.images, tiny.targets)


def test_yolo_loss_is_a_term_with_a_config():
    assert YoloLoss(config=LossConfig(box="xywh")) != YoloLoss()
    assert YoloLoss() == yolo_terms()[0] and YoloLoss().names == ("box", "obj", "cls")
