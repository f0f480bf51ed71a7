"""What each pass decided, as frozen data that serialises to JSON and parses back.

`Pipeline.run` returns one report per pass: a plain `PassReport` (before and after
counts) for passes that decide nothing, a `SlimReport` for `SlimChannels` (threshold,
masks, channels kept per conv) and a `BlocksReport` for `RemoveBlocks` (blocks removed
with their scores). ``report.json`` of ``darkslim prune`` is `dump_reports` of them, and
everything that reads a prune (the CLI table, the plots, the demo, the tests) reads
these types, never string keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from ir import Connected, Conv, Graph, Layer, count_flops, count_params
from passes.errors import PruneError
from passes.latency import TableKey, key_from_json
from passes.masks import ChannelMasks, GraphFingerprint, Threshold


def channel_layers(graph: Graph) -> tuple[int, ...]:
    """The layers whose output channels pruning can drop: convs and ``[connected]``."""
    return tuple(i for i, layer in enumerate(graph.layers)
                 if isinstance(layer, (Conv, Connected)))


def width(layer: Layer) -> int:
    """Output channels of a conv (``filters``) or a ``[connected]`` (``output``)."""
    return layer.filters if isinstance(layer, Conv) else cast(Connected, layer).output


@dataclass(frozen=True, slots=True)
class Counts:
    """Size of a network: layers, convs, output channels of its convs and
    ``[connected]`` layers, params, FLOPs."""

    layers: int
    convs: int
    channels: int
    params: int
    flops: int

    @classmethod
    def of(cls, graph: Graph) -> "Counts":
        convs = graph.conv_indices()
        return cls(layers=len(graph.layers), convs=len(convs),
                   channels=sum(width(graph.layers[i]) for i in channel_layers(graph)),
                   params=count_params(graph), flops=count_flops(graph))

    @property
    def bflops(self) -> float:
        return self.flops / 1e9


@dataclass(frozen=True, slots=True, kw_only=True)
class PassReport:
    """Any pass: its name, its text form and the network's size before and after."""

    kind: ClassVar[str] = "pass"
    name: str
    text: str
    before: Counts
    after: Counts


@dataclass(frozen=True, slots=True, kw_only=True)
class SlimReport(PassReport):
    """`SlimChannels`: the threshold it chose, the masks, the channels kept per conv.

    Attributes:
        mode, min_keep, round_to, ignore: the options it ran with (``ignore`` is None
            when given as a predicate).
        threshold: the `Threshold` (value, percent, highest safe value and percent).
        units: the prunable units of the analysis (convs sharing one mask).
        channels: ``(conv index, kept, total)`` for every conv of the input graph.
        masks: the masks, bound to the input graph's fingerprint.
    """

    kind: ClassVar[str] = "slim-channels"
    mode: str
    min_keep: float
    round_to: int
    ignore: tuple[int, ...] | None
    threshold: Threshold
    units: tuple[tuple[int, ...], ...]
    channels: tuple[tuple[int, int, int], ...]
    masks: ChannelMasks

    @property
    def prunable(self) -> tuple[int, ...]:
        return tuple(sorted(i for unit in self.units for i in unit))

    @property
    def prunable_channels(self) -> tuple[int, int]:
        """(kept, total) over the prunable convs."""
        prunable = set(self.prunable)
        rows = [(k, t) for i, k, t in self.channels if i in prunable]
        return sum(k for k, _ in rows), sum(t for _, t in rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyReport(SlimReport):
    """`SlimToLatency`: a `SlimReport` (masks, channels per conv; ``threshold.percent``
    is the fraction of prunable channels dropped, ``threshold.value`` the largest |γ|
    dropped) plus the latency model's side.

    Attributes:
        table: the key of the `LatencyTable` used (engine, version, CPU, size, graph).
        target_ms: the budget (predicted ms).
        predicted_before_ms, predicted_after_ms: the table's prediction for the input
            and the output graph.
        layers_ms: ``(layer, predicted ms before, after)`` for every layer.
        method: ``greedy`` (importance lost per ms saved) or ``global-threshold``
            (the lowest global |γ| threshold that fits, when it keeps more Σ|γ|).
    """

    kind: ClassVar[str] = "slim-to-latency"
    table: TableKey
    target_ms: float
    predicted_before_ms: float
    predicted_after_ms: float
    layers_ms: tuple[tuple[int, float, float], ...]
    method: str = "greedy"

    @property
    def predicted_speedup(self) -> float:
        return self.predicted_before_ms / self.predicted_after_ms


@dataclass(frozen=True, slots=True)
class RemovedBlock:
    """One residual block `RemoveBlocks` removed (indices of its input graph)."""

    shortcut: int
    source: int
    layers: tuple[int, ...]
    gamma_conv: int | None
    score: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BlocksReport(PassReport):
    """`RemoveBlocks`: what was removable, what it removed and with which scores.

    Attributes:
        found: removable blocks in the input graph.
        removed: the removed blocks in layer order, with their scores.
        not_removable: ``(shortcut index, why)`` for every other shortcut.
        index_map: ``(old index, new index)`` of every surviving layer and of every
            removed shortcut (-> what its readers read instead).
        score: the score function's name (``mean_abs_gamma``).
    """

    kind: ClassVar[str] = "remove-blocks"
    found: int
    removed: tuple[RemovedBlock, ...]
    not_removable: tuple[tuple[int, str], ...]
    index_map: tuple[tuple[int, int], ...]
    score: str


Report = PassReport | SlimReport | LatencyReport | BlocksReport
REPORT_TYPES: dict[str, type[PassReport]] = {
    t.kind: t for t in (PassReport, SlimReport, LatencyReport, BlocksReport)}


# ------------------------------------------------------------------------- to JSON


def _masks_json(masks: ChannelMasks) -> dict[str, Any]:
    # One hex string per conv: yolov3's 10k mask bits stay a few kB of report.
    return {"fingerprint": list(masks.fingerprint.layers),
            "items": [{"layer": i, "size": len(m),
                       "keep": np.packbits(np.asarray(m, bool)).tobytes().hex()}
                      for i, m in masks.items]}


def _json(value: Any) -> Any:
    if isinstance(value, ChannelMasks):
        return _masks_json(value)
    if dataclasses.is_dataclass(value):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


def report_to_json(report: PassReport) -> dict[str, Any]:
    """A JSON-able dict of ``report``, with its ``kind``."""
    return {"kind": report.kind, **_json(report)}


def dump_reports(pipeline_text: str, reports: tuple[PassReport, ...]) -> dict[str, Any]:
    """The JSON document of a run (``report.json``): the pipeline's text and one
    entry per pass."""
    return {"pipeline": pipeline_text, "passes": [report_to_json(r) for r in reports]}


# ----------------------------------------------------------------------- from JSON


def _masks_from(data: Mapping[str, Any]) -> ChannelMasks:
    items = []
    for item in data["items"]:
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(item["keep"]), np.uint8))
        items.append((int(item["layer"]), tuple(bool(b) for b in bits[:item["size"]])))
    return ChannelMasks(tuple(items), GraphFingerprint(tuple(data["fingerprint"])))


