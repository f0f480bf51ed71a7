"""ONNX in the app's workflows: ``prune --export onnx`` and the demo's latency column.

One place for what `darkslim.commands.prune` and `darkslim.demo` call, so their own
edits stay one call each. Library code: returns data and writes files, never prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import frontends
import ir
from ir import Variables


def export_checked(graph: ir.Graph, variables: Variables, options=None):
    """`export.export_onnx` with default options; the exporter itself refuses layers
    and keys darkslim does not execute (`ir.unsupported_reason`), naming the cfg line."""
    from export import ExportOptions, export_onnx

    return export_onnx(graph, variables, options or ExportOptions())


def onnx_latencies(programs: Sequence[tuple[ir.Graph, Any]], *, bn_eps: float = 1e-5,
                   repeats: int = 5, warmup: int = 2, models: Sequence | None = None,
                   threads: int | None = None) -> tuple[float, ...]:
    """Median onnxruntime CPU latency (ms, batch 1) of each network, exported with BN
    folded and run interleaved in the same session of measurements (``threads``
    intra-op threads; None: onnxruntime's default)."""
    from darkslim.latency import measure_onnx_latency
    from export import ExportOptions

    if models is None:
        models = [export_checked(g, v, ExportOptions(bn_eps=bn_eps)) for g, v in programs]
    shapes = [(s.c, s.h, s.w) for s in (ir.input_shape(g) for g, _ in programs)]
    return tuple(t.median_ms for t in measure_onnx_latency(models, shapes, repeats=repeats,
                                                           warmup=warmup, threads=threads))


def export_pruned(out: str | Path, original: tuple[ir.Graph, Any],
                  compact: tuple[ir.Graph, Any], *, bn_eps: float = 1e-5,
                  repeats: int = 5, metadata: tuple = ()) -> dict:
    """Write ``out/pruned.onnx`` (BN folded, opset 17) and time it against the
    original network under onnxruntime (skipped when ``repeats`` is 0).

    Returns:
        The report entry: ``file``, ``bytes``, ``opset``, ``onnxruntime_ms_before``,
        ``onnxruntime_ms_after`` (None when not timed), ``repeats``.
    """
    from export import ExportOptions

    options = ExportOptions(bn_eps=bn_eps, metadata=metadata)
    pruned = export_checked(*compact, options)
    data = pruned.SerializeToString()
    frontends.write_atomic(Path(out) / "pruned.onnx", data)
    entry = {"file": "pruned.onnx", "bytes": len(data), "opset": options.opset,
             "onnxruntime_ms_before": None, "onnxruntime_ms_after": None,
             "repeats": repeats}
    if repeats > 0:
        before = export_checked(*original, options)
        entry["onnxruntime_ms_before"], entry["onnxruntime_ms_after"] = onnx_latencies(
            [original, compact], repeats=repeats, models=[before, data])
    return entry


def onnx_summary(entry: dict) -> str:
    """One line for the terminal: the file and, when timed, the latency column."""
    line = f"pruned.onnx: {entry['bytes'] / 1e6:.1f} MB, opset {entry['opset']}"
    before, after = entry["onnxruntime_ms_before"], entry["onnxruntime_ms_after"]
    if before is not None:
        line += (f"; onnxruntime CPU latency (batch 1, median of {entry['repeats']}) "
                 f"{before:.2f} ms → {after:.2f} ms ({after / before:.3f}×)")
    return line
