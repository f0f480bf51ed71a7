"""A training loss as a sum of named terms.

The train step (`runtime.step.make_train_step`) minimises the sum of its ``terms``. A
term is a frozen dataclass subclassing `LossTerm`: ``names``, the metrics it reports,
and ``__call__(outputs, targets, extra) -> (scalar, {name: scalar})``, a pure ``jnp``
function traced inside the jitted step. ``outputs`` (`StepOutputs`) is what the step
exposes: the raw ``[yolo]`` heads, the whole `runtime.ForwardOut`, the images, the
input size, the graph and the parameters being trained. ``extra`` is the term's own
pytree (its ``extra`` field, e.g. a teacher network's variables): the step takes it as
an *argument* of the compiled function, not as a constant baked into it, and the
gradient is taken with respect to the trained parameters only, so ``extra`` is neither
differentiated nor updated. Equality and hashing of a term cover its static fields only
(``extra`` is left out), so terms that differ only in ``extra`` share one compilation.

The YOLOv3 loss is one such term (`runtime.loss.YoloLoss`, reporting ``box``, ``obj``
and ``cls``); `runtime.loss.yolo_terms` is the default of the step and of
`runtime.train.fit`, whose ``extra_terms`` adds more. Every metric a term reports lands
in the step's metrics, in ``metrics.jsonl`` and on the CLI's progress line under its
name, next to ``loss`` (the sum of all terms).

A term that penalises the heads' magnitude (the one tests/test_loss_terms.py adds)::

    @dataclass(frozen=True, kw_only=True)
    class HeadL2(LossTerm):
        weight: float = 1e-4
        names: tuple[str, ...] = ("l2",)

        def __call__(self, outputs, targets, extra):
            value = self.weight * sum(jnp.sum(h ** 2) for h in outputs.heads)
            return value, {"l2": value}

    fit(graph, variables, train_set, config, extra_terms=(HeadL2(weight=1e-4),))

and one that runs a frozen teacher network on the same batch, inside the same step::

    @dataclass(frozen=True, kw_only=True)
    class Distill(LossTerm):
        teacher: ir.Graph                       # static: part of the compilation
        names: tuple[str, ...] = ("distill",)

        def __call__(self, outputs, targets, extra):
            taught = DarknetModule(self.teacher).apply(extra, outputs.images, train=False)
            value = sum(jnp.mean((s - t) ** 2) for s, t in zip(outputs.heads, taught.heads))
            return value, {"distill": value}

    Distill(teacher=teacher_graph, extra=teacher_variables)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

import ir
from runtime.model import ForwardOut

# Metric names the step and `fit` already report; a term may not reuse them.
RESERVED = frozenset({"loss", "s", "lr", "epoch", "step", "left_out", "map50", "params",
                      "bflops", "params_at_safe", "bflops_at_safe", "safe_prune_ratio"})
RESERVED_PREFIXES = ("gamma_",)


class LossTermError(ValueError):
    """A loss term that cannot be used: a bad or clashing metric name, an unhashable
    static field, or a result that does not match what it declares.

    ``loss term HeadL2(weight=0.1, names=('loss',)): metric 'loss' is reserved (the step
    reports it); expected another name``
    """


@dataclass(frozen=True, eq=False)
class StepOutputs:
    """What the train step hands every loss term (inside the jitted step).

    Attributes:
        heads: the raw NHWC map feeding each ``[yolo]`` (``forward.heads``).
        forward: the whole `runtime.ForwardOut` of the trained network (train mode).
        images: the batch, NHWC, as the network saw it.
        input_hw: the input's (height, width).
        graph: the trained network.
        params: the parameters being trained (a term may penalise them; the gradient
            flows through them as through ``heads``).
    """

    heads: tuple[jax.Array, ...]
    forward: ForwardOut
    images: jax.Array
    input_hw: tuple[int, int]
    graph: ir.Graph
    params: Any


@dataclass(frozen=True, kw_only=True)
class LossTerm:
    """One term of the training loss (subclass it; see the module docstring).

    Attributes:
        names: the metrics ``__call__`` reports, in display order.
        extra: a pytree the step passes into its compiled function as an argument (not
            differentiated, not updated, left out of equality and hashing).
    """

    names: tuple[str, ...] = ()
    extra: Any = field(default=None, compare=False, repr=False)

    def __call__(self, outputs: StepOutputs, targets: jax.Array, extra: Any
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The term's scalar (added to the loss) and its metrics, keyed by ``names``."""
        raise NotImplementedError(f"{type(self).__name__} does not define __call__")