def _ints(values: Iterable[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _pair(values: Iterable[Any]) -> tuple[int, int]:
    a, b = values
    return int(a), int(b)


def _triple(values: Iterable[Any]) -> tuple[int, int, int]:
    a, b, c = values
    return int(a), int(b), int(c)


def report_from_json(data: Mapping[str, Any]) -> PassReport:
    """The report `report_to_json` wrote (a `PruneError` for an unknown kind)."""
    kind = data.get("kind")
    if kind not in REPORT_TYPES:
        raise PruneError(f"report kind {kind!r}: expected one of {', '.join(REPORT_TYPES)}")
    common = dict(name=data["name"], text=data["text"], before=Counts(**data["before"]),
                  after=Counts(**data["after"]))
    if kind == "pass":
        return PassReport(**common)
    if kind in ("slim-channels", "slim-to-latency"):
        slim = dict(
            **common, mode=data["mode"], min_keep=data["min_keep"],
            round_to=data["round_to"],
            ignore=None if data["ignore"] is None else _ints(data["ignore"]),
            threshold=Threshold(**data["threshold"]),
            units=tuple(_ints(u) for u in data["units"]),
            channels=tuple(_triple(c) for c in data["channels"]),
            masks=_masks_from(data["masks"]))
        if kind == "slim-channels":
            return SlimReport(**slim)
        key = dict(data["table"], size=list(data["table"]["size"]))
        return LatencyReport(
            **slim, table=key_from_json({"key": key}), target_ms=data["target_ms"],
            predicted_before_ms=data["predicted_before_ms"],
            predicted_after_ms=data["predicted_after_ms"],
            layers_ms=tuple((int(i), float(a), float(b)) for i, a, b in data["layers_ms"]),
            method=data.get("method", "greedy"))
    return BlocksReport(
        **common, found=data["found"], score=data["score"],
        removed=tuple(RemovedBlock(shortcut=b["shortcut"], source=b["source"],
                                   layers=_ints(b["layers"]), gamma_conv=b["gamma_conv"],
                                   score=b["score"]) for b in data["removed"]),
        not_removable=tuple((int(s), str(why)) for s, why in data["not_removable"]),
        index_map=tuple(_pair(pair) for pair in data["index_map"]))


def load_reports(data: Mapping[str, Any]) -> tuple[str, tuple[PassReport, ...]]:
    """The pipeline text and the reports of a `dump_reports` document."""
    return data["pipeline"], tuple(report_from_json(r) for r in data["passes"])
