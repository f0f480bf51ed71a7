"""Hypothesis strategies for random Darknet networks, weights, inputs and masks.

A graph is drawn as a list of *block recipes*: a block kind and six choice bytes
that the builder interprets against the network built so far (which layers exist,
their channels and spatial sizes). A recipe never fails: a block that does not fit
(a downsample of an odd map, a grouped conv of one channel) is skipped, and one
that reads earlier layers starts with a conv when there are none. So hypothesis can
delete any block or shrink any byte and still get a valid graph, and shrinking
walks toward a handful of plain 1x1 convs and one yolo head. Every value `graphs`
draws passes `ir.verify`; the kit's own tests check that as a property.

Weights and inputs are made from a drawn seed (and sparsity), and the failure
report notes the call that replays them (``random_variables(graph, seed=..., ...)``).
Masks are drawn channel by channel, so they shrink to the channels a failure needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from hypothesis import note
from hypothesis import strategies as st

import ir
from ir import (Activation, Conv, Graph, MaxPool, Route, Shape, Shortcut, Upsample, Yolo,
                layer_key)
from passes import ChannelMasks
from passes.masks import balance_mask

__all__ = [
    "BLOCK_KINDS", "graph_features", "graphs", "inputs", "mask_units", "masks",
    "programs", "random_inputs", "random_variables", "variables",
]

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
BLOCK_KINDS: tuple[str, ...] = ("conv", "downsample", "residual", "route", "route_groups",
                                "maxpool", "spp", "upsample", "grouped", "head")

_RECIPE_BYTES = 6


# --------------------------------------------------------------------------- graphs


@dataclasses.dataclass
class _Builder:
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

    def conv(self, filters: int, size: int, *, stride: int = 1, bn: bool = True,
             activation: Activation = Activation.LEAKY, groups: int = 1,
             readable: bool = True) -> int:
        x = self.trunk
        layer = Conv(filters=filters, size=size, stride=stride, pad=True, groups=groups,
                     batch_normalize=bn, activation=activation)
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


def _ensure_layer(b: _Builder, v) -> None:
    """Blocks that read earlier layers by index start with a conv when there are none
    (the image has no index to route to or add from)."""
    if not b.layers:
        b.conv(b.width(v[1]), 1, activation=b.act(v[3]))


def _block_conv(b: _Builder, v) -> None:
    bn = not (b.bn_optional and v[2] % 4 == 3)
    b.conv(b.width(v[1]), (1, 3)[v[0] % 2], bn=bn, activation=b.act(v[3]))


def _block_downsample(b: _Builder, v) -> None:
    x = b.trunk
    if x.h % 2 or x.w % 2 or min(x.h, x.w) < 4:
        return
    b.conv(b.width(v[1]), 3, stride=2, activation=b.act(v[3]))


def _block_residual(b: _Builder, v) -> None:
    _ensure_layer(b, v)  # [shortcut] cannot read the image
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


def _block_route(b: _Builder, v) -> None:
    _ensure_layer(b, v)
    hw = b.trunk[1:]
    cands = b.candidates(lambda s: s[1:] == hw)
    picked = _pick(cands, v[1:2 + v[0] % 4])
    while len(picked) > 1 and sum(b.shapes[j].c for j in picked) > b.route_cap:
        picked.pop()
    b.route(picked)


def _block_route_groups(b: _Builder, v) -> None:
    _ensure_layer(b, v)
    groups = (2, 4)[v[0] % 2]
    hw = b.trunk[1:]
    cands = b.candidates(lambda s: s[1:] == hw and s.c % groups == 0)
    if not cands:
        return
    b.route(_pick(cands, v[3:4 + v[2] % 2]), groups=groups, group_id=v[1] % groups)


def _block_maxpool(b: _Builder, v) -> None:
    x = b.trunk
    stride = 2 if v[0] % 2 and not (x.h % 2 or x.w % 2) and min(x.h, x.w) >= 4 else 1
    # Darknet pads size-1 (right/bottom): size 2 stride 1 keeps the size.
    b.add(MaxPool(size=2, stride=stride), Shape(x.c, x.h // stride, x.w // stride))


def _block_spp(b: _Builder, v) -> None:
    _ensure_layer(b, v)
    source = len(b.layers) - 1
    x = b.trunk
    pools = []
    for k, size in enumerate((5, 9, 13)[: 1 + v[0] % 3]):
        if k:
            b.route([source])
        pools.append(b.add(MaxPool(size=size, stride=1), x))
    b.route([*reversed(pools), source])  # yolov3-spp: layers=-1,-3,-5,-6


def _block_upsample(b: _Builder, v) -> None:
    _ensure_layer(b, v)
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


def _block_grouped(b: _Builder, v) -> None:
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


_BLOCKS = {"conv": _block_conv, "downsample": _block_downsample,
           "residual": _block_residual, "route": _block_route,
           "route_groups": _block_route_groups, "maxpool": _block_maxpool,
           "spp": _block_spp, "upsample": _block_upsample, "grouped": _block_grouped}


def _add_head(b: _Builder, anchors: int, classes: int) -> int:
    """conv 1x1 linear without BN -> [yolo] (mask and anchors are filled in later)."""
    b.conv(anchors * (classes + 5), 1, bn=False, activation=Activation.LINEAR,
           readable=False)
    yolo = Yolo(mask=tuple(range(anchors)), anchors=(), classes=classes, num=anchors)
    return b.add(yolo, b.trunk, readable=False)


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = sorted(set(kinds) - set(BLOCK_KINDS))
    if unknown or not kinds:
        raise ValueError(f"graphs(kinds=...): unknown or no block kinds {unknown}; "
                         f"expected a non-empty subset of {BLOCK_KINDS}")
    return tuple(k for k in BLOCK_KINDS if k in kinds)  # keep the shrink order


@st.composite
def graphs(draw, *, max_blocks: int = 6, min_blocks: int = 1,
           widths: tuple[int, int] = (2, 16), sizes: tuple[int, int] = (16, 64),
           size_multiple: int = 8, square: bool = False,
           kinds: Iterable[str] = BLOCK_KINDS,
           activations: Iterable[Activation] = tuple(Activation),
           bn_optional: bool = True, heads: tuple[int, int] = (1, 2),
           classes: tuple[int, int] = (1, 3), channels: int = 3) -> Graph:
    """Valid random Darknet graphs (every one passes `ir.verify`).

    Args:
        max_blocks, min_blocks: how many block recipes to draw (see `BLOCK_KINDS`;
            a block is one to ~8 layers). ``min_blocks=0`` allows the bare head.
        widths: (min, max) filters of the convs the builder chooses freely. Residual
            convs keep their stage's width; routes concatenate up to ``4 * max``.
        sizes: (min, max) input height and width, multiples of ``size_multiple``
            (each stride-2 block halves the map, down to 2).
        square: draw ``height == width``.
        kinds: the block kinds to draw from (a subset of `BLOCK_KINDS`).
        activations: the conv activations to draw from (all six by default).
        bn_optional: whether plain conv blocks may lack BatchNorm (then they carry
            a conv bias and are not prunable).
        heads: (min, max) number of yolo heads; the graph ends with one when
            ``min >= 1``, and ``head`` blocks add others in the middle.
        classes: (min, max) number of classes (one value per graph).
        channels: input channels.

    Shrinks toward fewer blocks, 1x1 convs of the minimum width, BN, the first
    activation, one head with one anchor, and the smallest input: the simplest graph
    is one conv, the head conv and its ``[yolo]``.

    >>> from hypothesis import given
    >>> @given(graphs(max_blocks=3, kinds=("conv", "route")))
    ... def test_verifies(graph):
    ...     ir.verify(graph)
    """
    kinds = _check_kinds(kinds)
    activations = tuple(Activation(a) for a in activations)
    if not 1 <= widths[0] <= widths[1]:
        raise ValueError(f"graphs(widths={widths}): expected 1 <= min <= max")
    if not size_multiple <= sizes[0] <= sizes[1]:
        raise ValueError(f"graphs(sizes={sizes}): expected size_multiple "
                         f"({size_multiple}) <= min <= max")
    if not 0 <= heads[0] <= heads[1]:
        raise ValueError(f"graphs(heads={heads}): expected 0 <= min <= max")

    side = st.integers(-(-sizes[0] // size_multiple), sizes[1] // size_multiple)
    height = draw(side) * size_multiple
    width = height if square else draw(side) * size_multiple
    n_classes = draw(st.integers(*classes))
    # Six choice bytes as one `binary` draw: hypothesis deletes whole recipes from
    # the list far more readily than when they are six separate integer draws.
    recipe = st.tuples(st.sampled_from(kinds),
                       st.binary(min_size=_RECIPE_BYTES, max_size=_RECIPE_BYTES))
    recipes = draw(st.lists(recipe, min_size=min_blocks, max_size=max_blocks))

    b = _Builder(image=Shape(channels, height, width), widths=widths,
                 activations=activations, bn_optional=bn_optional,
                 route_cap=4 * widths[1])
    n_heads = 0
    reserve = 1 if heads[0] else 0  # keep room for the final head
    for kind, v in recipes:
        if kind != "head":
            _BLOCKS[kind](b, v)
        elif n_heads + 1 + reserve <= heads[1]:
            _ensure_layer(b, v)
            trunk = len(b.layers) - 1
            _add_head(b, 1 + v[0] % 3, n_classes)
            b.route([trunk])
            n_heads += 1
    ends_with_head = False
    while n_heads < heads[0] or (heads[0] and not ends_with_head):
        if ends_with_head:
            b.route([_last_readable(b)])
        _add_head(b, draw(st.integers(1, 3)), n_classes)
        n_heads += 1
        ends_with_head = True

    layers = _fill_anchors(b.layers)
    net = (("batch", "1"), ("subdivisions", "1"), ("width", str(width)),
           ("height", str(height)), ("channels", str(channels)))
    return Graph(net=net, layers=tuple(layers))


def _last_readable(b: _Builder) -> int:
    return next(j for j in reversed(range(len(b.layers))) if b.readable[j])


def _fill_anchors(layers: list) -> list:
    """Give every head a distinct run of one shared anchor list, as real cfgs do."""
    total = sum(len(l.mask) for l in layers if isinstance(l, Yolo))
    anchors = tuple((float(8 + 6 * k), float(10 + 9 * k)) for k in range(total))
    out, start = [], 0
    for layer in layers:
        if isinstance(layer, Yolo):
            n = len(layer.mask)
            layer = dataclasses.replace(layer, mask=tuple(range(start, start + n)),
                                        anchors=anchors, num=total)
            start += n
        out.append(layer)
    return out


# --------------------------------------------------------------------------- weights


def random_variables(graph: Graph, seed: int = 0, *, sparsity: float = 0.0) -> dict:
    """Seeded float32 numpy variables for ``graph`` in the Flax layout.

    Kernels are HWIO ``(k, k, in/groups, out)`` drawn with std ``1/sqrt(fan_in)``.
    BN convs get γ (``params/bn/scale``) of magnitude in [0.2, 1.5] (one in five
    negative), a fraction ``sparsity`` of them replaced by values in (-1e-3, 1e-3);
    β ~ N(0, 0.5); running mean ~ N(0, 0.5) and var in [0.5, 2]. Convs without BN get
    a ``conv/bias`` ~ N(0, 0.5).

    >>> g = ir.parse_cfg("[net]\\nwidth=8\\nheight=8\\n[convolutional]\\nfilters=4\\n")
    >>> random_variables(g, seed=1)["params"]["layer_0"]["conv"]["kernel"].shape
    (1, 1, 3, 4)
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"random_variables(sparsity={sparsity}): expected 0 <= s <= 1")
    shapes = ir.verify(graph)
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    f32 = np.float32
    for i in graph.conv_indices():
        layer = graph.layers[i]
        cin = (shapes[i - 1].c if i else graph.channels) // layer.groups
        out, k = layer.filters, layer.size
        kernel = rng.normal(0.0, 1.0 / np.sqrt(cin * k * k), (k, k, cin, out)).astype(f32)
        key = layer_key(i)
        if layer.batch_normalize:
            gamma = rng.uniform(0.2, 1.5, out) * np.where(rng.random(out) < 0.2, -1, 1)
            tiny = rng.uniform(-1e-3, 1e-3, out)
            gamma = np.where(rng.random(out) < sparsity, tiny, gamma)
            params[key] = {"conv": {"kernel": kernel},
                           "bn": {"scale": gamma.astype(f32),
                                  "bias": rng.normal(0.0, 0.5, out).astype(f32)}}
            stats[key] = {"bn": {"mean": rng.normal(0.0, 0.5, out).astype(f32),
                                 "var": rng.uniform(0.5, 2.0, out).astype(f32)}}
        else:
            params[key] = {"conv": {"kernel": kernel,
                                    "bias": rng.normal(0.0, 0.5, out).astype(f32)}}
    return {"params": params, "batch_stats": stats}


