"""Transfer learning: weights trained for one cfg as the start of another.

Nobody trains a detector from scratch on a few hundred photos: they start from
COCO-pretrained weights and swap the detection heads for their own class count.
Darknet does it with ``darknet partial`` (keep the first N layers) and ``-clear``;
ultralytics loads every tensor whose shape matches. `transfer_variables` does the
latter, layer for layer, and says exactly what it did (`TransferReport`):

- every layer whose variables have the same shapes in the file is loaded;
- with ``reinit_heads``, each conv that feeds a detection head is re-initialised, and
  so is any other layer whose shapes differ (reported with both shapes);
- without it, any difference is an error naming ``reinit_heads=True`` (the CLI's
  ``--reinit-heads``), so a file made for another cfg never loads silently.

A Darknet ``.weights`` file carries no shapes: the cfg it was written for is ``source``
when given, else the target cfg itself when the file fits it (or is a backbone prefix
of it), else the target cfg with its ``[yolo]`` heads retargeted to the one class
count that makes the file's size come out exactly (80 for a COCO file).

>>> import frontends
>>> coco = ir.parse_cfg("yolov3-tiny.cfg")  # 80 classes
>>> frontends.save_variables(coco, frontends.default_variables(coco), "coco.weights")
()
>>> mine = retarget_heads(coco, 1)  # classes=1, filters=18 before each [yolo]
>>> fresh = frontends.default_variables(mine, seed=1)  # train uses the runtime's init
>>> t = transfer_variables(mine, "coco.weights", fresh, reinit_heads=True)
>>> t.report.reinitialised_indices, len(t.report.loaded)
((15, 22), 11)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import ir
from frontends.darknet import _read_header, weighted_layers
from frontends.errors import CheckpointError, WeightsError
from frontends.files import format_of, is_backbone_name, load_variables
from frontends.variables import LoadedWeights, Variables, layer_key, where
from ir.variables import iter_leaves, layer_shapes

__all__ = ["LayerChange", "Transfer", "TransferReport", "head_feeds",
           "infer_darknet_source", "retarget_heads", "transfer_variables"]


@dataclass(frozen=True, slots=True)
class LayerChange:
    """One layer that was not loaded from the file.

    Attributes:
        index: the layer index (in the target cfg).
        reason: ``"head"`` (feeds a detection head), ``"shape"`` (its variables have
            other shapes in the file) or ``"absent"`` (the file does not hold it: a
            backbone such as ``yolov3-tiny.conv.15``).
        detail: the human words: which head, which shapes.
    """

    index: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class TransferReport:
    """What `transfer_variables` did, layer by layer.

    Attributes:
        source: the weights file.
        source_cfg: how its layout was known: ``"the target cfg"``, a cfg path, or
            ``"MODEL.cfg with classes=N in its [yolo] heads (from the file size)"``.
        loaded: indices of the layers whose variables came from the file.
        changed: the other weighted layers, each with why (`LayerChange`).
        warnings: the reader's warnings (eps conversions, ...).
    """

    source: str
    source_cfg: str
    loaded: tuple[int, ...]
    changed: tuple[LayerChange, ...]
    warnings: tuple[str, ...] = ()

    @property
    def reinitialised_indices(self) -> tuple[int, ...]:
        """Layers freshly initialised because they feed a head or differ in shape."""
        return tuple(c.index for c in self.changed if c.reason != "absent")

    @property
    def absent_indices(self) -> tuple[int, ...]:
        return tuple(c.index for c in self.changed if c.reason == "absent")


@dataclass(frozen=True)
class Transfer:
    """Variables for the target cfg and the `TransferReport` of how they were made."""

    variables: Variables
    report: TransferReport
    loaded: LoadedWeights


def head_feeds(graph: ir.Graph) -> dict[int, int]:
    """``{conv index: head index}`` for each conv whose output a detection head
    (``[yolo]``, ``[Gaussian_yolo]``, ``[region]``) reads."""
    feeds: dict[int, int] = {}
    for head in graph.head_indices():
        for j in ir.layer_inputs(graph, head):
            if j >= 0 and isinstance(graph.layers[j], ir.Conv):
                feeds.setdefault(j, head)
    return feeds


def _yolo(graph: ir.Graph, index: int) -> ir.Yolo:
    """Layer ``index`` of ``graph``, one of `ir.Graph.yolo_indices`."""
    layer = graph.layers[index]
    assert isinstance(layer, ir.Yolo)
    return layer


def retarget_heads(graph: ir.Graph, classes: int) -> ir.Graph:
    """``graph`` with every ``[yolo]`` predicting ``classes`` classes and the conv
    feeding it ``len(mask) * (classes + 5)`` filters: the same network trained on
    another dataset (COCO's 80 classes, say)."""
    updates: dict[int, ir.Layer] = {}
    for index in graph.yolo_indices():
        head = _yolo(graph, index)
        updates[index] = dataclasses.replace(head, classes=classes)
        for j in ir.layer_inputs(graph, index):
            feed = graph.layers[j] if j >= 0 else None
            if isinstance(feed, ir.Conv):
                updates[j] = dataclasses.replace(feed, filters=len(head.mask) * (classes + 5))
    return graph.replace_layers(updates)


def _body_floats(graph: ir.Graph) -> int:
    """Floats of a complete ``.weights`` body for ``graph``."""
    return sum(int(np.prod(shape)) for leaves in layer_shapes(graph).values()
               for shape in leaves.values())


def infer_darknet_source(graph: ir.Graph, path: str | os.PathLike[str]) -> ir.Graph | None:
    """The cfg a Darknet ``.weights`` file was written for, if it is ``graph`` with its
    ``[yolo]`` heads retargeted to another class count (`retarget_heads`): the body's
    size is linear in the class count, so at most one count fits exactly. None when
    the file fits ``graph`` itself, holds no complete network of that form, or
    ``graph`` has no ``[yolo]`` head.
    """
    heads = graph.yolo_indices()
    if not heads or len({_yolo(graph, i).classes for i in heads}) > 1:
        return None
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = _read_header(bytearray(f.read(20)), str(path))
    body = size - header.size
    if body % 4:
        return None
    body //= 4
    classes = _yolo(graph, heads[0]).classes
    here = _body_floats(graph)
    if body == here:
        return None
    slope = _body_floats(retarget_heads(graph, classes + 1)) - here
    if slope <= 0 or (body - here) % slope:
        return None
    other = classes + (body - here) // slope
    if other < 1:
        return None
    source = retarget_heads(graph, other)
    return source if _body_floats(source) == body else None


def _leaf_shapes(tree: Variables, key: str) -> dict[tuple[str, ...], tuple[int, ...]]:
    found = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in iter_leaves(tree.get(collection, {}).get(key, {})):
            found[(collection, *path)] = tuple(np.shape(leaf))
    return found


def _describe_shapes(shapes: dict[tuple[str, ...], tuple[int, ...]]) -> str:
    kernel = shapes.get(("params", "conv", "kernel"))
    if kernel is not None and len(kernel) == 4:
        return f"{kernel[3]} filters, kernel {kernel[0]}x{kernel[1]}x{kernel[2]}"
    return ", ".join(f"{'.'.join(p[1:])} {s}" for p, s in shapes.items()) or "nothing"


def _take(variables: Variables, key: str, into: dict[str, dict[str, Any]]) -> None:
    for collection in ("params", "batch_stats"):
        if key in variables.get(collection, {}):
            into[collection][key] = variables[collection][key]
        else:
            into[collection].pop(key, None)


def transfer_variables(graph: ir.Graph, path: str | os.PathLike[str], init: Variables, *,
                       reinit_heads: bool = False, source: ir.Graph | None = None,
                       bn_eps: float | None = None, layout: str | None = None
                       ) -> Transfer:
    """Variables for ``graph`` from a weights file that may be for another cfg.

    Args:
        graph: the cfg to train (e.g. yolov3-tiny with ``classes=1``).
        path: the weights (``.weights``, ``*.conv.N``, ``.pt``/``.pth``, ``.msgpack``).
        init: complete fresh variables for ``graph`` (the caller's initialiser, e.g.
            the runtime's with `runtime.step.init_head_biases` priors); every layer not
            loaded from the file takes its variables from here.
        reinit_heads: re-initialise the convs that feed a detection head, and accept
            layers whose shapes differ (re-initialised too). Without it, any such
            layer is an error.
        source: the cfg the file was written for (default: inferred, see the module).
        bn_eps, layout: torch only, as in `frontends.load_variables`.

    Returns:
        `Transfer`: the variables, the `TransferReport` and the reader's result.

    Raises:
        WeightsError: the file is for another cfg (shapes differ) and not
            ``reinit_heads``, naming the layers and ``reinit_heads=True``; or it cannot
            be read for ``source`` (naming ``--weights-cfg`` when ``source`` was not
            given). CheckpointError: a torch file that cannot be read.
    """

    src_path = str(path)
    fmt = format_of(path)
    described = "the target cfg"
    if source is None and fmt == "darknet" and not is_backbone_name(path):
        # a *.conv.N backbone is a prefix of the target, whatever its size
        source = infer_darknet_source(graph, path)
        if source is not None:
            classes = _yolo(source, source.yolo_indices()[0]).classes
            described = (f"{Path(str(graph.path)).name} with classes={classes} in its "
                         "[yolo] heads (from the file size)")
    elif source is not None:
        described = str(source.path)
    source = source if source is not None else graph
    try:
        loaded = load_variables(source, path, bn_eps=bn_eps, layout=layout)
    except (WeightsError, CheckpointError) as exc:
        if source is not graph:
            raise
        raise type(exc)(f"{exc}\nIf {src_path} was trained for another cfg, name that "
                        "cfg (transfer_variables(source=...), darkslim train "
                        "--weights-cfg SRC.cfg)") from None
    held = set(weighted_layers(source)[:loaded.loaded_convs])
    feeds = head_feeds(graph) if reinit_heads else {}
    variables = {"params": dict(init["params"]),
                 "batch_stats": dict(init.get("batch_stats", {}))}
    loaded_layers: list[int] = []
    changes: list[LayerChange] = []
    differing: list[str] = []
    for index in weighted_layers(graph):
        key = layer_key(index)
        want = _leaf_shapes(init, key)
        same_kind = (index < len(source.layers)
                     and source.layers[index].kind == graph.layers[index].kind)
        if index < len(source.layers) and index not in held:
            changes.append(LayerChange(index, "absent", f"{src_path} does not hold it"))
            continue
        have = _leaf_shapes(loaded.variables, key) if same_kind else {}
        fits = same_kind and have == want
        if not fits:
            detail = (f"{_describe_shapes(have)} in the file, {_describe_shapes(want)} "
                      "here" if have else f"no matching layer in {src_path}")
            differing.append(f"  {where(graph, index)}: {detail}")
        if index in feeds:
            head = graph.layers[feeds[index]]
            text = f"feeds [{head.kind}] layer {feeds[index]}"
            if not fits:
                text += f" ({detail})"
            changes.append(LayerChange(index, "head", text))
        elif not fits:
            changes.append(LayerChange(index, "shape", detail))
        else:
            _take(loaded.variables, key, variables)
            loaded_layers.append(index)
    if differing and not reinit_heads:
        shown = "\n".join(differing[:6]) + (f"\n  ... and {len(differing) - 6} more"
                                            if len(differing) > 6 else "")
        raise WeightsError(
            f"{src_path}: written for {described}, not {graph.path}: "
            f"{len(differing)} layer(s) differ in shape:\n{shown}\n"
            "To start from it anyway (transfer learning: load every layer whose shapes "
            "match, re-initialise the detection heads and the layers that differ), pass "
            "reinit_heads=True")
    report = TransferReport(source=src_path, source_cfg=described,
                            loaded=tuple(loaded_layers), changed=tuple(changes),
                            # read_darknet's only warning is the partial file's, which
                            # `changed` reports layer by layer (and `init` filled them)
                            warnings=() if loaded.format == "darknet" else loaded.warnings)
    return Transfer(variables=variables, report=report, loaded=loaded)
