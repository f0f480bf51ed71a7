"""A per-layer latency model of one network on one engine: `LatencyTable`.

Measured once (`darkslim.latency_table` builds each conv alone on the engine at a grid
of channel counts), then pure data: `LatencyTable.predict` sums per-layer times of a
pruned network without running it, so a pass (`passes.SlimToLatency`) can search channel
counts against a latency budget.

- A conv is looked up on its *signature*'s grid (kernel, stride, padding, dilation,
  groups, input H×W, activation and the original c_in/c_out; yolov3 repeats many, so
  each signature is measured once) with bilinear interpolation in (c_in, c_out),
  clamped at the grid's edges. The grid is made monotone when built (a running max
  along both axes): fewer channels never cost more, up to timing noise, and the pass's
  greedy search relies on it.
- Every other layer has its measured time in the whole network at full size (the
  engine's own profile), scaled by its output channel ratio: the element-wise and copy
  layers (shortcut, route, upsample, maxpool, yolo) move memory in proportion to their
  channels. Their share is small (yolov3-tiny-416 on onnxruntime: 1.7 of 52 ms), so
  scaled vs constant hardly moves a prediction.
- The sum of the per-layer times differs from the measured whole network (a single-
  layer model pays its own layout reorders and dispatch; the whole network fuses
  across layers and has fixed costs). The whole network is also measured at a second
  point, every unit pruned to half (``half_ms``, ``half_sum_ms``), and the prediction
  maps the per-layer sum to whole-network time piecewise-linearly through (0, 0),
  (half sum, half measured), (full sum, full measured), extrapolated beyond the full
  point through the origin: exact for the unpruned network, monotone in the sum.

How each layer kind is predicted is this consumer's rule table, `LATENCY_RULES`,
checked against `ir.KINDS` at import (`ir.check_table`): a new kind without an entry
fails at import. Pure: numpy and `ir` only; the JSON form is `table_to_json` /
`table_from_json` (the app writes it atomically).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import ir
from ir import Graph
from passes.errors import PruneError


@dataclass(frozen=True, slots=True)
class TableKey:
    """What a table is valid for; a cached table whose key differs is re-measured.

    Attributes:
        engine, engine_version: e.g. ``onnxruntime``, ``1.32.0``.
        cpu: the CPU model name (``/proc/cpuinfo``) and thread count.
        size: the network's input ``(height, width)``.
        cfg: the digest of the measured graph (`passes.GraphFingerprint`).
        threads: the engine's intra-op threads (0: its default, all cores).
    """

    engine: str
    engine_version: str
    cpu: str
    size: tuple[int, int]
    cfg: str
    threads: int = 0

    @property
    def summary(self) -> str:
        threads = f"{self.threads} thread{'s' * (self.threads > 1)}" if self.threads \
            else "default threads"
        return (f"{self.engine} {self.engine_version}, {self.size[1]}x{self.size[0]}, "
                f"graph {self.cfg}, {self.cpu}, {threads}")


@dataclass(frozen=True, slots=True)
class ConvSignature:
    """What a conv's latency depends on, besides its channel counts."""

    size: int
    stride: int
    padding: int
    dilation: int
    groups: int
    activation: str
    height: int
    width: int
    c_in: int
    c_out: int

    @classmethod
    def of(cls, layer: ir.Conv, in_shape: ir.Shape) -> "ConvSignature":
        return cls(size=layer.size, stride=layer.stride, padding=layer.pad_pixels,
                   dilation=layer.dilation, groups=layer.groups,
                   activation=layer.activation.value, height=in_shape.h,
                   width=in_shape.w, c_in=in_shape.c, c_out=layer.filters)


@dataclass(frozen=True, slots=True)
class ConvGrid:
    """One signature's measured milliseconds at ``c_in × c_out`` channel counts.

    ``ms[a][b]`` is the time at ``(c_in[a], c_out[b])``; both axes ascend and end at
    the signature's full counts. A grouped conv (``groups > 1``) has a single point.
    """

    signature: ConvSignature
    c_in: tuple[int, ...]
    c_out: tuple[int, ...]
    ms: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if (len(self.ms) != len(self.c_in) or any(len(r) != len(self.c_out) for r in self.ms)
                or list(self.c_in) != sorted(set(self.c_in))
                or list(self.c_out) != sorted(set(self.c_out))):
            raise PruneError(f"ConvGrid {self.signature}: ms must be a len(c_in) × "
                             "len(c_out) table over ascending, distinct channel counts")

    def at(self, c_in: float, c_out: float) -> float:
        """Bilinear interpolation, clamped to the grid's edges."""
        (a0, a1, ta), (b0, b1, tb) = _bracket(self.c_in, c_in), _bracket(self.c_out, c_out)
        row0 = self.ms[a0][b0] * (1 - tb) + self.ms[a0][b1] * tb
        row1 = self.ms[a1][b0] * (1 - tb) + self.ms[a1][b1] * tb
        return row0 * (1 - ta) + row1 * ta