def _float_or_range(value: float | tuple[float, float]) -> st.SearchStrategy[float]:
    if isinstance(value, tuple):
        return st.floats(value[0], value[1])
    return st.just(float(value))


@st.composite
def variables(draw, graph: Graph, *,
              sparsity: float | tuple[float, float] = (0.0, 0.9)) -> dict:
    """Variables for ``graph`` from a drawn seed: `random_variables(graph, seed, sparsity=s)`
    with ``s`` drawn from ``sparsity`` (a (min, max) range or a fixed fraction)."""
    seed = draw(st.integers(0, 2**32 - 1))
    s = draw(_float_or_range(sparsity))
    note(f"variables = random_variables(graph, seed={seed}, sparsity={s!r})")
    return random_variables(graph, seed, sparsity=s)


def programs(*, sparsity: float | tuple[float, float] = (0.0, 0.9), **graph_options
             ) -> st.SearchStrategy[tuple[Graph, dict]]:
    """``(graph, variables)`` pairs: `graphs(**graph_options)` then `variables`."""
    return graphs(**graph_options).flatmap(
        lambda g: st.tuples(st.just(g), variables(g, sparsity=sparsity)))


# --------------------------------------------------------------------------- inputs


def random_inputs(graph: Graph, seed: int = 0, *, batch: int = 1) -> np.ndarray:
    """A seeded NHWC float32 batch in [0, 1) at the graph's input size."""
    rng = np.random.default_rng(seed)
    shape = (batch, graph.height, graph.width, graph.channels)
    return rng.random(shape, dtype=np.float32)


