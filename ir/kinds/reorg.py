"""``[reorg3d]`` and ``[reorg]``: Darknet's two space-to-depth layers.

Darknet binds ``[reorg3d]`` to ``reorg_layer.c`` (``REORG``) and ``[reorg]`` -- the one
YOLOv2 cfgs use -- to ``reorg_old_layer.c`` (``REORG_OLD``); both call ``reorg_cpu``
(blas.c), with different dimensions:

* ``[reorg3d]`` passes the *output* dims with ``forward = reverse``: with
  ``reverse=0`` a plain space-to-depth, output channel ``(dy·s + dx)·C + c``;
* ``[reorg]`` passes the *input* dims with ``forward = reverse``: with ``reverse=0`` it
  reads the ``C×H×W`` input as ``(C/s²)×(H·s)×(W·s)`` and space-to-depths that, so
  channels and rows mix (YOLOv2's famous quirk); ``reverse=1`` is a true depth-to-space.

Both are implemented as the gather ``reorg_cpu`` performs, index for index. Channels
move between spatial positions, so pruning does not go through them (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.kinds.base import (
    KindSpec,
    Options,
    Shape,
    ShapeError,
    no_cost,
    no_variables,
    previous_input,
    same_layer,
)
from ir.options import SectionReader


@dataclass(frozen=True, slots=True, kw_only=True)
class Reorg3d:
    """``[reorg3d]``: space-to-depth by ``stride`` (``reverse``: Darknet's inverse map)."""

    stride: int = 1
    reverse: bool = False
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "reorg3d"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reorg:
    """``[reorg]``: YOLOv2's reorg (``reorg_old_layer.c``)."""

    stride: int = 1
    reverse: bool = False
    extra: Options = ()
    path: str = field(default="<text>", compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False, hash=False, repr=False)

    kind = "reorg"


_AnyReorg = Reorg3d | Reorg


def _parser(cls: type[_AnyReorg]) -> Callable[[SectionReader, int], _AnyReorg]:
    def parse(r: SectionReader, index: int) -> _AnyReorg:
        stride = r.int("stride", 1)
        if stride < 1:
            raise r.error(f"stride={stride}: expected a positive integer", "stride")
        return cls(stride=stride, reverse=r.bool("reverse"), extra=r.extra(), **r.loc)
    return parse


def _write(layer: _AnyReorg, index: int) -> list[str]:
    return [f"stride={layer.stride}"] + (["reverse=1"] if layer.reverse else [])


def _shape(layer: _AnyReorg, ins: tuple[Shape, ...]) -> Shape:
    x, s = ins[0], layer.stride
    if layer.reverse:
        out = Shape(x.c // (s * s), x.h * s, x.w * s)
    else:
        out = Shape(x.c * s * s, x.h // s, x.w // s)
    if out.c < 1 or out.h < 1 or out.w < 1 or (not layer.reverse and (x.h % s or x.w % s)) \
            or (layer.reverse and x.c % (s * s)):
        raise ShapeError(f"stride={s}{' reverse=1' if layer.reverse else ''} does not fit "
                         f"the {x.c}x{x.h}x{x.w} input")
    # reorg_cpu divides by c / s² of the dims it is given: 0 is Darknet's SIGFPE.
    given_c = out.c if isinstance(layer, Reorg3d) else x.c
    if given_c // (s * s) == 0:
        raise ShapeError(f"stride={s}: reorg_cpu would divide by {given_c} // {s * s} = 0 "
                         "(Darknet crashes here)")
    return out


def reorg_index(w: int, h: int, c: int, stride: int, forward: bool) -> np.ndarray:
    """``reorg_cpu(x, w, h, c, batch, stride, forward, out)`` of blas.c as a gather:
    ``out_flat = in_flat[index]`` per image, both flat in NCHW order."""
    in_c = c // (stride * stride)
    k, j, i = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    in_index = i + w * (j + h * k)
    c2, offset = k % in_c, k // in_c
    w2 = i * stride + offset % stride
    h2 = j * stride + offset // stride
    out_index = w2 + w * stride * (h2 + h * stride * c2)
    index = np.empty(c * h * w, np.int64)
    if forward:   # out[out_index] = x[in_index]
        index[out_index.ravel()] = in_index.ravel()
    else:         # out[in_index] = x[out_index]
        index[in_index.ravel()] = out_index.ravel()
    return index


def _forward(layer: _AnyReorg, tools: Any, inputs: Sequence[Any]) -> Any:
    x = inputs[0]
    n, h, w, c = x.shape
    out = _shape(layer, (Shape(c, h, w),))
    if isinstance(layer, Reorg3d):
        index = reorg_index(out.w, out.h, out.c, layer.stride, layer.reverse)
    else:
        index = reorg_index(w, h, c, layer.stride, layer.reverse)
    flat = x.transpose(0, 3, 1, 2).reshape(n, -1)
    gathered = tools.xp.take(flat, tools.xp.asarray(index), axis=1)
    return gathered.reshape(n, out.c, out.h, out.w).transpose(0, 2, 3, 1)


def _spec(cls: type[_AnyReorg], section: str) -> KindSpec:
    return KindSpec(
        layer=cls, sections=(section,), parse=_parser(cls), write=_write, keys={},
        inputs=previous_input, renumber=same_layer, shape=_shape, cost=no_cost,
        variables=no_variables, forward=_forward,
        describe=lambda layer: f"/{layer.stride}" + (" reverse" if layer.reverse else ""))


REORG3D = _spec(Reorg3d, "reorg3d")
REORG = _spec(Reorg, "reorg")
