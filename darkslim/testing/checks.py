"""Invariant checks for graphs, weights and passes, failing with a readable diff.

(Over 400 lines: the checks share their diff and report helpers, kept in one module.)

Every check raises `AssertionError` (so pytest and hypothesis report it as a
failed property, and hypothesis shrinks it) with a message that says *what* differs
and *where*: the layer, the head, the variable path, the pixel, the byte offset.

A *program* is a ``(graph, variables)`` pair, the value passes transform.
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import ir
from ir import Conv, Graph, MaxPool, Route, Shortcut, Upsample, Variables, Yolo

__all__ = [
    "Program", "assert_equivalent", "assert_identity_when_noop", "assert_pass_is_pure",
    "assert_roundtrip_cfg", "assert_roundtrip_weights", "assert_verifies",
    "describe_graph", "tree_diff",
]

Program = tuple[Graph, Any]
Forward = Callable[..., Any]


# ----------------------------------------------------------------------- describing


def _describe_layer(layer: ir.Layer, index: int) -> str:
    def rel(refs):
        return ",".join(str(r) for r in refs)

    if isinstance(layer, Conv):
        bits = [f"conv {layer.filters} {layer.size}x{layer.size}/{layer.stride}"]
        if layer.groups > 1:
            bits.append(f"groups={layer.groups}")
        if layer.dilation > 1:
            bits.append(f"dilation={layer.dilation}")
        if layer.share is not None:
            bits.append(f"share={layer.share}")
        bits.append("bn" if layer.batch_normalize else "bias")
        bits.append(layer.activation.value)
        return " ".join(bits)
    if isinstance(layer, Shortcut):
        return f"shortcut {rel(layer.inputs)} {layer.activation.value}"
    if isinstance(layer, Route):
        grp = f" groups={layer.groups} id={layer.group_id}" if layer.groups > 1 else ""
        return f"route {rel(layer.inputs)}{grp}"
    if isinstance(layer, MaxPool):
        return f"maxpool {layer.size}x{layer.size}/{layer.stride}"
    if isinstance(layer, Upsample):
        return f"upsample x{layer.stride}"
    if isinstance(layer, Yolo):
        return f"yolo mask={rel(layer.mask)} classes={layer.classes}" + (
            " new_coords" if layer.new_coords else "")
    details = ir.spec_of(layer).describe(layer)  # each kind's own row
    return f"{layer.kind} {details}".rstrip()


def describe_graph(graph: Graph) -> str:
    """One line per layer with its output shape (CxHxW): a compact, readable listing
    for failure messages and shrunk counterexamples.

    >>> print(describe_graph(ir.parse_cfg(
    ...     "[net]\\nwidth=8\\nheight=8\\n[convolutional]\\nfilters=4\\nsize=3\\npad=1\\n")))
    input 3x8x8
      0 conv 4 3x3/1 bias logistic         -> 4x8x8
    """
    try:
        shapes: tuple | None = ir.verify(graph)
    except ir.CfgError:
        shapes = None
    lines = [f"input {graph.channels}x{graph.height}x{graph.width}"]
    for i, layer in enumerate(graph.layers):
        text = f"{i:3d} {_describe_layer(layer, i)}"
        if shapes is not None:
            s = shapes[i]
            text = f"{text:<38} -> {s.c}x{s.h}x{s.w}"
        lines.append(text)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- trees


def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, Mapping):
        out: dict[tuple[str, ...], Any] = {}
        for key in tree:
            out.update(_flatten(tree[key], (*prefix, str(key))))
        return out
    if isinstance(tree, (list, tuple)):
        out = {}
        for k, item in enumerate(tree):
            out.update(_flatten(item, (*prefix, str(k))))
        return out
    return {prefix: tree}


def _leaf_diff(a: Any, b: Any) -> str | None:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return f"shape {x.shape} != {y.shape}"
    if x.dtype != y.dtype:
        return f"dtype {x.dtype} != {y.dtype}"
    if np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
        return None
    if x.dtype.kind not in "fciub":
        return f"{x!r} != {y!r}"
    same = x == y
    if x.dtype.kind in "fc":
        same |= np.isnan(x) & np.isnan(y)
    bad = ~same
    diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
    where = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(diff, nan=np.inf),
                                                    -1))), x.shape) if x.ndim else ()
    at = tuple(int(w) for w in where)
    return (f"{int(bad.sum())} of {x.size} values differ; max |a - b| = "
            f"{float(np.nanmax(np.where(bad, diff, 0))):.6g} at {at}: "
            f"a={x[at].item()!r}, b={y[at].item()!r}")


def tree_diff(a: Any, b: Any, limit: int = 5) -> str | None:
    """None when two pytrees (nested dicts of arrays) are equal in structure, shape,
    dtype and every value; else the first ``limit`` differences, one per line,
    each naming the leaf path (``params/layer_3/conv/kernel``)."""
    fa, fb = _flatten(a), _flatten(b)
    lines = []
    for path in sorted(fa.keys() - fb.keys()):
        lines.append(f"  {'/'.join(path)}: only in a")
    for path in sorted(fb.keys() - fa.keys()):
        lines.append(f"  {'/'.join(path)}: only in b")
    for path in sorted(fa.keys() & fb.keys()):
        what = _leaf_diff(fa[path], fb[path])
        if what is not None:
            lines.append(f"  {'/'.join(path)}: {what}")
    if not lines:
        return None
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def _snapshot(tree: Any, dtype=None) -> Any:
    """A deep copy whose array leaves are fresh numpy copies (cast to ``dtype``)."""
    if isinstance(tree, Mapping):
        return {k: _snapshot(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_snapshot(v, dtype) for v in tree)
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return np.array(tree, dtype=dtype, copy=True)
    return tree


def _graph_diff(a: Graph, b: Graph) -> str:
    if a.net != b.net:
        return f"  [net] differs: {a.net!r} != {b.net!r}"
    if len(a.layers) != len(b.layers):
        return f"  {len(a.layers)} layers != {len(b.layers)} layers"
    for i, (x, y) in enumerate(zip(a.layers, b.layers)):
        if x != y:
            return f"  layer {i}:\n    {x!r}\n    {y!r}"
    return "  (equal)"


# --------------------------------------------------------------------------- checks


def assert_verifies(graph: Graph) -> tuple[ir.Shape, ...]:
    """``ir.verify(graph)``, or an `AssertionError` with the error and the listing.

    Returns:
        The shapes, so ``shapes = assert_verifies(g)`` reads naturally in a test.
    """
    try:
        return ir.verify(graph)
    except ir.CfgError as exc:
        raise AssertionError(f"graph does not verify: {exc}\n{describe_graph(graph)}"
                             ) from exc


def assert_roundtrip_cfg(graph: Graph) -> None:
    """``parse_cfg(write_cfg(graph)) == graph`` and writing is a fixpoint."""
    text = ir.write_cfg(graph)
    try:
        again = ir.parse_cfg(text)
    except ir.CfgError as exc:
        raise AssertionError(f"write_cfg produced a cfg that does not parse: {exc}\n"
                             f"{text}") from exc
    if again != graph:
        raise AssertionError("parse_cfg(write_cfg(graph)) != graph; first difference "
                             f"(written, parsed):\n{_graph_diff(graph, again)}")
    text2 = ir.write_cfg(again)
    if text2 != text:
        diff = "\n".join(difflib.unified_diff(text.splitlines(), text2.splitlines(),
                                              "write_cfg(graph)", "write_cfg(parsed)",
                                              lineterm="", n=2))
        raise AssertionError(f"write_cfg is not a fixpoint:\n{diff}")


_SUFFIX = {"darknet": ".weights", "weights": ".weights", "msgpack": ".msgpack",
           "torch": ".pt", "pt": ".pt"}


def assert_roundtrip_weights(graph: Graph, variables: Variables, fmt: str, **options) -> None:
    """Write ``variables`` through the frontends in ``fmt``, read them back, compare.

    Checks that every array comes back equal (bit for bit, float32) and that writing
    what was read reproduces the file byte for byte (Darknet, msgpack) or, for torch,
    whose archives carry a random serialization id, the same arrays.

    Args:
        fmt: ``"darknet"`` (``.weights``), ``"torch"`` (``.pt``) or ``"msgpack"``.
        options: passed to both `frontends.save_variables` and
            `frontends.load_variables` (for torch: ``layout="ultralytics"|"erik"``,
            ``bn_eps``). Torch files are written and read with ``bn_eps=1e-5`` (the
            runtime's) unless given, so no variance conversion blurs the comparison.
    """
    import frontends

    suffix = _SUFFIX.get(fmt)
    if suffix is None:
        raise ValueError(f"assert_roundtrip_weights(fmt={fmt!r}): expected one of "
                         f"{sorted(_SUFFIX)}")
    if suffix == ".pt":
        options.setdefault("bn_eps", frontends.RUNTIME_BN_EPS)
    load_options = {k: v for k, v in options.items() if k in ("bn_eps", "layout")}
    expected = _snapshot(variables, np.float32)
    with tempfile.TemporaryDirectory(prefix="darkslim-roundtrip-") as tmp:
        # Same file name twice: torch records it inside the archive.
        first, second = (Path(tmp) / d / f"model{suffix}" for d in ("a", "b"))
        first.parent.mkdir()
        second.parent.mkdir()
        frontends.save_variables(graph, variables, first, **options)
        loaded = frontends.load_variables(graph, first, **load_options)
        diff = tree_diff(expected, _snapshot(loaded.variables))
        if diff is not None:
            raise AssertionError(f"{fmt}: variables read back differ from those written "
                                 f"(a = written, b = read):\n{diff}")
        frontends.save_variables(graph, loaded.variables, second, header=loaded.header,
                                 **options)
        a, b = first.read_bytes(), second.read_bytes()
        if suffix == ".pt":
            # A torch archive records a random serialization id (and the name of the
            # temp file an atomic write went through): compare what it holds instead.
            again = frontends.load_variables(graph, second, **load_options)
            diff = tree_diff(_snapshot(loaded.variables), _snapshot(again.variables))
            if diff is not None:
                raise AssertionError(f"{fmt}: writing what was read changes the "
                                     f"variables (a = first read, b = second):\n{diff}")
            return
    if a != b:
        at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise AssertionError(f"{fmt}: writing what was read is not byte-exact: "
                             f"{len(a)} vs {len(b)} bytes, first difference at byte {at}")


def _run_pass(pass_, program: Program, what: str) -> Program:
    out = pass_(*program)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Graph)):
        raise AssertionError(f"{_name(pass_)} returned {type(out).__name__} on its "
                             f"{what} call: expected a (graph, variables) tuple")
    return out


def _name(pass_) -> str:
    return f"pass {getattr(pass_, 'name', type(pass_).__name__)!r}"


def assert_pass_is_pure(pass_: Callable[[Graph, Any], Program], program: Program
                        ) -> Program:
    """The pass leaves its inputs untouched and gives the same output twice.

    Every array of ``program``'s variables is copied before the call and compared
    after (in-place writes to numpy leaves, added or removed keys are caught); the
    graph must still equal itself. Then a second call must return an equal graph and
    bit-identical variables.

    Returns:
        The pass's output, for further checks.
    """
    graph, variables = program
    graph_before, vars_before = graph, _snapshot(variables)
    out = _run_pass(pass_, program, "first")
    if graph != graph_before:
        raise AssertionError(f"{_name(pass_)} changed its input graph:\n"
                             f"{_graph_diff(graph_before, graph)}")
    diff = tree_diff(vars_before, variables)
    if diff is not None:
        raise AssertionError(f"{_name(pass_)} mutated its input variables "
                             f"(a = before, b = after):\n{diff}")
    again = _run_pass(pass_, (graph, variables), "second")
    if again[0] != out[0]:
        raise AssertionError(f"{_name(pass_)} returned different graphs on two calls:\n"
                             f"{_graph_diff(out[0], again[0])}")
    diff = tree_diff(_snapshot(out[1]), _snapshot(again[1]))
    if diff is not None:
        raise AssertionError(f"{_name(pass_)} returned different variables on two calls "
                             f"(a = first, b = second):\n{diff}")
    return out


def assert_identity_when_noop(pass_: Callable[[Graph, Any], Program], program: Program
                              ) -> None:
    """A pass with nothing to do returns its input objects (``is``), as STYLE.md asks,
    so callers and tests can tell "unchanged" without comparing arrays."""
    graph, variables = program
    out_graph, out_vars = _run_pass(pass_, program, "only")
    problems = []
    if out_graph is not graph:
        what = ("an equal but new graph" if out_graph == graph else
                f"a different graph:\n{_graph_diff(graph, out_graph)}")
        problems.append(f"returned {what}")
    if out_vars is not variables:
        diff = tree_diff(_snapshot(variables), _snapshot(out_vars))
        what = ("an equal but new variables object" if diff is None else
                f"different variables (a = input, b = output):\n{diff}")
        problems.append(f"returned {what}")
    if problems:
        raise AssertionError(f"{_name(pass_)} should be the identity here (return the "
                             "very objects it was given) but " + "; ".join(problems))


# ---------------------------------------------------------------------- equivalence


def _interior(shape: tuple[int, ...], border: int) -> np.ndarray:
    """Bool (H, W): True away from a ``border``-pixel ring."""
    h, w = shape
    keep = np.zeros((h, w), dtype=bool)
    keep[border:h - border, border:w - border] = True
    return keep


def _compare(a: np.ndarray, b: np.ndarray, region: np.ndarray, rtol: float,
             atol: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mismatch mask, |a - b| and the tolerance, elementwise; the last axis is the
    channel, and the default ``atol`` is ``rtol * max(1, max |b|)`` per channel."""
    diff = np.abs(a - b)
    if atol is None:
        axes = tuple(range(b.ndim - 1))
        scale = np.max(np.abs(np.where(np.isfinite(b), b, 0)), axis=axes, keepdims=True,
                       initial=0.0)
        atol_arr = rtol * np.maximum(1.0, scale)
    else:
        atol_arr = np.float64(atol)
    tol = atol_arr + rtol * np.abs(b)
    bad = ~(diff <= tol) & region
    return bad, diff, np.broadcast_to(tol, b.shape)


def _report(what: str, a, b, bad, diff, tol, names: tuple[str, ...],
            ring: np.ndarray | None) -> str:
    masked = np.where(bad, np.nan_to_num(diff, nan=np.inf), -1.0)
    at = np.unravel_index(int(np.argmax(masked)), a.shape)
    where = ", ".join(f"{n}={int(k)}" for n, k in zip(names, at))
    lines = [f"{what}: {int(bad.sum())} of {a.size} values differ beyond tolerance",
             f"  max |a - b| = {float(masked[at]):.6g} at ({where}): a={float(a[at]):.7g}, "
             f"b={float(b[at]):.7g}, tolerance {float(tol[at]):.3g}"]
    if ring is not None:
        in_ring, total = int((bad & ring).sum()), int(bad.sum())
        lines.append(f"  all {total} lie in the 1-pixel border ring (where k x k convs "
                     "read zero padding): see border=" if in_ring == total else
                     f"  {in_ring} of the {total} lie in the 1-pixel border ring")
    return "\n".join(lines)


def _compare_output(out_a, out_b, has_heads: bool, rtol, atol, border: int) -> list[str]:
    """The last layer's output (a classifier's softmax). A detector's last layer may
    be a pruned conv after its heads, of another width: then the heads are what count."""
    if out_a.output is None or out_b.output is None:
        return []
    oa = np.asarray(out_a.output, np.float64)
    ob = np.asarray(out_b.output, np.float64)
    if oa.shape != ob.shape:
        return [] if has_heads else [f"output: shape {oa.shape} (a) != {ob.shape} (b)"]
    region = np.broadcast_to(_interior(ob.shape[1:3], border)[None, :, :, None], ob.shape)
    bad, diff, tol = _compare(oa, ob, region, rtol, atol)
    if not bad.any():
        return []
    return [_report(f"output (last layer), shape {ob.shape}", oa, ob, bad, diff, tol,
                    ("n", "y", "x", "c"), None)]


def assert_equivalent(prog_a: Program, prog_b: Program, x, *, rtol: float = 1e-4,
                      atol: float | None = None, border: int = 0,
                      forward: Forward | tuple[Forward, Forward] | None = None,
                      bn_eps: float = 1e-5) -> None:
    """Two programs compute the same heads, detections and output on ``x``.

    Args:
        prog_a, prog_b: ``(graph, variables)`` pairs with the same heads (count and
            shapes).
        x: an NHWC float32 batch at the graphs' input size.
        rtol: relative tolerance: ``|a - b| <= atol + rtol * |b|`` elementwise.
        atol: absolute tolerance; default ``rtol * max(1, max |b|)`` per output
            channel, so "equal to float32 rounding" scales with each channel.
        border: ignore a ring of this many cells at the edge of each head's map
            and of the output (and the detections of those cells): bias folding is
            exact only away from the zero-padded border of k x k convs.
        forward: ``forward(graph, variables, x, bn_eps=...) -> ForwardOut``;
            default `runtime.forward` (jit, compiles once per graph). Pass
            `darkslim.testing.reference_forward` to skip compilation, e.g. in a
            search that shrinks over hundreds of graphs; or a pair
            ``(forward_a, forward_b)``, one per program, to compare two
            interpreters on the same program.
    """
    if forward is None:
        import runtime

        forward = runtime.forward
    forward_a, forward_b = forward if isinstance(forward, tuple) else (forward, forward)
    out_a = forward_a(prog_a[0], prog_a[1], x, bn_eps=bn_eps)
    out_b = forward_b(prog_b[0], prog_b[1], x, bn_eps=bn_eps)
    if len(out_a.heads) != len(out_b.heads):
        raise AssertionError(f"a has {len(out_a.heads)} heads, b has {len(out_b.heads)}")
    heads_at = prog_b[0].head_indices()
    problems, det_keep = [], []
    for k, (ha, hb) in enumerate(zip(out_a.heads, out_b.heads)):
        ha = np.asarray(ha, np.float64)
        hb = np.asarray(hb, np.float64)
        head = prog_b[0].layers[heads_at[k]]
        assert isinstance(head, (ir.Yolo, ir.GaussianYolo, ir.Region))  # a head_indices() layer
        label = f"head {k} (feeding [{head.kind}] layer {heads_at[k]})"
        if ha.shape != hb.shape:
            raise AssertionError(f"{label}: shape {ha.shape} (a) != {hb.shape} (b)")
        n, h, w, c = hb.shape
        cells = _interior((h, w), border)
        ring = ~_interior((h, w), 1)
        anchors = len(head.mask)
        det_keep.append(np.broadcast_to(cells, (anchors, h, w)).reshape(-1))
        region = np.broadcast_to(cells[None, :, :, None], hb.shape)
        bad, diff, tol = _compare(ha, hb, region, rtol, atol)
        if bad.any():
            problems.append(_report(f"{label}, shape {hb.shape}", ha, hb, bad, diff, tol,
                                    ("n", "y", "x", "c"),
                                    np.broadcast_to(ring[None, :, :, None], hb.shape)))
    da = np.asarray(out_a.detections, np.float64)
    db = np.asarray(out_b.detections, np.float64)
    if da.shape != db.shape:
        problems.append(f"detections: shape {da.shape} (a) != {db.shape} (b)")
    elif not problems and db.size:
        keep = np.concatenate(det_keep) if det_keep else np.ones(db.shape[1], bool)
        region = np.broadcast_to(keep[None, :, None], db.shape)
        bad, diff, tol = _compare(da, db, region, rtol, atol)
        if bad.any():
            problems.append(_report("detections", da, db, bad, diff, tol,
                                    ("n", "box", "column"), None))
    problems += _compare_output(out_a, out_b, bool(out_b.heads), rtol, atol, border)
    if problems:
        border_note = f" (outside a {border}-cell border)" if border else ""
        raise AssertionError(f"programs differ{border_note}:\n" + "\n".join(problems))
