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

from collections.abc import Iterable
from typing import Any

import numpy as np
from hypothesis import note
from hypothesis import strategies as st

import ir
from darkslim.testing.blocks import (
    BLOCK_KINDS,
    BLOCKS,
    CLASSIC_KINDS,
    HEAD_KINDS,
    STYLES,
    Builder,
    add_classifier,
    add_head,
    ensure_layer,
    fill_anchors,
    last_readable,
)
from ir import (
    Activation,
    Connected,
    Conv,
    Graph,
    MaxPool,
    Reorg,
    Reorg3d,
    Route,
    ScaleChannels,
    Shape,
    Shortcut,
    Yolo,
    layer_key,
)
from passes import ChannelMasks
from passes.masks import balance_mask

__all__ = [
    "BLOCK_KINDS", "CLASSIC_KINDS", "HEAD_KINDS", "STYLES", "graph_features", "graphs",
    "inputs", "mask_units", "masks", "programs", "random_inputs", "random_variables",
    "variables",
]

_RECIPE_BYTES = 6


# --------------------------------------------------------------------------- graphs


def _check_choice(name: str, chosen: Iterable[str], allowed: tuple[str, ...]
                  ) -> tuple[str, ...]:
    chosen = tuple(chosen)
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        raise ValueError(f"graphs({name}=...): unknown or no choices {unknown}; "
                         f"expected a non-empty subset of {allowed}")
    return tuple(k for k in allowed if k in chosen)  # keep the shrink order


