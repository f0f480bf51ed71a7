"""The block recipes `darkslim.testing.graphs` draws, and the builder they append to.

(Over 400 lines: one recipe function per block kind, sharing the builder, kept
side by side so the kinds a graph can hold read as one list.)

A recipe is a block kind and six choice bytes; each block function interprets the
bytes against the network built so far and appends its layers, or nothing when it
does not fit (never an invalid graph). New layer kinds are shaped through their spec
(`ir.spec_of(layer).shape`), so a block can only build what `ir.verify` accepts.
Kept apart from `strategies` so each module stays short.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import ir
from ir import (
    Activation,
    AvgPool,
    Connected,
    Conv,
    Cost,
    Crop,
    Dropout,
    GaussianYolo,
    LocalAvgPool,
    MaxPool,
    Region,
    Reorg,
    Reorg3d,
    Route,
    Sam,
    ScaleChannels,
    Shape,
    Shortcut,
    Softmax,
    Upsample,
    Yolo,
)
from ir.kinds.base import ShapeError
from ir.kinds.sam import NOT_IN_ACTIVATE_ARRAY

#: Block kinds `graphs` can draw, simplest first (hypothesis shrinks toward the first).
#:
#: ``conv``          conv 1x1 or 3x3, BN or not (1 in 4 without), any activation
#: ``downsample``    conv 3x3 stride 2 (only where the map is even and at least 4)
#: ``residual``      1-3 chained units (one conv 3x3, or conv 1x1 -> conv 3x3) each
#:                   closed by ``[shortcut] from=-2`` (or ``-3``): one coupled group
#: ``route``         ``[route]`` of 1-4 distinct earlier layers of the current size
#: ``route_groups``  ``[route] groups=2|4 group_id=k`` of 1-2 layers (yolov4-tiny)
#: ``maxpool``       tiny-style: size 2 stride 1 or size 2 stride 2
#: ``spp``           SPP: stride-1 maxpools 5/9/13 of one layer, concatenated with it
#: ``upsample``      ``[upsample] stride=2`` then ``[route] layers=-1,X`` with X an
#:                   earlier layer of twice the size (after a stride-2 conv if the
#:                   map has not been downsampled yet)
#: ``grouped``       grouped or depthwise conv
#: ``head``          a yolo head in the middle (conv 1x1 linear, ``[yolo]``, then
#:                   ``[route]`` back to the trunk, as yolov3 does)
#: ``dropout``       ``[dropout]`` (the identity at inference)
#: ``local_avgpool`` ``[local_avgpool]`` size 2 stride 1|2, or size 3 stride 1
#: ``dilated``       conv 3x3 ``dilation=2|3`` (pad=1)
#: ``sam``           YOLOv4's SAM: conv 1x1 logistic of the trunk, ``[sam] from=`` it
#: ``se``            squeeze-excitation: ``[avgpool]`` -> conv 1x1 -> conv 1x1 logistic
#:                   -> ``[scale_channels] from=`` the trunk; or (1 in 3) a 1-channel
#:                   logistic conv and ``[scale_channels] scale_wh=1``
#: ``reorg``         ``[reorg3d]`` or YOLOv2's ``[reorg]`` stride 2 (1 in 4 reverse)
#: ``maxpool_depth`` ``[maxpool] maxpool_depth=1 out_channels=k``
#: ``crop``          ``[crop]`` (of the image when first, as classifiers do)
#: ``share``         a conv with ``share_index=`` an earlier conv of the same input
#:                   width (a new one first if there is none), at its own dilation
#:                   and activation (trident nets); or (1 in 2) that conv closed by
#:                   ``[shortcut] from=-2``: a residual block holding a shared conv
BLOCK_KINDS: tuple[str, ...] = ("conv", "downsample", "residual", "route", "route_groups",
                                "maxpool", "spp", "upsample", "grouped", "head", "dropout",
                                "local_avgpool", "dilated", "sam", "se", "reorg",
                                "maxpool_depth", "crop", "share")

#: The YOLOv3/v4-era block kinds (before issue 11's layer kinds).
CLASSIC_KINDS: tuple[str, ...] = BLOCK_KINDS[:10]

#: Detection heads `graphs` can end with (``head_kinds``), simplest first.
HEAD_KINDS: tuple[str, ...] = ("yolo", "new_coords", "gaussian", "region")

#: Graph styles: a detector ends with heads, a classifier with ``[connected]``,
#: ``[softmax]`` and ``[cost]`` (after a global ``[avgpool]`` or the spatial map).
STYLES: tuple[str, ...] = ("detector", "classifier")

_RECIPE_BYTES = 6


# --------------------------------------------------------------------------- graphs


@dataclasses.dataclass
class Builder:
    """Appends layers and tracks each output's shape and whether it may be read."""

    image: Shape
    widths: tuple[int, int]
    activations: tuple[Activation, ...]
    bn_optional: bool
    route_cap: int
    layers: list = dataclasses.field(default_factory=list)
    shapes: list = dataclasses.field(default_factory=list)
    readable: list = dataclasses.field(default_factory=list)  # heads are not

    @property
    def trunk(self) -> Shape:
        return self.shapes[-1] if self.shapes else self.image

    def add(self, layer, shape: Shape, readable: bool = True) -> int:
        self.layers.append(layer)
        self.shapes.append(shape)
        self.readable.append(readable)
        return len(self.layers) - 1

    def width(self, v: int) -> int:
        lo, hi = self.widths
        return lo + v % (hi - lo + 1)

    def act(self, v: int) -> Activation:
        return self.activations[v % len(self.activations)]

    def array_act(self, v: int) -> Activation:
        """An activation `activate_array` has (for [sam], [scale_channels],
        [connected]), from the drawn ones when any; else linear."""
        ok = [a for a in self.activations if a not in NOT_IN_ACTIVATE_ARRAY]
        return ok[v % len(ok)] if ok else Activation.LINEAR

    def put(self, layer, inputs: Sequence[int] | None = None, readable: bool = True) -> int:
        """Append ``layer`` shaped by its spec (``inputs``: default the trunk)."""
        ins = (self.trunk,) if inputs is None else tuple(self.shapes[j] for j in inputs)
        return self.add(layer, ir.spec_of(layer).shape(layer, ins), readable)

    def conv(self, filters: int, size: int, *, stride: int = 1, bn: bool = True,
             activation: Activation = Activation.LEAKY, groups: int = 1,
             readable: bool = True, dilation: int = 1) -> int:
        x = self.trunk
        layer = Conv(filters=filters, size=size, stride=stride, pad=True, groups=groups,
                     batch_normalize=bn, activation=activation, dilation=dilation)
        p = layer.pad_pixels
        shape = Shape(filters, (x.h + 2 * p - size) // stride + 1,
                      (x.w + 2 * p - size) // stride + 1)
        return self.add(layer, shape, readable)

    def candidates(self, ok) -> list[int]:
        """Readable earlier layers passing ``ok(shape)``, the most recent first."""
        return [j for j in reversed(range(len(self.layers)))
                if self.readable[j] and ok(self.shapes[j])]

    def route(self, inputs: Sequence[int], groups: int = 1, group_id: int = 0) -> int:
        ins = [self.shapes[j] for j in inputs]
        shape = Shape(sum(s.c // groups for s in ins), ins[0].h, ins[0].w)
        return self.add(Route(inputs=tuple(inputs), groups=groups, group_id=group_id), shape)


def ensure_layer(b: Builder, v) -> None:
    """Blocks that read earlier layers by index start with a conv when there are none
    (the image has no index to route to or add from)."""
    if not b.layers:
        b.conv(b.width(v[1]), 1, activation=b.act(v[3]))


def _block_conv(b: Builder, v) -> None:
    bn = not (b.bn_optional and v[2] % 4 == 3)
    b.conv(b.width(v[1]), (1, 3)[v[0] % 2], bn=bn, activation=b.act(v[3]))


def _block_downsample(b: Builder, v) -> None:
    x = b.trunk
    if x.h % 2 or x.w % 2 or min(x.h, x.w) < 4:
        return
    b.conv(b.width(v[1]), 3, stride=2, activation=b.act(v[3]))


def _block_residual(b: Builder, v) -> None:
    ensure_layer(b, v)  # [shortcut] cannot read the image
    single = v[5] % 2 == 0  # shrinks to the shorter unit
    for unit in range(1 + v[0] % 3):
        start = len(b.layers) - 1
        c = b.trunk.c
        if not single:
            b.conv(b.width(v[1 + unit]), 1, activation=b.act(v[4]))
        b.conv(c, 3, activation=b.act(v[4]))
        b.add(Shortcut(inputs=(len(b.layers) - 1, start), activation=Activation.LINEAR),
              b.trunk)


def _pick(cands: list[int], choices: Iterable[int]) -> list[int]:
    picked: list[int] = []
    for v in choices:
        j = cands[v % len(cands)]
        if j not in picked:
            picked.append(j)
    return picked


def _block_route(b: Builder, v) -> None:
    ensure_layer(b, v)
    hw = b.trunk[1:]
    cands = b.candidates(lambda s: s[1:] == hw)
    picked = _pick(cands, v[1:2 + v[0] % 4])
    while len(picked) > 1 and sum(b.shapes[j].c for j in picked) > b.route_cap:
        picked.pop()
    b.route(picked)


def _block_route_groups(b: Builder, v) -> None:
    ensure_layer(b, v)
    groups = (2, 4)[v[0] % 2]
    hw = b.trunk[1:]
    cands = b.candidates(lambda s: s[1:] == hw and s.c % groups == 0)
    if not cands:
        return
    b.route(_pick(cands, v[3:4 + v[2] % 2]), groups=groups, group_id=v[1] % groups)


def _block_maxpool(b: Builder, v) -> None:
    x = b.trunk
    stride = 2 if v[0] % 2 and not (x.h % 2 or x.w % 2) and min(x.h, x.w) >= 4 else 1
    # Darknet pads size-1 (right/bottom): size 2 stride 1 keeps the size.
    b.add(MaxPool(size=2, stride=stride), Shape(x.c, x.h // stride, x.w // stride))


def _block_spp(b: Builder, v) -> None:
    ensure_layer(b, v)
    source = len(b.layers) - 1
    x = b.trunk
    pools = []
    for k, size in enumerate((5, 9, 13)[: 1 + v[0] % 3]):
        if k:
            b.route([source])
        pools.append(b.add(MaxPool(size=size, stride=1), x))
    b.route([*reversed(pools), source])  # yolov3-spp: layers=-1,-3,-5,-6


def _block_upsample(b: Builder, v) -> None:
    ensure_layer(b, v)
    x = b.trunk
    cands = b.candidates(lambda s: (s.h, s.w) == (2 * x.h, 2 * x.w))
    if not cands:  # no larger map to join yet: make one (yolov3's pattern, shortened)
        _block_downsample(b, v)
        if b.trunk == x:
            return
        x = b.trunk
        cands = b.candidates(lambda s: (s.h, s.w) == (2 * x.h, 2 * x.w))
    up = b.add(Upsample(stride=2), Shape(x.c, 2 * x.h, 2 * x.w))
    b.route([up, cands[v[0] % len(cands)]])


def _block_grouped(b: Builder, v) -> None:
    c = b.trunk.c
    divisors = [g for g in range(2, c + 1) if c % g == 0]
    if not divisors:
        return
    if v[0] % 2 == 0:  # depthwise
        groups, filters = c, c
    else:
        groups = divisors[v[1] % len(divisors)]
        filters = groups * (1 + v[2] % max(1, b.widths[1] // groups))
    b.conv(filters, (3, 1)[v[3] % 2], groups=groups, activation=b.act(v[4]))


def _block_dropout(b: Builder, v) -> None:
    b.put(Dropout(probability=(0.1, 0.2, 0.3, 0.5)[v[0] % 4]))


def _block_local_avgpool(b: Builder, v) -> None:
    x = b.trunk
    size, stride = ((2, 1), (2, 2), (3, 1))[v[0] % 3]
    if stride == 2 and (x.h % 2 or x.w % 2 or min(x.h, x.w) < 4):
        stride = 1
    b.put(LocalAvgPool(size=size, stride=stride))


def _block_dilated(b: Builder, v) -> None:
    b.conv(b.width(v[1]), 3, dilation=2 + v[0] % 2, activation=b.act(v[3]),
           bn=not (b.bn_optional and v[2] % 4 == 3))


def _block_sam(b: Builder, v) -> None:
    ensure_layer(b, v)
    source = len(b.layers) - 1
    b.conv(b.trunk.c, 1, activation=Activation.LOGISTIC, bn=v[1] % 2 == 0)
    b.put(Sam(inputs=(source + 1, source), activation=b.array_act(v[2])),
          (source + 1, source))


def _block_se(b: Builder, v) -> None:
    ensure_layer(b, v)
    source = len(b.layers) - 1
    c = b.trunk.c
    if v[0] % 3 == 0:  # a per-pixel scale
        scale = b.conv(1, 1, activation=Activation.LOGISTIC, bn=v[1] % 2 == 0)
        layer = ScaleChannels(inputs=(scale, source), scale_wh=True,
                              activation=b.array_act(v[2]))
    else:  # squeeze-and-excitation (efficientnet, enet)
        b.put(AvgPool())
        b.conv(b.width(v[3]), 1, activation=b.act(v[4]), bn=v[5] % 4 != 3)
        scale = b.conv(c, 1, activation=Activation.LOGISTIC, bn=v[1] % 2 == 0)
        layer = ScaleChannels(inputs=(scale, source), activation=b.array_act(v[2]))
    b.put(layer, layer.inputs)


def _block_reorg(b: Builder, v) -> None:
    x = b.trunk
    cls = (Reorg3d, Reorg)[v[0] % 2]
    layer = cls(stride=2, reverse=v[1] % 3 == 2)
    if layer.reverse:  # depth-to-space: a width reorg_cpu can divide (see ir.kinds.reorg)
        need = 16 if cls is Reorg3d else 4
        if x.c % 4 or x.c < need:
            b.conv(max(need, 4 * (1 + v[2] % 4)), 1, activation=b.act(v[3]))
    elif min(x.h, x.w) < 4:
        return
    try:
        b.put(layer)
    except ShapeError:  # channels or size that do not fit this reorg
        return


def _block_maxpool_depth(b: Builder, v) -> None:
    c = b.trunk.c
    b.put(MaxPool(size=1, stride=1, depth=True, out_channels=1 + v[1] % c))


def _block_share(b: Builder, v) -> None:
    ensure_layer(b, v)
    c = b.trunk.c
    owners = [j for j in reversed(range(len(b.layers)))
              if isinstance(b.layers[j], Conv) and b.layers[j].share is None
              and (b.shapes[j - 1] if j else b.image).c == c
              and (v[0] % 2 == 0 or b.shapes[j].c == c)]  # a residual keeps c
    if owners and v[1] % 4 != 3:
        owner = owners[v[2] % len(owners)]
    else:  # a conv of its own to share, trident-style
        owner = b.conv(c, (1, 3)[v[3] % 2], activation=b.act(v[4]))
    base = b.layers[owner]
    dilation = 1 + v[5] % 3 if base.size == 3 and base.pad else 1
    start = len(b.layers) - 1
    b.put(dataclasses.replace(base, share=owner, stride=1, dilation=dilation,
                              activation=b.act(v[4])))
    if v[0] % 2:
        b.add(Shortcut(inputs=(len(b.layers) - 1, start), activation=Activation.LINEAR),
              b.trunk)


def _block_crop(b: Builder, v) -> None:
    x = b.trunk  # classifiers crop the image; Darknet crops any map the same way
    h = x.h - 8 if v[0] % 2 and x.h >= 16 else x.h
    w = x.w - 8 if v[1] % 2 and x.w >= 16 else x.w
    b.put(Crop(crop_height=h, crop_width=w, noadjust=v[2] % 2 == 1))


BLOCKS = {"conv": _block_conv, "downsample": _block_downsample,
          "residual": _block_residual, "route": _block_route,
          "route_groups": _block_route_groups, "maxpool": _block_maxpool,
          "spp": _block_spp, "upsample": _block_upsample, "grouped": _block_grouped,
          "dropout": _block_dropout, "local_avgpool": _block_local_avgpool,
          "dilated": _block_dilated, "sam": _block_sam, "se": _block_se,
          "reorg": _block_reorg, "maxpool_depth": _block_maxpool_depth,
          "crop": _block_crop, "share": _block_share}


def add_head(b: Builder, anchors: int, classes: int, kind: str = "yolo") -> int:
    """conv 1x1 without BN -> a head of ``kind`` (`HEAD_KINDS`). [yolo] and
    [Gaussian_yolo] masks and anchors are filled in later (`fill_anchors`); a
    ``new_coords`` head's conv ends in the logistic, as yolov4-csp's do."""
    mask = tuple(range(anchors))
    head: GaussianYolo | Region | Yolo
    if kind == "gaussian":
        head = GaussianYolo(mask=mask, anchors=(), classes=classes, num=anchors)
        per_anchor = classes + 9
    elif kind == "region":
        head = Region(anchors=tuple((1.0 + k, 1.5 + 0.5 * k) for k in range(anchors)),
                      classes=classes, num=anchors, softmax=classes > 1)
        per_anchor = classes + 5
    else:
        new = kind == "new_coords"
        head = Yolo(mask=mask, anchors=(), classes=classes, num=anchors, new_coords=new,
                    scale_x_y=2.0 if new else 1.0)
        per_anchor = classes + 5
    b.conv(anchors * per_anchor, 1, bn=False, readable=False,
           activation=Activation.LOGISTIC if kind == "new_coords" else Activation.LINEAR)
    return b.add(head, b.trunk, readable=False)


def add_classifier(b: Builder, v, classes: int) -> None:
    """A classifier's end: [avgpool] (or the spatial map, when small), an optional
    hidden [connected] (BN or not) and [dropout], the class [connected], [softmax],
    [cost]."""
    ensure_layer(b, v)
    x = b.trunk
    if v[0] % 2 or x.c * x.h * x.w > 1024:
        b.put(AvgPool())
    if v[1] % 2:
        b.put(Connected(output=b.width(v[2]), batch_normalize=v[3] % 2 == 0,
                        activation=b.array_act(v[4])))
        if v[5] % 2:
            b.put(Dropout(probability=0.5))
    b.put(Connected(output=classes + 1, batch_normalize=v[5] % 3 == 0,
                    activation=Activation.LINEAR))
    b.put(Softmax())
    b.put(Cost())




def last_readable(b: Builder) -> int:
    return next(j for j in reversed(range(len(b.layers))) if b.readable[j])


def fill_anchors(layers: list) -> list:
    """Give every [yolo] and [Gaussian_yolo] head a distinct run of one shared anchor
    list, as real cfgs do ([region] heads carry their own, in grid cells)."""
    anchored = (Yolo, GaussianYolo)
    total = sum(len(layer.mask) for layer in layers if isinstance(layer, anchored))
    anchors = tuple((float(8 + 6 * k), float(10 + 9 * k)) for k in range(total))
    out, start = [], 0
    for layer in layers:
        if isinstance(layer, anchored):
            n = len(layer.mask)
            layer = dataclasses.replace(layer, mask=tuple(range(start, start + n)),
                                        anchors=anchors, num=total)
            start += n
        out.append(layer)
    return out