@st.composite
def inputs(draw, graph: Graph, *, batch: int | tuple[int, int] = 1) -> np.ndarray:
    """NHWC float32 images in [0, 1) for ``graph``; ``batch`` an int or (min, max)."""
    n = draw(st.integers(*batch)) if isinstance(batch, tuple) else batch
    seed = draw(st.integers(0, 2**32 - 1))
    note(f"x = random_inputs(graph, seed={seed}, batch={n})")
    return random_inputs(graph, seed, batch=n)


# --------------------------------------------------------------------------- masks


def mask_units(analysis) -> tuple[tuple[int, ...], ...]:
    """The sets of convs that share one mask: ``analysis.units`` (a whole coupled
    group in ``shortcut`` mode, otherwise one conv each)."""
    return tuple(tuple(int(i) for i in unit) for unit in analysis.units)


@st.composite
def masks(draw, graph: Graph, analysis, *, drop: float | None = None) -> ChannelMasks:
    """Random `passes.ChannelMasks` for the prunable convs of ``analysis``
    (a `passes.Prunability`).

    Every unit of ``analysis.units`` (a coupled group in ``shortcut`` mode) gets one
    shared mask, group-balanced where a ``[route] groups=`` slices it; no mask is ever
    all-False. Each channel's fate is a separate draw,
    and a drawn ``False`` means *keep*, so masks shrink toward keeping everything: a
    shrunk counterexample drops only the channels the failure needs.

    Args:
        drop: when given, the fraction of channels to drop is fixed (each channel
            dropped with this probability, from a drawn seed) instead of drawn per
            channel; use it for wide networks where per-channel draws get long.
    """
    out: dict[int, np.ndarray] = {}
    rng = None if drop is None else np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    balanced = dict(analysis.balanced)
    # Last unit first: when shrinking deletes an unrelated block near the input,
    # the masks of the layers after it keep their draws (and the failure).
    for members in reversed(mask_units(analysis)):
        n = graph.layers[members[0]].filters
        if rng is None:
            dropped = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        else:
            dropped = rng.random(n) < drop
        keep = ~dropped
        if not keep.any():
            keep[0] = True
        keep = balance_mask(keep, balanced.get(members, 1))
        for i in members:
            out[i] = keep
    return ChannelMasks.from_arrays(out, graph)


