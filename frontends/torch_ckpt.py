"""Torch checkpoints of the cfg-based YOLO projects, in and out.

(Over 400 lines: both key layouts, read and write, share the per-layer key tables.)

Two key layouts exist in the wild; both build one ``nn.Sequential`` per cfg section in
``module_list``, so ``{i}`` below is the absolute layer index:

- **ultralytics** (the cfg-era ``ultralytics/yolov3``, "U-version"):
  ``module_list.{i}.Conv2d.weight`` (``Conv2d.bias`` without BN) and
  ``module_list.{i}.BatchNorm2d.{weight,bias,running_mean,running_var,
  num_batches_tracked}``.
  A checkpoint is a dict ``{"epoch", "best_fitness", "training_results", "model":
  state_dict, "optimizer"}``. Its BatchNorm eps is **1e-4**.
- **erik** (``eriklindernoren/PyTorch-YOLOv3`` and the Lam1360 pruning code built on it):
  ``module_list.{i}.conv_{i}.weight``, ``module_list.{i}.batch_norm_{i}.*``, and in
  newer versions the ``[yolo]`` buffers ``module_list.{i}.yolo_{i}.anchors`` (the
  head's anchors in pixels, ``(na, 2)``) and ``.anchor_grid`` (``(1, na, 1, 1, 2)``).
  Saved as a bare state_dict. BatchNorm eps **1e-5**.

**BatchNorm eps.** torch computes ``γ (x - μ) / sqrt(v + eps) + β``. The variables
pytree assumes the runtime's eps (1e-5, `RUNTIME_BN_EPS`), so reading a checkpoint
trained with eps ``e`` stores ``v + (e - 1e-5)``, which computes the same function;
writing does the reverse. When a variance would become negative (it is smaller than
the eps difference) no conversion is exact: it is set to 0 and a loud warning says
where. With equal eps nothing is touched, so round trips are byte exact.

**Safety.** Files are read with ``torch.load(weights_only=True)`` and exactly the numpy
globals a real ultralytics checkpoint needs (`frontends.torch_file`); a pickle that
would run code is refused with `CheckpointError` before it runs.

torch is imported inside the functions here only, so ``import frontends`` stays light.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

import ir
from frontends._atomic import atomic_path
from frontends.darknet import DarknetHeader
from frontends.errors import CheckpointError
from frontends.torch_file import detect_layout, find_state_dict, safe_load, stored_darknet_header
from frontends.variables import (
    RUNTIME_BN_EPS,
    LoadedWeights,
    Variables,
    check_variables,
    conv_in_channels,
    layer_key,
    unsupported_weighted_layers,
    where,
)

__all__ = ["DEFAULT_BN_EPS", "LAYOUTS", "CheckpointError", "CheckpointMeta",
           "read_torch", "state_dict_from_variables", "write_torch"]

LAYOUTS = ("ultralytics", "erik")
DEFAULT_BN_EPS = {"ultralytics": 1e-4, "erik": 1e-5}
"""The BatchNorm eps each project builds its ``nn.BatchNorm2d`` with."""

_SHOW = 5  # offending keys listed in an error


@dataclass(frozen=True)
class CheckpointMeta:
    """What a torch checkpoint said about itself, kept for writing it back.

    Attributes:
        layout: ``"ultralytics"`` or ``"erik"``.
        bn_eps: the BatchNorm eps the checkpoint's network used (and was converted from).
        container: ``"checkpoint"`` (a dict holding ``model``/``state_dict``) or
            ``"state_dict"`` (bare).
        prefix: a prefix stripped from every key (``"module."`` from DataParallel).
        anchor_buffers: whether erik's ``yolo_{i}.anchors``/``anchor_grid`` were there.
        entries: the checkpoint dict's other keys (``epoch``, ``best_fitness``, ...).
        darknet_header: the ``.weights`` header darkslim stored in a checkpoint it
            converted from Darknet, so ``.weights -> .pt -> .weights`` is byte exact:
            ultralytics, the checkpoint entry ``darknet_header`` (ignored by that
            code); erik, the state_dict's ``_metadata["darknet_header"]`` (where torch
            keeps per-module versions; ``load_state_dict(strict=True)`` ignores it).
    """

    layout: str
    bn_eps: float
    container: str = "state_dict"
    prefix: str = ""
    anchor_buffers: bool = False
    entries: tuple[str, ...] = ()
    darknet_header: DarknetHeader | None = None


class _Slot(NamedTuple):
    """One state_dict entry the cfg calls for."""

    index: int  # type: ignore[assignment]  # a NamedTuple field named like a tuple method: the layer index
    path: tuple[str, ...]  # variables path, or () for buffers with no variable
    shape: tuple[int, ...]  # torch shape
    required: bool


def _conv_names(layout: str, index: int) -> tuple[str, str]:
    if layout == "ultralytics":
        return f"module_list.{index}.Conv2d", f"module_list.{index}.BatchNorm2d"
    return f"module_list.{index}.conv_{index}", f"module_list.{index}.batch_norm_{index}"


def _slots(graph: ir.Graph, layout: str, anchor_buffers: bool) -> dict[str, _Slot]:
    """Every key the cfg's torch module has in ``layout``, in module order."""
    in_channels = conv_in_channels(graph)
    slots: dict[str, _Slot] = {}
    for i, layer in enumerate(graph.layers):
        key = layer_key(i)
        if isinstance(layer, ir.Conv):
            conv, bn = _conv_names(layout, i)
            out = layer.filters
            slots[f"{conv}.weight"] = _Slot(i, ("params", key, "conv", "kernel"), (
                out, in_channels[i] // layer.groups, layer.size, layer.size), True)
            if layer.batch_normalize:
                for name, path in (("weight", ("params", key, "bn", "scale")),
                                   ("bias", ("params", key, "bn", "bias")),
                                   ("running_mean", ("batch_stats", key, "bn", "mean")),
                                   ("running_var", ("batch_stats", key, "bn", "var"))):
                    slots[f"{bn}.{name}"] = _Slot(i, path, (out,), True)
                slots[f"{bn}.num_batches_tracked"] = _Slot(i, (), (), False)
            else:
                slots[f"{conv}.bias"] = _Slot(i, ("params", key, "conv", "bias"), (out,),
                                              True)
        elif isinstance(layer, ir.Yolo) and layout == "erik":
            na = len(layer.mask)
            base = f"module_list.{i}.yolo_{i}"
            slots[f"{base}.anchors"] = _Slot(i, (), (na, 2), anchor_buffers)
            slots[f"{base}.anchor_grid"] = _Slot(i, (), (1, na, 1, 1, 2), anchor_buffers)
    return slots


# -- BatchNorm eps ---------------------------------------------------------------------

def _shift_var(var: np.ndarray, delta: float) -> tuple[np.ndarray, int]:
    """``var + delta`` in float32, clamped at 0; also how many were clamped."""
    if delta == 0.0:
        return var, 0
    shifted = var.astype(np.float64) + delta
    negative = int(np.count_nonzero(shifted < 0))
    return np.maximum(shifted, 0.0).astype(np.float32), negative


def _eps_warning(source: str, graph: ir.Graph, clamped: dict[int, int], eps_from: float,
                 eps_to: float) -> str:
    total = sum(clamped.values())
    layers = ", ".join(f"{where(graph, i)}: {n}" for i, n in list(clamped.items())[:_SHOW])
    more = f", and {len(clamped) - _SHOW} more layers" if len(clamped) > _SHOW else ""
    return (f"WARNING {source}: BatchNorm eps {eps_from:g} -> {eps_to:g}: {total} running "
            f"variance(s) in {len(clamped)} layer(s) are smaller than the eps difference "
            f"{abs(eps_from - eps_to):g} ({layers}{more}); they were set to 0, so the "
            "converted network is NOT exactly the original in those channels")


def _pool_warnings(graph: ir.Graph, source: str) -> tuple[str, ...]:
    return tuple(
        f"{source}: {where(graph, i)} size=2 stride=1: the torch projects pad this "
        "maxpool with zeros where Darknet and darkslim pad with -inf, so outputs differ "
        "from the torch original at the right/bottom border"
        for i, layer in enumerate(graph.layers)
        if isinstance(layer, ir.MaxPool) and layer.size == 2 and layer.stride == 1)


# -- reading ---------------------------------------------------------------------------

def _problem(graph: ir.Graph, key: str, slot: _Slot | None, what: str) -> str:
    at = f" ({where(graph, slot.index)})" if slot is not None else ""
    return f"  {key}{at}: {what}"


def _head_anchors(layer: ir.Layer) -> tuple[tuple[float, float], ...]:
    assert isinstance(layer, (ir.Yolo, ir.GaussianYolo))  # only heads have anchor slots
    return layer.head_anchors


def _check_anchors(graph: ir.Graph, state: Mapping[str, Any], slots: dict[str, _Slot],
                   source: str) -> None:
    problems = []
    for key, slot in slots.items():
        if not key.endswith((".anchors", ".anchor_grid")) or key not in state:
            continue
        layer = graph.layers[slot.index]
        expected = np.asarray(_head_anchors(layer), dtype=np.float32)
        found = state[key].detach().double().numpy()
        if not np.allclose(found.reshape(-1, 2), expected, rtol=1e-5, atol=1e-3):
            problems.append(_problem(graph, key, slot, "expected the cfg's anchors "
                                     f"{expected.tolist()}, found "
                                     f"{found.reshape(-1, 2).tolist()}"))
    if problems:
        raise CheckpointError(f"{source}: [yolo] anchor buffers differ from "
                              f"{graph.path}:\n" + "\n".join(problems[:_SHOW]))


def read_torch(graph: ir.Graph, path: str | os.PathLike[str], *, bn_eps: float | None = None,
               layout: str | None = None) -> LoadedWeights:
    """Read an ultralytics or erik torch checkpoint for ``graph``.

    Args:
        graph: the cfg the checkpoint was trained with.
        path: a ``.pt``/``.pth`` file: a checkpoint dict with ``model`` (or
            ``state_dict``) or a bare state_dict; zip or legacy torch format.
        bn_eps: the BatchNorm eps the checkpoint's network used; default
            `DEFAULT_BN_EPS` of its layout. Folded into the running variances.
        layout: ``"ultralytics"`` or ``"erik"``; default detected from the keys.

    Returns:
        `LoadedWeights` with ``format="torch"`` and ``header`` a `CheckpointMeta`.

    Raises:
        CheckpointError: an unsafe or unreadable file, or keys missing, unexpected or
            misshapen (the first few listed with layer, cfg line, expected and found).
    """
    import torch

    source = str(path)
    if layout is not None and layout not in LAYOUTS:
        raise CheckpointError(f"{source}: layout={layout!r}: expected one of {LAYOUTS}")
    unsupported = unsupported_weighted_layers(graph)
    if unsupported:
        raise CheckpointError(f"{source}: {where(graph, unsupported[0])} holds weights "
                              "darkslim cannot convert yet")
    obj, notes = safe_load(path, source)
    state, container, entries = find_state_dict(obj, source)
    darknet_header = stored_darknet_header(obj, state, container, source)
    keys = [str(k) for k in state]
    prefix = "module." if keys and all(k.startswith("module.") for k in keys) else ""
    state = {k[len(prefix):]: v for k, v in zip(keys, state.values())}
    layout = layout or detect_layout(state, source)
    eps = DEFAULT_BN_EPS[layout] if bn_eps is None else float(bn_eps)
    has_anchors = any(k.endswith(".anchors") for k in state)
    slots = _slots(graph, layout, anchor_buffers=False)

    problems = []
    for key, slot in slots.items():
        value = state.get(key)
        if value is None:
            if slot.required:
                problems.append(_problem(graph, key, slot,
                                         f"missing, expected shape {slot.shape}"))
        elif not isinstance(value, torch.Tensor):
            problems.append(_problem(graph, key, slot, f"expected a tensor of shape "
                                     f"{slot.shape}, found {type(value).__name__}"))
        elif tuple(value.shape) != slot.shape:
            problems.append(_problem(graph, key, slot, f"expected shape {slot.shape}, "
                                     f"found {tuple(value.shape)}"))
        elif slot.path and not value.is_floating_point():
            problems.append(_problem(graph, key, slot,
                                     f"expected floating values, found {value.dtype}"))
    for key, value in state.items():
        if key not in slots:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else "?"
            problems.append(_problem(graph, key, None, f"unexpected (shape {shape}): "
                                     f"{graph.path} has no such {layout} key"))
    if problems:
        raise CheckpointError(
            f"{source}: {len(problems)} key(s) of this {layout} checkpoint do not fit "
            f"{graph.path}:\n" + "\n".join(problems[:_SHOW])
            + (f"\n  ... and {len(problems) - _SHOW} more" if len(problems) > _SHOW else "")
            + "\n(a checkpoint for another cfg?)")
    _check_anchors(graph, state, slots, source)

    params: dict[str, dict[str, Any]] = {}
    stats: dict[str, dict[str, Any]] = {}
    clamped: dict[int, int] = {}
    dtypes: set[str] = set()
    for key, slot in slots.items():
        if not slot.path:
            continue
        tensor = state[key].detach()
        if tensor.dtype != torch.float32:
            dtypes.add(str(tensor.dtype).replace("torch.", ""))
        value = tensor.to(torch.float32).contiguous().numpy()
        if slot.path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO, a view
        elif slot.path[-1] == "var":
            value, n = _shift_var(value, eps - RUNTIME_BN_EPS)
            if n:
                clamped[slot.index] = n
        group, layer, module, name = slot.path
        tree = params if group == "params" else stats
        tree.setdefault(layer, {}).setdefault(module, {})[name] = value

    warns = list(notes)
    if dtypes:
        warns.append(f"{source}: tensors stored as {', '.join(sorted(dtypes))} were "
                     "converted to float32")
    if clamped:
        warns.append(_eps_warning(source, graph, clamped, eps, RUNTIME_BN_EPS))
    warns += _pool_warnings(graph, source)
    meta = CheckpointMeta(layout=layout, bn_eps=eps, container=container, prefix=prefix,
                          anchor_buffers=has_anchors, entries=entries,
                          darknet_header=darknet_header)
    n_convs = len(graph.conv_indices())
    return LoadedWeights(variables={"params": params, "batch_stats": stats},
                         format="torch", loaded_convs=n_convs, total_convs=n_convs,
                         header=meta, warnings=tuple(warns))


# -- writing ---------------------------------------------------------------------------

def _tensor(value: Any) -> Any:
    import torch

    array = np.ascontiguousarray(value, dtype=np.float32)
    if not array.flags.writeable:  # torch.from_numpy wants a writable buffer
        array = array.copy()
    return torch.from_numpy(array)


def state_dict_from_variables(graph: ir.Graph, variables: Variables, *,
                              layout: str = "ultralytics", bn_eps: float | None = None,
                              anchor_buffers: bool = False, source: str = "<variables>"
                              ) -> tuple["OrderedDict[str, Any]", tuple[str, ...]]:
    """The torch state_dict of ``variables`` in ``layout``, and the warnings.

    Args:
        bn_eps: the eps of the torch network the state_dict is for (default the
            layout's); running variances are shifted by ``1e-5 - bn_eps``.
        anchor_buffers: emit erik's ``yolo_{i}.anchors``/``anchor_grid`` buffers.
    """
    import torch

    if layout not in LAYOUTS:
        raise CheckpointError(f"{source}: layout={layout!r}: expected one of {LAYOUTS}")
    unsupported = unsupported_weighted_layers(graph)
    if unsupported:
        raise CheckpointError(f"{source}: {where(graph, unsupported[0])} holds weights "
                              "darkslim cannot convert yet")
    check_variables(graph, variables, source, error=CheckpointError)
    eps = DEFAULT_BN_EPS[layout] if bn_eps is None else float(bn_eps)
    state: OrderedDict[str, Any] = OrderedDict()
    clamped: dict[int, int] = {}
    for key, slot in _slots(graph, layout, anchor_buffers).items():
        layer = graph.layers[slot.index]
        if not slot.path:
            if key.endswith("num_batches_tracked"):
                state[key] = torch.tensor(0, dtype=torch.long)
            elif slot.required:
                anchors = torch.tensor(_head_anchors(layer), dtype=torch.float32)
                state[key] = anchors.reshape(slot.shape).clone()
            continue
        group, name, module, leaf = slot.path
        value = np.asarray(variables[group][name][module][leaf])
        if leaf == "kernel":
            value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif leaf == "var":
            value, n = _shift_var(np.asarray(value, dtype=np.float32),
                                  RUNTIME_BN_EPS - eps)
            if n:
                clamped[slot.index] = n
        state[key] = _tensor(value)
    warns = []
    if clamped:
        warns.append(_eps_warning(source, graph, clamped, RUNTIME_BN_EPS, eps))
    warns += _pool_warnings(graph, source)
    return state, tuple(warns)


def write_torch(graph: ir.Graph, variables: Variables, path: str | os.PathLike[str], *,
                layout: str = "ultralytics", bn_eps: float | None = None,
                anchor_buffers: bool | None = None, meta: CheckpointMeta | None = None,
                darknet_header: DarknetHeader | None = None) -> tuple[str, ...]:
    """Write ``variables`` as a torch checkpoint in ``layout``, atomically.

    ultralytics: ``{"epoch": -1, "best_fitness": None, "training_results": None,
    "model": state_dict, "optimizer": None}`` (what that project's own ``convert``
    writes); erik: the bare state_dict. Either loads with
    ``model.load_state_dict(..., strict=True)`` into the project's ``Darknet(cfg)``.

    Args:
        bn_eps: the eps of the target network (default the layout's).
        anchor_buffers: erik only: include ``yolo_{i}.anchors``/``anchor_grid`` (newer
            erik code registers them; Lam1360's does not). Default: what ``meta`` says
            when it is an erik checkpoint's, else False.
        meta: the `CheckpointMeta` of the checkpoint the variables came from, if any.
        darknet_header: the header of the ``.weights`` file the variables came from
            (default ``meta.darknet_header``): ultralytics stores it as the extra entry
            ``darknet_header``, erik in the state_dict's ``_metadata``.

    Returns:
        Warnings (eps conversions that are not exact, zero-padded maxpools).
    """
    import torch

    if anchor_buffers is None:
        anchor_buffers = bool(meta and meta.layout == "erik" and meta.anchor_buffers)
    state, warns = state_dict_from_variables(
        graph, variables, layout=layout, bn_eps=bn_eps,
        anchor_buffers=anchor_buffers and layout == "erik", source=str(path))
    obj: Any = state
    darknet_header = darknet_header or (meta.darknet_header if meta else None)
    if layout == "ultralytics":
        obj = {"epoch": -1, "best_fitness": None, "training_results": None,
               "model": state, "optimizer": None}
        if darknet_header is not None:
            h = darknet_header
            obj["darknet_header"] = (h.major, h.minor, h.revision, h.seen)
    elif darknet_header is not None:
        # torch.save keeps a state_dict's _metadata attribute, as nn.Module.state_dict sets it.
        state._metadata = {  # type: ignore[attr-defined]
            "darknet_header": darknet_header.as_dict()}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return warns
