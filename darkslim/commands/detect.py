"""`darkslim detect MODEL.cfg WEIGHTS IMAGE|DIR... --out DIR`: boxes on photos.

As Darknet's ``detector test``: each image is resized to the network's size with
Darknet's own bilinear resize (or letterboxed when the cfg's [net] says
letter_box=1, or with --letterbox), every detection head is decoded, a box is kept
for every class whose score (objectness × class probability) is above --conf, boxes
are suppressed per class at IoU --iou (the last head's nms_kind), and the boxes are
mapped back to the image's pixels. Writes each image with its boxes drawn into DIR
and every detection (image, class, name, score, x1 y1 x2 y2 in image pixels) to
--json (default DIR/detections.json).
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

import ir
import runtime
from darkslim.ui import load_for_running, make_console


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="draw a network's detections on photos",
                       description=__doc__.split("\n\n", 1)[1].replace("``", ""))
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS",
                   help=".weights (or *.conv.N), .pt/.pth, .msgpack")
    p.add_argument("inputs", nargs="+", metavar="IMAGE|DIR",
                   help="image files, or folders whose images are all read")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the drawn images (created)")
    p.add_argument("--names", metavar="F", help="class names, one a line (default: "
                   "MODEL.names, or the only *.names beside the cfg; else class ids)")
    p.add_argument("--conf", type=float, default=0.25, metavar="C",
                   help="score threshold, Darknet's -thresh (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, metavar="I",
                   help="per-class NMS threshold (Darknet: 0.45; 0 turns NMS off)")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="run the network at N×N instead of the cfg's width×height")
    p.add_argument("--letterbox", action="store_true",
                   help="letterbox even when the cfg does not say letter_box=1")
    p.add_argument("--json", default=None, metavar="J",
                   help="the detections file (default DIR/detections.json)")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="BatchNorm eps the weights were trained with (default: Darknet's "
                   "1e-5)")
    p.set_defaults(func=run)


def _check_settings(args) -> None:
    from darkslim.detections import DetectInputError

    if not 0.0 <= args.conf < 1.0:
        raise DetectInputError(f"--conf {args.conf}: expected a score in [0, 1)")
    if not 0.0 <= args.iou <= 1.0:
        raise DetectInputError(f"--iou {args.iou}: expected an IoU in [0, 1]")
    if args.size is not None and args.size <= 0:
        raise DetectInputError(f"--size {args.size}: expected a positive size in pixels")


def run(args) -> int:
    from darkslim.detections import (
        DetectInputError,
        ImageResult,
        default_names,
        detections_record,
        draw_detections,
        list_images,
        output_names,
        read_names,
        write_image,
        write_json,
    )
    from runtime.detect import detect_image, letter_box

    console = make_console()
    _check_settings(args)
    graph = ir.parse_cfg(args.cfg)
    if args.size is not None:
        graph = ir.with_input_size(graph, args.size)
        try:
            ir.verify(graph)
        except ir.CfgError as exc:
            raise DetectInputError(f"--size {args.size}: the network does not fit this "
                                   f"size (try a multiple of 32): {exc}") from exc
    ir.verify(graph)
    runtime.check_supported(graph)
    heads = graph.head_indices()
    if not heads:
        raise DetectInputError(f"{args.cfg}: no detection layer ([yolo], "
                               "[Gaussian_yolo], [region], [detection]): nothing to detect")
    if graph.channels != 3:
        raise DetectInputError(f"{args.cfg}: [net] channels={graph.channels}: detect "
                               "reads colour photos, expected channels=3")
    classes = max(graph.layers[i].classes for i in heads)  # type: ignore[union-attr]
    images = list_images(args.inputs)
    names_path = args.names or default_names(args.cfg)
    names = (read_names(names_path, classes) if names_path is not None
             else tuple(f"class {k}" for k in range(classes)))

    loaded, eps = load_for_running(console, graph, args.weights, args.bn_eps)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else out_dir / "detections.json"
    boxed = args.letterbox or letter_box(graph)
    console.print(f"{Path(args.cfg).name} at {graph.width}×{graph.height} "
                  f"({'letterbox' if boxed else 'resize'}), {loaded.format} weights, "
                  f"conf {args.conf:g}, NMS IoU {args.iou:g}, names "
                  f"{escape(str(names_path)) if names_path else '(class ids)'}: "
                  f"{len(images)} image{'s' * (len(images) != 1)}", highlight=False)

    results = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), console=console, transient=True,
                        disable=len(images) < 3)
    with progress:
        task = progress.add_task("detect", total=len(images))
        for path, name in zip(images, output_names(images), strict=True):
            image = runtime.load_image(path)
            found, _, _ = detect_image(graph, loaded.variables, image, letterbox=boxed,
                                       thresh=args.conf, nms=args.iou, bn_eps=eps)
            drawn = out_dir / name
            write_image(drawn, draw_detections(image, found, names))
            result = ImageResult(image=str(path), width=image.shape[1],
                                 height=image.shape[0], output=str(drawn),
                                 detections=found)
            results.append(result)
            progress.console.print(_summary(result, names), highlight=False)
            progress.advance(task)

    settings = {"cfg": str(args.cfg), "weights": str(args.weights),
                "width": graph.width, "height": graph.height, "letterbox": boxed,
                "conf": args.conf, "iou": args.iou,
                "names": str(names_path) if names_path else None}
    write_json(json_path, detections_record(results, names, settings))
    total = sum(len(r.detections) for r in results)
    console.print(f"{total} box{'es' * (total != 1)} in {len(results)} "
                  f"image{'s' * (len(results) != 1)}: drawn in {escape(str(out_dir))}, "
                  f"listed in {escape(str(json_path))}", highlight=False)
    return 0


def _summary(result, names) -> str:
    """``dog.jpg 768×576: 6 boxes: dog 0.81, car 0.71, ...`` (strongest first)."""
    found = sorted(result.detections, key=lambda d: -d.score)
    what = ", ".join(f"{escape(names[d.class_id])} {d.score:.2f}" for d in found)
    count = f"{len(found)} box{'es' * (len(found) != 1)}"
    return (f"[bold]{escape(Path(result.image).name)}[/] {result.width}×{result.height}: "
            f"{count}" + (f": {what}" if what else ""))