# --------------------------------------------------------------------------- features


def graph_features(graph: Graph) -> frozenset[str]:
    """Names of the constructs ``graph`` contains, for coverage assertions and
    ``hypothesis.event``: layer kinds (``Conv``, ``Route``, ...), ``act:<name>``,
    ``conv:no-bn``, ``conv:grouped``, ``conv:depthwise``, ``conv:stride2``,
    ``conv:3x3``, ``shortcut:chained``, ``route:inputs=<n>``, ``route:groups``,
    ``maxpool:<size>/<stride>``, ``yolo:heads=<n>``."""
    shapes = ir.verify(graph)
    found: set[str] = set()
    for i, layer in enumerate(graph.layers):
        found.add(type(layer).__name__)
        if isinstance(layer, Conv):
            found.add(f"act:{layer.activation.value}")
            c_in = shapes[i - 1].c if i else graph.channels
            if not layer.batch_normalize:
                found.add("conv:no-bn")
            if layer.groups > 1:
                found.add("conv:depthwise" if layer.groups == c_in == layer.filters
                          else "conv:grouped")
            if layer.stride == 2:
                found.add("conv:stride2")
            if layer.size == 3:
                found.add("conv:3x3")
        elif isinstance(layer, Shortcut):
            if any(isinstance(graph.layers[j], Shortcut) for j in layer.inputs[1:]):
                found.add("shortcut:chained")
        elif isinstance(layer, Route):
            found.add(f"route:inputs={len(layer.inputs)}")
            if layer.groups > 1:
                found.add("route:groups")
        elif isinstance(layer, MaxPool):
            found.add(f"maxpool:{layer.size}/{layer.stride}")
    found.add(f"yolo:heads={len(graph.yolo_indices())}")
    return frozenset(found)
