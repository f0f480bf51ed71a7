"""`darkslim export MODEL.cfg WEIGHTS OUT.onnx`: the network as an ONNX model.

Input ``images``: NCHW float32 in [0, 1] at the cfg's size. Outputs ``head_0``,
``head_1``, ...: the raw maps feeding each [yolo] layer (as ``darkslim run`` writes
them), or ``output`` for a network without [yolo]. --decode adds ``detections``
(N, boxes, 5 + classes) decoded as ``darkslim run`` does; --nms adds
``selected_indices`` (K, 3) from ONNX NonMaxSuppression. BatchNorm is folded into
the convs unless --no-fold-bn. The model's metadata records the source cfg and weights.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import frontends
import ir
from darkslim.ui import make_console, warn


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the network as ONNX (opset 17)",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS", help=".weights, .pt/.pth or .msgpack")
    p.add_argument("out", metavar="OUT.onnx")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--decode", action="store_true",
                   help="add `detections`: boxes cx, cy, w, h in input pixels, "
                   "objectness, class scores")
    p.add_argument("--nms", action="store_true",
                   help="add `selected_indices` (image, class, box) from ONNX "
                   "NonMaxSuppression over objectness × class score (implies --decode)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--conf", type=float, default=0.25, help="NMS score threshold")
    p.add_argument("--max-det", type=int, default=100, help="NMS boxes kept per class")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="a symbolic batch axis instead of batch 1")
    p.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="keep BatchNormalization nodes instead of folding them")
    p.add_argument("--size", type=int, nargs="+", metavar=("H", "W"),
                   help="input height (and width) instead of the cfg's")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="BatchNorm eps the weights were trained with (default: Darknet's "
                   "1e-5; torch checkpoints: the layout's own, folded on load)")
    p.set_defaults(func=run)


def source_metadata(cfg: str | Path, weights: str | Path, fmt: str) -> tuple:
    """Metadata entries naming the source files (name and SHA-256)."""
    def digest(path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    return (("darkslim.source_cfg", Path(cfg).name),
            ("darkslim.source_cfg_sha256", digest(cfg)),
            ("darkslim.source_weights", Path(weights).name),
            ("darkslim.source_weights_sha256", digest(weights)),
            ("darkslim.source_weights_format", fmt))


def run(args) -> int:
    from darkslim.onnx_deploy import export_checked
    from export import ExportOptions

    console = make_console()
    t0 = time.perf_counter()
    graph = ir.parse_cfg(args.cfg)
    if args.size:
        graph = ir.with_input_size(graph, *args.size[:2])
    loaded = frontends.load_variables(graph, args.weights, bn_eps=args.bn_eps)
    for warning in loaded.warnings:
        warn(console, warning)
    eps = args.bn_eps
    if eps is None or loaded.format == "torch":
        eps = frontends.RUNTIME_BN_EPS
    options = ExportOptions(opset=args.opset, decode=args.decode or args.nms, nms=args.nms,
                            dynamic_batch=args.dynamic_batch, fold_bn=args.fold_bn,
                            bn_eps=eps, iou_threshold=args.iou,
                            score_threshold=args.conf, max_per_class=args.max_det,
                            metadata=source_metadata(args.cfg, args.weights,
                                                     loaded.format))
    model = export_checked(graph, loaded.variables, options)
    data = model.SerializeToString()
    frontends.write_atomic(args.out, data)
    outputs = ", ".join(f"{o.name} " + "×".join(str(d.dim_value or d.dim_param)
                                                 for d in o.type.tensor_type.shape.dim)
                        for o in model.graph.output)
    console.print(f"{args.out}: opset {args.opset}, {len(model.graph.node)} nodes, "
                  f"{len(data) / 1e6:.1f} MB, BatchNorm "
                  f"{'folded' if args.fold_bn else 'kept'}; outputs {outputs} "
                  f"({time.perf_counter() - t0:.1f} s)", highlight=False, soft_wrap=True)
    return 0