def check_terms(terms: Sequence[LossTerm]) -> tuple[LossTerm, ...]:
    """``terms`` as a tuple, after checking each is a hashable `LossTerm` whose metric
    names are non-empty strings, not reserved and not reported by another term.

    Raises:
        LossTermError: naming the term, what was found and what was expected.
    """
    terms = tuple(terms)
    if not terms:
        raise LossTermError("no loss terms: expected at least one (e.g. yolo_terms())")
    seen: dict[str, LossTerm] = {}
    for term in terms:
        if not isinstance(term, LossTerm):
            raise LossTermError(f"loss term {term!r}: expected a LossTerm (a frozen "
                                "dataclass subclassing runtime.LossTerm)")
        try:
            hash(term)
        except TypeError as error:
            raise LossTermError(f"loss term {term!r}: a static field is unhashable "
                                f"({error}); expected hashable fields (tuples, not lists; "
                                "arrays belong in `extra`)") from error
        if not term.names or not isinstance(term.names, tuple):
            raise LossTermError(f"loss term {term!r}: names={term.names!r}; expected a "
                                "non-empty tuple of metric names")
        for name in term.names:
            if not isinstance(name, str) or not name:
                raise LossTermError(f"loss term {term!r}: metric name {name!r}; expected a "
                                    "non-empty string")
            if name in RESERVED or name.startswith(RESERVED_PREFIXES):
                raise LossTermError(f"loss term {term!r}: metric {name!r} is reserved (the "
                                    "step or fit reports it); expected another name")
            if name in seen:
                raise LossTermError(f"loss term {term!r}: metric {name!r} is also reported "
                                    f"by {seen[name]!r}; expected unique names")
            seen[name] = term
    return terms


def term_names(terms: Sequence[LossTerm]) -> tuple[str, ...]:
    """The metric names of ``terms``, in order (what progress lines print)."""
    return tuple(name for term in terms for name in term.names)


def without_extra(term: LossTerm) -> LossTerm:
    """``term`` with ``extra=None``: its static part, the key of its compilation.

    A shallow copy whose field is set the way frozen dataclasses set their own fields,
    so a subclass's ``__post_init__`` (which may insist on an ``extra``) is not rerun.
    """
    if term.extra is None:
        return term
    static = copy.copy(term)
    object.__setattr__(static, "extra", None)
    return static


def sum_terms(terms: tuple[LossTerm, ...], outputs: StepOutputs, targets: jax.Array,
              extras: tuple[Any, ...]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total (the terms' scalars added in order, the first one not added to 0, so
    one term's total is its scalar bit for bit) and every term's metrics."""
    total, metrics = None, {}
    for term, extra in zip(terms, extras, strict=True):
        value, reported = term(outputs, targets, extra)
        value = jnp.asarray(value)
        if value.shape != ():
            raise LossTermError(f"loss term {term!r}: returned a value of shape "
                                f"{value.shape}; expected a scalar")
        if set(reported) != set(term.names):
            raise LossTermError(f"loss term {term!r}: reported metrics "
                                f"{sorted(reported)}; expected its names {list(term.names)}")
        metrics.update({name: reported[name] for name in term.names})
        total = value if total is None else total + value
    assert total is not None  # check_terms refuses an empty tuple of terms
    return total, metrics
