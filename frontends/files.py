"""Weights files by suffix: read any format into a graph's variables, write them back.

`load_variables` and `save_variables` pick the Darknet, torch or Flax reader and writer
from the file name (`format_of`); `frontends` re-exports them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import ir
from frontends.darknet import (
    DarknetHeader,
    read_darknet,
    write_darknet,
)
from frontends.errors import WeightsError
from frontends.msgpack import read_msgpack, write_msgpack
from frontends.torch_ckpt import (
    CheckpointMeta,
    read_torch,
    write_torch,
)
from frontends.variables import (
    LoadedWeights,
    Variables,
)

FORMATS = ("darknet", "torch", "msgpack")
_SUFFIXES = {".weights": "darknet", ".pt": "torch", ".pth": "torch", ".msgpack": "msgpack"}


def format_of(path: str | os.PathLike[str]) -> str:
    """``"darknet"``, ``"torch"`` or ``"msgpack"`` from the file name.

    ``.weights`` and Darknet's backbone names with a numeric suffix
    (``darknet53.conv.74``) are Darknet; ``.pt``/``.pth`` torch; ``.msgpack`` Flax.
    """
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix[1:].isdigit():
        return "darknet"
    raise WeightsError(f"{path}: unknown weights suffix {suffix or '(none)'!r}: expected "
                       ".weights (Darknet), .pt or .pth (torch checkpoint) or .msgpack "
                       "(Flax variables)")


def is_backbone_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named as Darknet names backbones: ``*.conv.N``
    (``darknet53.conv.74``, ``yolov4.conv.137``), a file meant to hold only the first
    convs of a network."""
    return re.search(r"\.conv\.\d+$", Path(path).name) is not None


def load_variables(graph: ir.Graph, path: str | os.PathLike[str], *,
                   bn_eps: float | None = None, layout: str | None = None,
                   seed: int = 0, allow_partial: bool = True,
                   upto: int | None = None) -> LoadedWeights:
    """Read a weights file of any supported format (by suffix) for ``graph``.

    Args:
        graph: the network's cfg.
        path: ``.weights`` (or ``*.conv.N``), ``.pt``/``.pth``, ``.msgpack``.
        bn_eps: torch only: the BatchNorm eps the checkpoint was trained with (default
            per layout, `DEFAULT_BN_EPS`); folded into the running variances so the
            variables compute the same function with the runtime's eps 1e-5.
        layout: torch only: ``"ultralytics"`` or ``"erik"`` (default: from the keys).
        seed: Darknet only: initialises the convs a partial file does not hold.
        allow_partial: Darknet only: accept a file that holds fewer convs than the cfg
            (the rest freshly initialised, with a warning). With False such a file is
            refused unless it is named as a backbone (`is_backbone_name`): running,
            pruning or converting a network of random weights is a mistake, starting
            a training from a backbone is not.

    Returns:
        `LoadedWeights`: variables, format, loaded/total convs, header, warnings.

    Raises:
        WeightsError, CheckpointError: the file does not fit the cfg or cannot be read,
            or (``allow_partial=False``) holds only some of its convs.
    """
    fmt = format_of(path)
    if fmt == "darknet":
        loaded = read_darknet(graph, path, seed=seed, upto=upto)
        if (loaded.partial and not allow_partial and not is_backbone_name(path)
                and upto is None):
            held = (f"{loaded.loaded_convs} of {loaded.total_convs}" if loaded.loaded_convs
                    else f"0 of {loaded.total_convs} (only the header)")
            raise WeightsError(
                f"{path}: holds {held} convs of {graph.path}: expected weights for all "
                f"{loaded.total_convs}, or else the rest would run on random weights. A "
                "file that stops early is a backbone to train from (Darknet names them "
                "*.conv.N, e.g. darknet53.conv.74); to use this one anyway, with the "
                "other convs freshly initialised, pass allow_partial=True")
        return loaded
    if fmt == "torch":
        return read_torch(graph, path, bn_eps=bn_eps, layout=layout)
    return read_msgpack(graph, path)


def save_variables(graph: ir.Graph, variables: Variables, path: str | os.PathLike[str], *,
                   format: str | None = None, layout: str | None = None,
                   bn_eps: float | None = None, header: object = None,
                   anchor_buffers: bool | None = None) -> tuple[str, ...]:
    """Write ``variables`` for ``graph`` to ``path``, atomically, in any format.

    Args:
        format: ``"darknet"``, ``"torch"`` or ``"msgpack"``; default from the suffix.
        layout: torch only: ``"ultralytics"`` (default) or ``"erik"``; default the
            layout of ``header`` when it is a `CheckpointMeta`.
        bn_eps: torch only: the eps of the network the checkpoint is for; default the
            eps ``header`` was read with (same layout), else `DEFAULT_BN_EPS[layout]`.
        header: the ``header`` of the `LoadedWeights` the variables came from:
            a `DarknetHeader` is written back as is, and every other format keeps it
            (``.msgpack`` and ultralytics checkpoints as the entry ``darknet_header``,
            erik state_dicts in their ``_metadata``), so ``.weights -> X -> .weights``
            is byte exact; a `CheckpointMeta` supplies the torch defaults above.
        anchor_buffers: erik only: write ``yolo_{i}.anchors``/``anchor_grid``.

    Returns:
        Warnings to show the user (inexact eps conversions, zero-padded maxpools).
    """
    fmt = format or format_of(path)
    if fmt == "darknet":
        write_darknet(graph, variables, path, header=darknet_header_of(header))
        return ()
    if fmt == "msgpack":
        write_msgpack(graph, variables, path, header=darknet_header_of(header))
        return ()
    if fmt != "torch":
        raise WeightsError(f"{path}: format={fmt!r}: expected one of {FORMATS}")
    meta = header if isinstance(header, CheckpointMeta) else None
    layout = layout or (meta.layout if meta else "ultralytics")
    if bn_eps is None and meta is not None and meta.layout == layout:
        bn_eps = meta.bn_eps
    return write_torch(graph, variables, path, layout=layout, bn_eps=bn_eps,
                       anchor_buffers=anchor_buffers, meta=meta,
                       darknet_header=darknet_header_of(header))


def darknet_header_of(header: object) -> DarknetHeader | None:
    """The Darknet header a `LoadedWeights.header` carries: itself, or the one an
    ultralytics checkpoint converted from ``.weights`` kept."""
    if isinstance(header, DarknetHeader):
        return header
    if isinstance(header, CheckpointMeta):
        return header.darknet_header
    return None
