"""Knowledge distillation from a frozen teacher network: the loss term `Distill`.

A pruned (or otherwise slimmed) student keeps its teacher's ``[yolo]`` head layout, so
each student head can be pulled towards the teacher's head on the same augmented batch
(``outputs.images``). The teacher runs inside the jitted train step in eval mode (its
running BatchNorm statistics) behind ``jax.lax.stop_gradient``; its variables are the
term's ``extra`` pytree, an argument of the compiled step, never differentiated or
updated (`runtime.terms`).

Per ``[yolo]`` head, with anchor-major channels ``(tx ty tw th obj cls...)`` reshaped
to ``(N, H, W, A, 5 + C)``:

- **objectness**: BCE of the student's objectness against the teacher's objectness
  probability (a soft target), mean over the cells;
- **class**: BCE of the student's class scores against the teacher's class
  probabilities, mean over cells and classes;
- **box**: squared error of the raw box outputs ``tx ty tw th`` (summed over the four),
  only at cells where the teacher's objectness exceeds ``confidence``, mean over
  those cells (0 where there are none).

A ``new_coords=1`` head arrives post-logistic, so its BCE takes probabilities. The sum
over heads is scaled by ``weight`` and by the batch size, as `runtime.loss.yolo_loss`
is, so the gradient of a batch is a sum over its images. With student == teacher each
part's gradient with respect to the student's heads is zero (the BCE's gradient is
``σ(s) - σ(t)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import jax
import jax.numpy as jnp

import ir
from runtime.loss import _bce, _bce_prob
from runtime.model import DarknetModule, ForwardOut
from runtime.terms import LossTerm, StepOutputs


class DistillError(ValueError):
    """A teacher whose ``[yolo]`` heads do not match the student's (masks, anchors,
    classes, coordinates or map shapes), naming both cfgs and the first difference."""


def _head_layout(graph: ir.Graph) -> tuple[tuple[Any, ...], ...]:
    """Per ``[yolo]``: (mask, anchors, classes, new_coords, scale_x_y, (c, h, w) of its
    input map): what a student head must share with its teacher's."""
    shapes = ir.verify(graph)
    layout = []
    for index in graph.yolo_indices():
        layer = graph.layers[index]
        assert isinstance(layer, ir.Yolo)  # a yolo_indices() layer
        layout.append((layer.mask, layer.anchors, layer.classes, layer.new_coords,
                       layer.scale_x_y, tuple(shapes[index])))
    return tuple(layout)


def check_head_layout(student: ir.Graph, teacher: ir.Graph) -> None:
    """Raise `DistillError` unless ``student`` and ``teacher`` have the same ``[yolo]``
    heads, in order: masks, anchors, classes, coordinates and map shapes."""
    fields = ("mask", "anchors", "classes", "new_coords", "scale_x_y", "map (c, h, w)")
    mine, theirs = _head_layout(student), _head_layout(teacher)
    if len(mine) != len(theirs):
        raise DistillError(f"student {student.path} has {len(mine)} [yolo] heads, teacher "
                           f"{teacher.path} has {len(theirs)}: expected the same head "
                           "layout (a pruned network keeps its teacher's)")
    pairs = zip(student.yolo_indices(), teacher.yolo_indices(), mine, theirs)
    for k, (i, j, a, b) in enumerate(pairs):
        for name, x, y in zip(fields, a, b):
            if x != y:
                raise DistillError(
                    f"[yolo] head {k}: student {student.path}:{student.layers[i].line} "
                    f"(layer {i}) has {name} {x}, teacher {teacher.path}:"
                    f"{teacher.layers[j].line} (layer {j}) has {name} {y}: expected the "
                    "same head layout (a pruned network keeps its teacher's)")


def distill_head(student: jax.Array, teacher: jax.Array, layer: ir.Yolo,
                 confidence: float = 0.5) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(obj, cls, box) distillation parts of one head pair (raw NHWC maps, unscaled)."""
    n, h, w, c = student.shape
    count = len(layer.mask)
    s = student.reshape(n, h, w, count, c // count).astype(jnp.float32)
    t = teacher.reshape(n, h, w, count, c // count).astype(jnp.float32)
    if layer.new_coords:
        t_obj, t_cls = t[..., 4], t[..., 5:]
        obj = _bce_prob(s[..., 4], t_obj).mean()
        cls = _bce_prob(s[..., 5:], t_cls).mean()
    else:
        t_obj, t_cls = jax.nn.sigmoid(t[..., 4]), jax.nn.sigmoid(t[..., 5:])
        obj = _bce(s[..., 4], t_obj).mean()
        cls = _bce(s[..., 5:], t_cls).mean()
    confident = (t_obj > confidence).astype(jnp.float32)
    err = ((s[..., :4] - t[..., :4]) ** 2).sum(-1)
    box = (err * confident).sum() / jnp.maximum(confident.sum(), 1.0)
    return obj, cls, box


@dataclass(frozen=True, kw_only=True)
class Distill(LossTerm):
    """Distillation from a frozen teacher (see the module docstring).

    Attributes:
        teacher: the teacher's graph (static: part of the compilation).
        weight: the scale of the whole term.
        confidence: the teacher objectness above which the box outputs are matched.
        extra: the teacher's variables (``params`` and ``batch_stats``).

    Example::

        term = Distill(teacher=teacher_graph, extra=teacher_variables, weight=1.0)
        fit(student_graph, variables, train_set, config, extra_terms=(term,))
    """

    teacher: ir.Graph
    weight: float = 1.0
    confidence: float = 0.5
    names: tuple[str, ...] = ("distill",)

    def __call__(self, outputs: StepOutputs, targets: jax.Array, extra: Any
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
        taught = cast(ForwardOut, DarknetModule(self.teacher).apply(
            extra, outputs.images, train=False))
        heads = tuple(jax.lax.stop_gradient(h) for h in taught.heads)
        value = distill_heads(outputs.graph, outputs.heads, heads, self.confidence)
        value = self.weight * targets.shape[0] * value
        return value, {"distill": value}


def distill_heads(graph: ir.Graph, student: tuple[jax.Array, ...],
                  teacher: tuple[jax.Array, ...], confidence: float = 0.5) -> jax.Array:
    """Σ over the ``[yolo]`` heads of obj + cls + box (`distill_head`), unscaled."""
    total = jnp.zeros((), jnp.float32)
    for index, s, t in zip(graph.yolo_indices(), student, teacher, strict=True):
        layer = graph.layers[index]
        if not isinstance(layer, ir.Yolo):
            raise DistillError(f"{graph.path}: layer {index} is a [{layer.kind}]: "
                               "distillation covers [yolo] heads")
        obj, cls, box = distill_head(s, t, layer, confidence)
        total = total + obj + cls + box
    return total