@st.composite
def graphs(draw, *, max_blocks: int = 6, min_blocks: int = 1,
           widths: tuple[int, int] = (2, 16), sizes: tuple[int, int] = (16, 32),
           size_multiple: int = 8, square: bool = False,
           kinds: Iterable[str] = BLOCK_KINDS,
           activations: Iterable[Activation] = tuple(Activation),
           bn_optional: bool = True, heads: tuple[int, int] = (1, 2),
           classes: tuple[int, int] = (1, 3), channels: int = 3,
           head_kinds: Iterable[str] = HEAD_KINDS,
           styles: Iterable[str] = STYLES) -> Graph:
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
        activations: the activations to draw from (every Darknet activation by
            default); [sam], [scale_channels] and [connected] use those of them that
            Darknet's ``activate_array`` has.
        bn_optional: whether plain conv blocks may lack BatchNorm (then they carry
            a conv bias and are not prunable).
        heads: (min, max) number of yolo heads; the graph ends with one when
            ``min >= 1``, and ``head`` blocks add others in the middle.
        classes: (min, max) number of classes (one value per graph).
        channels: input channels.
        head_kinds: the detection heads to draw from (`HEAD_KINDS`: ``[yolo]``,
            ``[yolo] new_coords=1``, ``[Gaussian_yolo]``, ``[region]``).
        styles: `STYLES` to draw from: a ``detector`` ends with heads (as ``heads``
            says), a ``classifier`` with [connected] ... [softmax] [cost] and has none.

    Shrinks toward fewer blocks, 1x1 convs of the minimum width, BN, the first
    activation, one head with one anchor, and the smallest input: the simplest graph
    is one conv, the head conv and its ``[yolo]``.

    >>> from hypothesis import given
    >>> @given(graphs(max_blocks=3, kinds=("conv", "route")))
    ... def test_verifies(graph):
    ...     ir.verify(graph)
    """
    kinds = _check_choice("kinds", kinds, BLOCK_KINDS)
    head_kinds = _check_choice("head_kinds", head_kinds, HEAD_KINDS)
    styles = _check_choice("styles", styles, STYLES)
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

    # Both styles make the same draws, so shrinking prefers the first style (detector)
    # rather than whichever makes fewer draws.
    classifier = draw(st.sampled_from(styles)) == "classifier"
    ending = (draw(st.binary(min_size=_RECIPE_BYTES, max_size=_RECIPE_BYTES))
              if "classifier" in styles else b"")
    final = (draw(st.integers(1, 3)), draw(st.sampled_from(head_kinds)))

    b = Builder(image=Shape(channels, height, width), widths=widths,
                activations=activations, bn_optional=bn_optional,
                route_cap=4 * widths[1])
    n_heads = 0
    reserve = 1 if heads[0] else 0  # keep room for the final head
    for kind, v in recipes:
        if kind != "head":
            BLOCKS[kind](b, v)
        elif not classifier and n_heads + 1 + reserve <= heads[1]:
            ensure_layer(b, v)
            trunk = len(b.layers) - 1
            add_head(b, 1 + v[0] % 3, n_classes, head_kinds[v[1] % len(head_kinds)])
            b.route([trunk])
            n_heads += 1
    if classifier:
        add_classifier(b, ending, n_classes)
    ends_with_head = classifier
    while not classifier and (n_heads < heads[0] or (heads[0] and not ends_with_head)):
        if ends_with_head:
            b.route([last_readable(b)])
        anchors, kind = final if not ends_with_head else (
            draw(st.integers(1, 3)), draw(st.sampled_from(head_kinds)))
        add_head(b, anchors, n_classes, kind)
        n_heads += 1
        ends_with_head = True

    layers = fill_anchors(b.layers)
    net = (("batch", "1"), ("subdivisions", "1"), ("width", str(width)),
           ("height", str(height)), ("channels", str(channels)))
    return Graph(net=net, layers=tuple(layers))


# --------------------------------------------------------------------------- weights


def random_variables(graph: Graph, seed: int = 0, *, sparsity: float = 0.0) -> dict:
    """Seeded float32 numpy variables for ``graph`` in the Flax layout.

    Every layer gets the variables its kind's spec asks for (``KindSpec.variables``).
    Kernels (conv HWIO ``(k, k, in/groups, out)``, dense ``(in, out)``) are drawn
    with std ``1/sqrt(fan_in)``. BN layers get γ (``params/bn/scale``) of magnitude in
    [0.2, 1.5] (one in five negative), a fraction ``sparsity`` of them replaced by values
    in (-1e-3, 1e-3);
    β ~ N(0, 0.5); running mean ~ N(0, 0.5) and var in [0.5, 2]. Convs without BN get
    a bias ~ N(0, 0.5).

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
    for i, layer in enumerate(graph.layers):
        ins = tuple(shapes[j] if j >= 0 else ir.input_shape(graph)
                    for j in ir.layer_inputs(graph, i))
        wanted = ir.spec_of(layer).variables(layer, ins)
        if not wanted:
            continue
        kernel_shape = next(iter(wanted["params"].values()))["kernel"]
        fan_in, out = int(np.prod(kernel_shape[:-1])), kernel_shape[-1]
        kernel = rng.normal(0.0, 1.0 / np.sqrt(fan_in), kernel_shape).astype(f32)
        part = next(iter(wanted["params"]))  # "conv" or "dense"
        key = layer_key(i)
        if "bn" in wanted["params"]:
            gamma = rng.uniform(0.2, 1.5, out) * np.where(rng.random(out) < 0.2, -1, 1)
            tiny = rng.uniform(-1e-3, 1e-3, out)
            gamma = np.where(rng.random(out) < sparsity, tiny, gamma)
            params[key] = {part: {"kernel": kernel},
                           "bn": {"scale": gamma.astype(f32),
                                  "bias": rng.normal(0.0, 0.5, out).astype(f32)}}
            stats[key] = {"bn": {"mean": rng.normal(0.0, 0.5, out).astype(f32),
                                 "var": rng.uniform(0.5, 2.0, out).astype(f32)}}
        else:
            params[key] = {part: {"kernel": kernel,
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
    shapes = ir.verify(graph)
    # Last unit first: when shrinking deletes an unrelated block near the input,
    # the masks of the layers after it keep their draws (and the failure).
    for members in reversed(mask_units(analysis)):
        n = shapes[members[0]].c  # a conv's filters, a [connected]'s outputs
        if rng is None:
            dropped = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        else:
            assert drop is not None  # rng exists only with drop
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
    ``conv:3x3``, ``conv:dilated``, ``conv:share`` (``share_index``),
    ``shortcut:chained``, ``route:inputs=<n>``,
    ``route:groups``, ``maxpool:<size>/<stride>``, ``maxpool:depth``,
    ``yolo:new_coords``, ``scale_channels:se``, ``scale_channels:wh``,
    ``reorg:reverse``, ``connected:bn``, ``connected:no-bn``, ``connected:global``
    (after a 1x1 map), ``connected:spatial``, ``yolo:heads=<n>`` (every detection
    head counts)."""
    shapes = ir.verify(graph)
    found: set[str] = set()
    for i, layer in enumerate(graph.layers):
        found.add(type(layer).__name__)
        activation = getattr(layer, "activation", None)
        if activation is not None and not isinstance(layer, Shortcut):
            found.add(f"act:{activation.value}")
        c_in = shapes[i - 1] if i else ir.input_shape(graph)
        if isinstance(layer, Conv):
            if not layer.batch_normalize:
                found.add("conv:no-bn")
            if layer.groups > 1:
                found.add("conv:depthwise" if layer.groups == c_in.c == layer.filters
                          else "conv:grouped")
            if layer.stride == 2:
                found.add("conv:stride2")
            if layer.size == 3:
                found.add("conv:3x3")
            if layer.dilation > 1:
                found.add("conv:dilated")
            if layer.share is not None:
                found.add("conv:share")
        elif isinstance(layer, Shortcut):
            if any(isinstance(graph.layers[j], Shortcut) for j in layer.inputs[1:]):
                found.add("shortcut:chained")
        elif isinstance(layer, Route):
            found.add(f"route:inputs={len(layer.inputs)}")
            if layer.groups > 1:
                found.add("route:groups")
        elif isinstance(layer, MaxPool):
            found.add("maxpool:depth" if layer.depth else f"maxpool:{layer.size}/{layer.stride}")
        elif isinstance(layer, Yolo) and layer.new_coords:
            found.add("yolo:new_coords")
        elif isinstance(layer, ScaleChannels):
            found.add("scale_channels:wh" if layer.scale_wh else "scale_channels:se")
        elif isinstance(layer, (Reorg, Reorg3d)) and layer.reverse:
            found.add("reorg:reverse")
        elif isinstance(layer, Connected):
            found.add("connected:bn" if layer.batch_normalize else "connected:no-bn")
            found.add("connected:global" if c_in.h * c_in.w == 1 else "connected:spatial")
    found.add(f"yolo:heads={len(graph.head_indices())}")
    return frozenset(found)
