"""`darkslim export MODEL.cfg WEIGHTS OUT.onnx`: the network as an ONNX model.

Input ``images``: NCHW float32 in [0, 1] at the cfg's size. Outputs ``head_0``,
``head_1``, ...: the raw maps feeding each [yolo] layer (as ``darkslim run`` writes
them), or ``output`` for a network without [yolo]. --decode adds ``detections``
(N, boxes, 5 + classes) decoded as ``darkslim run`` does; --nms adds
``selected_indices`` (K, 3) from ONNX NonMaxSuppression. BatchNorm is folded into
the convs unless --no-fold-bn. The model's metadata records the source cfg and weights.
--int8 --calib DATA.data quantizes it (QDQ, onnxruntime) and writes int8_report.json
beside it, or refuses, writing nothing, when mAP@0.5 drops more than --max-map-drop.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import frontends
import ir
from darkslim.ui import load_for_running, make_console


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
    q = p.add_argument_group(
        "INT8", "static post-training quantization (onnxruntime, QDQ: int8 weights per "
        "output channel, 8-bit activations calibrated on training images); decode and "
        "NMS stay float. Writes int8_report.json beside OUT.onnx: mAP@0.5 float vs INT8, "
        "each head's SNR, latency float vs INT8. Refuses (writing nothing) when the mAP "
        "drop exceeds --max-map-drop")
    q.add_argument("--int8", action="store_true", help="quantize to INT8 (needs --calib)")
    q.add_argument("--calib", metavar="DATA.data",
                   help="dataset: calibration images from its train split, mAP on valid")
    q.add_argument("--calib-images", type=int, default=64, metavar="N",
                   help="calibration images (64)")
    q.add_argument("--calib-method", choices=("minmax", "percentile", "entropy"),
                   default="minmax", help="activation range calibration (minmax)")
    q.add_argument("--activations", choices=("uint8", "int8"), default="uint8",
                   help="activation type (uint8: the U8S8 kernels of x86 CPUs)")
    q.add_argument("--keep-float", default="auto", metavar="auto|none|first,last|LAYER,...",
                   help="layers kept float; auto keeps the first conv and the head convs "
                   "float only when that measurably raises mAP (auto)")
    q.add_argument("--max-map-drop", type=float, default=0.02, metavar="D",
                   help="refuse when float mAP@0.5 − INT8 mAP@0.5 exceeds D (0.02)")
    q.add_argument("--engine", default="onnxruntime", choices=("onnxruntime", "openvino"),
                   help="where the INT8 model is certified and timed (onnxruntime)")
    q.add_argument("--latency-repeats", type=int, default=20, metavar="R",
                   help="interleaved timed runs per model, batch 1 (20; 0: not timed)")
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
    if args.int8 and not args.calib:
        raise ValueError("--int8 needs --calib DATA.data (calibration and mAP images)")
    if not args.int8:
        for flag, given in (("--calib", args.calib is not None),
                            ("--engine", args.engine != "onnxruntime")):
            if given:
                raise ValueError(f"{flag} is an --int8 option: add --int8")
    if args.int8:
        from darkslim.int8 import check_engine

        check_engine(args.engine)
        if not Path(args.out).resolve().parent.is_dir():  # before minutes of work
            raise ValueError(f"{args.out}: its folder does not exist: expected the output "
                             "path in an existing folder")
    graph = ir.parse_cfg(args.cfg)
    if args.size:
        graph = ir.with_input_size(graph, *args.size[:2])
    loaded, eps = load_for_running(console, graph, args.weights, args.bn_eps)
    options = ExportOptions(opset=args.opset, decode=args.decode or args.nms, nms=args.nms,
                            dynamic_batch=args.dynamic_batch, fold_bn=args.fold_bn,
                            bn_eps=eps, iou_threshold=args.iou,
                            score_threshold=args.conf, max_per_class=args.max_det,
                            metadata=source_metadata(args.cfg, args.weights,
                                                     loaded.format))
    model = export_checked(graph, loaded.variables, options)
    report = None
    if args.int8:
        model, report = _int8(args, graph, model, console)
    data = model.SerializeToString()
    frontends.write_atomic(args.out, data)
    if report is not None:
        from darkslim.int8 import file_record

        report["file"] = file_record(Path(args.out).name, data)
        frontends.write_atomic(Path(args.out).with_name("int8_report.json"),
                               json.dumps(report, indent=1))
    outputs = ", ".join(f"{o.name} " + "×".join(str(d.dim_value or d.dim_param)
                                                 for d in o.type.tensor_type.shape.dim)
                        for o in model.graph.output)
    console.print(f"{args.out}: opset {args.opset}, {len(model.graph.node)} nodes, "
                  f"{len(data) / 1e6:.1f} MB, BatchNorm "
                  f"{'folded' if args.fold_bn else 'kept'}; outputs {outputs} "
                  f"({time.perf_counter() - t0:.1f} s)", highlight=False, soft_wrap=True)
    return 0


def _int8(args, graph, model, console):
    """Quantize ``model``; print the certificate; raise `Int8Refused` (after printing
    the refused certificate to stderr) when the mAP drop is over the limit."""
    import sys

    from rich.markup import escape

    from darkslim.int8 import (
        Int8Refused,
        calibration_images,
        int8_export,
        parse_keep_float,
        summary_lines,
    )
    from runtime.data import load_dataset, read_data_config
    from runtime.train import check_classes

    config = read_data_config(args.calib)
    check_classes(graph, config.classes, args.calib)
    train, valid = load_dataset(config, "train"), load_dataset(config, "valid")
    for split, ds in (("train", train), ("valid", valid)):
        if not len(ds):
            raise ValueError(f"{args.calib}: the {split} split has no images")
    keep = parse_keep_float(args.keep_float, graph)
    images = calibration_images(train, graph, args.calib_images)
    try:
        result = int8_export(
            graph, model, calibration=images, valid=valid, keep_float=keep,
            method=args.calib_method, activations=args.activations,
            max_map_drop=args.max_map_drop, latency_repeats=args.latency_repeats,
            engine=args.engine, settings={"calib": str(args.calib)},
            on_stage=lambda s: console.print(f"[dim]int8: {s}[/]", highlight=False))
    except Int8Refused as refused:
        sys.stderr.write(json.dumps(refused.report, indent=1) + "\n")
        raise
    for line in summary_lines(result.report):
        console.print(escape(line), highlight=False, soft_wrap=True)
    return result.model, result.report