def _bracket(axis: Sequence[int], x: float) -> tuple[int, int, float]:
    """Indices around ``x`` on ``axis`` and the weight of the upper one."""
    if x <= axis[0]:
        return 0, 0, 0.0
    if x >= axis[-1]:
        return len(axis) - 1, len(axis) - 1, 0.0
    hi = bisect.bisect_left(axis, x)
    lo = hi - 1
    return lo, hi, (x - axis[lo]) / (axis[hi] - axis[lo])


def monotone_grid(ms: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    """``ms`` with a running max along both axes (fewer channels never cost more)."""
    rows = [list(map(float, r)) for r in ms]
    for r in rows:
        for b in range(1, len(r)):
            r[b] = max(r[b], r[b - 1])
    for a in range(1, len(rows)):
        rows[a] = [max(x, y) for x, y in zip(rows[a], rows[a - 1])]
    return tuple(tuple(r) for r in rows)


@dataclass(frozen=True, slots=True)
class LayerEntry:
    """One layer of the measured network: its kind, full channel counts, and either
    the index of its conv's grid or its measured milliseconds at full size."""

    kind: str
    c_in: int
    c_out: int
    grid: int | None = None
    ms: float = 0.0


def layer_entries(graph: Graph, grid_of: Mapping[int, int],
                  ms_of: Callable[[int], float]) -> tuple[LayerEntry, ...]:
    """A `LayerEntry` per layer of ``graph`` at full size: a conv in ``grid_of`` points
    at its grid, every other layer has ``ms_of(index)`` milliseconds."""
    shapes = ir.verify(graph)
    image = ir.input_shape(graph)
    entries = []
    for i, layer in enumerate(graph.layers):
        inputs = ir.layer_inputs(graph, i)
        c_in = image.c if not inputs or inputs[0] < 0 else shapes[inputs[0]].c
        entries.append(LayerEntry(kind=layer.kind, c_in=c_in, c_out=shapes[i].c,
                                  grid=grid_of.get(i),
                                  ms=0.0 if i in grid_of else ms_of(i)))
    return tuple(entries)


@dataclass(frozen=True, slots=True)
class Prediction:
    """A predicted whole-network time and its per-layer terms (uncalibrated)."""

    total_ms: float
    layers_ms: tuple[float, ...]


# --------------------------------------------------------------- the rule table

Rule = Callable[["LatencyTable", LayerEntry, float, float], float]


def padded(c: float, multiple: int, full: int) -> float:
    """``c`` rounded up to the engine's channel block, at most ``full``: the engine
    pads a tensor's channels to its block (onnxruntime's NCHWc, 16 with AVX-512), so
    time is a staircase in steps of ``multiple`` (measured: benchmarks/README.md)."""
    if multiple <= 1:
        return c
    return min(float(full), -(-c // multiple) * multiple)


def _conv_rule(table: "LatencyTable", entry: LayerEntry, c_in: float, c_out: float
               ) -> float:
    assert entry.grid is not None  # every conv entry has a grid (`LatencyTable` checks)
    grid = table.convs[entry.grid]
    sig, m = grid.signature, table.multiple
    if sig.groups > 1:  # depthwise-like: measured once, scaled with channels
        return grid.ms[-1][-1] * padded(c_out, m, sig.c_out) / sig.c_out
    return grid.at(padded(c_in, m, sig.c_in), padded(c_out, m, sig.c_out))


def _scaled(table: "LatencyTable", entry: LayerEntry, c_in: float, c_out: float) -> float:
    if not entry.c_out:
        return entry.ms
    return entry.ms * padded(c_out, table.multiple, entry.c_out) / entry.c_out


def _constant(table: "LatencyTable", entry: LayerEntry, c_in: float, c_out: float
              ) -> float:
    return entry.ms


LATENCY_RULES = ir.check_table("latency", {
    ir.Conv: _conv_rule,
    ir.Shortcut: _scaled, ir.Route: _scaled, ir.Upsample: _scaled, ir.MaxPool: _scaled,
    ir.Yolo: _scaled, ir.GaussianYolo: _scaled, ir.Region: _scaled, ir.Sam: _scaled,
    ir.ScaleChannels: _scaled, ir.Reorg3d: _scaled, ir.Reorg: _scaled,
    ir.AvgPool: _scaled, ir.LocalAvgPool: _scaled, ir.Dropout: _scaled,
    ir.Softmax: _scaled, ir.Connected: _scaled, ir.Crop: _scaled, ir.Detection: _scaled,
    # A loss layer: no channels of its own to drop, its time is what was measured.
    ir.Cost: _constant,
    ir.Section: ir.Refusal("a section darkslim does not execute has no latency to model"),
})


def latency_refusal(graph: Graph) -> str | None:
    """Why a table cannot be measured for ``graph`` (a refused kind), or None."""
    for i, layer in enumerate(graph.layers):
        why = LATENCY_RULES.refusal(layer)
        if why is not None:
            return f"layer {i} ([{layer.kind}] at cfg line {layer.line}): {why}"
    return None


# --------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class LatencyTable:
    """Per-layer latency of one network on one engine (see the module docstring).

    Attributes:
        key: what it was measured for (`TableKey`).
        convs: the grids of the distinct conv signatures.
        layers: one `LayerEntry` per layer of the measured graph.
        network_ms: the whole network at full size, measured in the same run.
        half_ms, half_sum_ms: the whole network with every prunable unit (shortcut
            mode) at half its channels, measured interleaved with the full one, and the
            per-layer sum for it (0, 0: not measured; the calibration is then the
            ratio at full size).
        multiple: the engine's channel block: channel counts are rounded up to it
            before the lookup (`padded`), and the grids are measured at its multiples.
    """

    key: TableKey
    convs: tuple[ConvGrid, ...]
    layers: tuple[LayerEntry, ...]
    network_ms: float
    multiple: int = 1
    half_ms: float = 0.0
    half_sum_ms: float = 0.0

    def __post_init__(self) -> None:
        for i, e in enumerate(self.layers):
            if (e.kind == ir.Conv.kind) != (e.grid is not None) or (
                    e.grid is not None and not 0 <= e.grid < len(self.convs)):
                raise PruneError(f"LatencyTable: layer {i} [{e.kind}]: a conv needs a grid "
                                 f"index in 0..{len(self.convs) - 1}, any other layer none")

    @property
    def summary(self) -> str:
        return (f"{len(self.layers)} layers, {len(self.convs)} conv signatures, "
                f"{self.network_ms:.2f} ms; {self.key.summary}")

    def layer_ms(self, index: int, c_in: float, c_out: float) -> float:
        """Uncalibrated milliseconds of layer ``index`` with those channel counts
        (``c_in``: its first input's channels)."""
        entry = self.layers[index]
        rule = LATENCY_RULES[_KIND_CLASS[entry.kind]]
        assert not isinstance(rule, ir.Refusal)  # refused kinds are never measured
        return float(rule(self, entry, c_in, c_out))

    @property
    def full_sum_ms(self) -> float:
        """Σ per-layer ms of the unpruned network."""
        return sum(self.layer_ms(i, e.c_in, e.c_out) for i, e in enumerate(self.layers))

    @property
    def calibration(self) -> float:
        """Whole network / Σ layers, both at full size."""
        total = self.full_sum_ms
        return self.network_ms / total if total > 0 else 1.0

    def calibrate(self, sum_ms: float) -> float:
        """Whole-network ms for a per-layer sum (see the module docstring)."""
        full_sum, full = self.full_sum_ms, self.network_ms
        if full_sum <= 0:
            return sum_ms
        points = [(0.0, 0.0)]
        if 0 < self.half_sum_ms < full_sum and 0 < self.half_ms <= full:
            points.append((self.half_sum_ms, self.half_ms))
        points.append((full_sum, full))
        if sum_ms >= full_sum:
            return sum_ms * full / full_sum
        for (s0, m0), (s1, m1) in zip(points, points[1:]):
            if sum_ms <= s1:
                return m0 + (m1 - m0) * (sum_ms - s0) / (s1 - s0)
        raise AssertionError("unreachable: sum_ms < full_sum is inside the points")

    def predict_channels(self, c_in: Sequence[float], c_out: Sequence[float]) -> Prediction:
        """The calibrated prediction from every layer's (first input, output) channels;
        the per-layer terms are scaled alike."""
        raw = tuple(self.layer_ms(i, a, b)
                    for i, (a, b) in enumerate(zip(c_in, c_out, strict=True)))
        total = sum(raw)
        whole = self.calibrate(total)
        scale = whole / total if total > 0 else 1.0
        return Prediction(whole, tuple(ms * scale for ms in raw))

    def predict(self, graph: Graph) -> Prediction:
        """The predicted whole-network time of ``graph``: the measured graph, or one
        with the same layers and fewer channels (a prune's compact output)."""
        self.check_graph(graph)
        shapes = ir.verify(graph)
        image = ir.input_shape(graph)
        c_in = []
        for i in range(len(graph.layers)):
            inputs = ir.layer_inputs(graph, i)
            c_in.append(image.c if not inputs or inputs[0] < 0 else shapes[inputs[0]].c)
        return self.predict_channels(c_in, [s.c for s in shapes])

    def check_graph(self, graph: Graph) -> None:
        """A `PruneError` unless ``graph`` has the measured graph's layers."""
        kinds = tuple(layer.kind for layer in graph.layers)
        measured = tuple(e.kind for e in self.layers)
        if kinds != measured:
            at = next((i for i, (a, b) in enumerate(zip(kinds, measured)) if a != b),
                      min(len(kinds), len(measured)))
            raise PruneError(
                f"latency table ({self.key.summary}) was measured on a graph of "
                f"{len(measured)} layers; this one has {len(kinds)} and they first differ "
                f"at layer {at}: measure the table on the graph the pass runs on")
        if (graph.height, graph.width) != tuple(self.key.size):
            raise PruneError(f"latency table measured at {self.key.size[1]}x"
                             f"{self.key.size[0]}; this graph runs at "
                             f"{graph.width}x{graph.height}")


_KIND_CLASS = {spec.name: spec.layer for spec in ir.KINDS}


# ----------------------------------------------------------------------- JSON

FORMAT = "darkslim-latency-table/1"


def table_to_json(table: LatencyTable) -> dict[str, Any]:
    """A JSON-able dict of ``table`` (`table_from_json` reads it back equal)."""
    k = table.key
    return {
        "format": FORMAT,
        "key": {"engine": k.engine, "engine_version": k.engine_version, "cpu": k.cpu,
                "size": list(k.size), "cfg": k.cfg, "threads": k.threads},
        "network_ms": table.network_ms,
        "multiple": table.multiple,
        "half_ms": table.half_ms,
        "half_sum_ms": table.half_sum_ms,
        "convs": [{"signature": {f: getattr(g.signature, f)
                                 for f in ConvSignature.__dataclass_fields__},
                   "c_in": list(g.c_in), "c_out": list(g.c_out),
                   "ms": [list(r) for r in g.ms]} for g in table.convs],
        "layers": [{"kind": e.kind, "c_in": e.c_in, "c_out": e.c_out, "grid": e.grid,
                    "ms": e.ms} for e in table.layers],
    }


def key_from_json(data: Mapping[str, Any]) -> TableKey:
    k = data["key"]
    return TableKey(engine=str(k["engine"]), engine_version=str(k["engine_version"]),
                    cpu=str(k["cpu"]), size=(int(k["size"][0]), int(k["size"][1])),
                    cfg=str(k["cfg"]), threads=int(k.get("threads", 0)))


def table_from_json(data: Mapping[str, Any]) -> LatencyTable:
    """The table `table_to_json` wrote; a `PruneError` for another format."""
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise PruneError(f"latency table: format {found!r}; expected {FORMAT!r}")
    try:
        convs = tuple(ConvGrid(signature=ConvSignature(**g["signature"]),
                               c_in=tuple(int(v) for v in g["c_in"]),
                               c_out=tuple(int(v) for v in g["c_out"]),
                               ms=tuple(tuple(float(v) for v in r) for r in g["ms"]))
                      for g in data["convs"])
        layers = tuple(LayerEntry(kind=str(e["kind"]), c_in=int(e["c_in"]),
                                  c_out=int(e["c_out"]),
                                  grid=None if e["grid"] is None else int(e["grid"]),
                                  ms=float(e["ms"])) for e in data["layers"])
        return LatencyTable(key=key_from_json(data), convs=convs, layers=layers,
                            network_ms=float(data["network_ms"]),
                            multiple=int(data.get("multiple", 1)),
                            half_ms=float(data.get("half_ms", 0.0)),
                            half_sum_ms=float(data.get("half_sum_ms", 0.0)))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PruneError):
            raise
        raise PruneError(f"latency table: malformed ({type(exc).__name__}: {exc})") from None
