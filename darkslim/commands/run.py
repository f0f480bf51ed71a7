"""`darkslim run MODEL.cfg WEIGHTS --input X --out OUT.npz`: one forward pass.

X is a ``.npy`` float32 NCHW array in [0, 1] (used as is) or an image file
(letterboxed to the cfg's size). OUT.npz holds ``head_0``, ``head_1``, ... (the raw
maps feeding each detection layer -- ``[yolo]``, ``[Gaussian_yolo]``, ``[region]`` --
NCHW as Darknet and torch lay them out), ``detections`` ``(N, boxes, 5 + classes)``:
cx, cy, w, h in input pixels, objectness, class scores, and always ``output``: the
last layer's output, NCHW (a classifier's softmax).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import frontends
import ir
import runtime
from darkslim.ui import load_for_running


class InputError(ValueError):
    """A ``--input`` array that is not an NCHW float image batch for this cfg."""


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a forward pass, save raw heads and detections",
                       description=__doc__.split("\n\n", 1)[1].replace("``", ""))
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS",
                   help=".weights (or *.conv.N), .pt/.pth, .msgpack")
    p.add_argument("--input", required=True, metavar="X",
                   help=".npy float32 NCHW in [0, 1], or an image file")
    p.add_argument("--out", required=True, metavar="OUT.npz")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="BatchNorm eps the weights were trained with (default: Darknet's "
                   "1e-5; for torch checkpoints the layout's own, folded into the "
                   "running variances on load)")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept a .weights file holding fewer convs than the cfg (the "
                   "rest freshly initialised); *.conv.N backbones are always accepted")
    p.set_defaults(func=run)


def read_input(path: str, graph: ir.Graph) -> np.ndarray:
    """The network input as NHWC float32, from a .npy NCHW array or an image file."""
    if Path(path).suffix.lower() != ".npy":
        boxed, _, _ = runtime.letterbox(runtime.load_image(path),
                                        (graph.height, graph.width))
        return boxed[None]
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:  # not a .npy file, or one holding pickled objects
        raise InputError(f"{path}: not a readable .npy array ({exc}): expected float32 "
                         "NCHW in [0, 1]") from None
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != graph.channels:
        raise InputError(f"{path}: array of shape {array.shape}: expected NCHW "
                         f"(N, {graph.channels}, H, W) for {graph.path}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{path}: dtype {array.dtype}: expected float32 in [0, 1]")
    return np.ascontiguousarray(array.astype(np.float32).transpose(0, 2, 3, 1))


def save_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file in the same folder)."""
    with frontends.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def run(args) -> int:
    console = Console()
    graph = ir.parse_cfg(args.cfg)
    runtime.check_supported(graph)
    x = read_input(args.input, graph)
    loaded, eps = load_for_running(console, graph, args.weights, args.bn_eps,
                                   allow_partial=args.allow_partial)
    out = runtime.forward(graph, loaded.variables, x, bn_eps=eps)
    arrays = {f"head_{k}": np.asarray(h).transpose(0, 3, 1, 2)
              for k, h in enumerate(out.heads)}
    arrays["detections"] = np.asarray(out.detections)
    arrays["output"] = np.asarray(out.output).transpose(0, 3, 1, 2)
    save_npz(args.out, arrays)

    table = Table(title=f"darkslim run {Path(args.cfg).name}", show_edge=False)
    for column in ("output", "shape", "min", "max"):
        table.add_column(column, justify="left" if column == "output" else "right")
    for name, array in arrays.items():
        table.add_row(name, "×".join(map(str, array.shape)),
                      f"{array.min():.4g}" if array.size else "-",
                      f"{array.max():.4g}" if array.size else "-")
    console.print(table)
    det = arrays["detections"]
    confident = int((det[..., 4] > 0.5).sum()) if det.size else 0
    console.print(f"input {x.shape[0]}×{x.shape[3]}×{x.shape[1]}×{x.shape[2]} (NCHW), "
                  f"{loaded.format} weights ({loaded.loaded_convs}/{loaded.total_convs} "
                  f"convs), BatchNorm eps {eps:g}: {confident} boxes with objectness "
                  f"> 0.5 → {args.out}", highlight=False)
    return 0
