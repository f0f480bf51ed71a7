"""`darkslim eval DATA.data MODEL.cfg WEIGHTS`: P, R, F1, AP per class, mAP@0.5 (the
seed's protocol) and COCO mAP@0.5:0.95."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console, JustifyMethod
from rich.table import Table

from frontends import write_atomic


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="mAP of a network on a Darknet dataset",
        description="Letterbox the images of the valid split, keep boxes with objectness "
        ">= --conf, per-class NMS at --nms, match at IoU --iou (the seed's protocol: 0.01, "
        "0.5, 0.5) and report precision, recall, F1 and AP per class, mAP@0.5, and COCO "
        "mAP@0.5:0.95 through pycocotools.")
    p.add_argument("data", metavar="DATA.data")
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS")
    p.add_argument("--split", choices=("valid", "train"), default="valid")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--conf", type=float, default=0.01, help="objectness threshold (0.01)")
    p.add_argument("--nms", type=float, default=0.5, help="NMS IoU (0.5)")
    p.add_argument("--iou", type=float, default=0.5, help="match IoU for AP (0.5)")
    p.add_argument("--bn-eps", type=float, default=1e-5)
    p.add_argument("--no-coco", action="store_true", help="skip pycocotools' mAP@0.5:0.95")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.set_defaults(func=run)


def results_table(result, title: str = "") -> Table:
    """A rich table of an `runtime.metrics.EvalResult`."""
    m = result.metrics
    table = Table(title=title or None, title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("class", "left"), ("truths", "right"), ("P", "right"), ("R", "right"),
        ("F1", "right"), ("AP@0.5", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for c, n, p, r, f, ap in zip(m.classes, m.truths, m.precision, m.recall, m.f1, m.ap):
        name = result.names[c] if c < len(result.names) else str(c)
        table.add_row(name, str(n), f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", f"{ap:.3f}")
    table.add_section()
    table.add_row("all", str(sum(m.truths)), "", "", "", f"{result.map50:.3f}")
    return table


def run(args) -> int:
    import ir
    from frontends import load_variables
    from runtime.data import load_dataset, read_data_config
    from runtime.metrics import evaluate
    from runtime.train import check_classes

    console = Console()
    graph = ir.parse_cfg(Path(args.cfg))
    ir.verify(graph)
    config = read_data_config(args.data)
    check_classes(graph, config.classes, args.data)
    dataset = load_dataset(config, args.split, skip_bad=args.skip_bad)
    if dataset.skipped:
        Console(stderr=True).print(f"[yellow]skipped {len(dataset.skipped)} bad images[/] "
                                   f"(first: {dataset.skipped[0]})", highlight=False)
    if not len(dataset):
        raise ValueError(f"{args.data}: the {args.split} split has no images")
    variables = load_variables(graph, args.weights).variables
    result = evaluate(graph, variables, dataset, batch_size=args.batch,
                      conf_thres=args.conf, nms_thres=args.nms, iou_thres=args.iou,
                      bn_eps=args.bn_eps, coco=not args.no_coco)
    console.print(results_table(result, f"{Path(args.weights).name} on {len(dataset)} "
                                f"{args.split} images (P/R/F1 at conf "
                                f"{result.metrics.conf:.3f}, the best mean F1)"))
    console.print(f"mAP@0.5 {result.map50:.4f}", highlight=False)
    if result.map5095 is not None:
        console.print(f"COCO mAP@0.5:0.95 {result.map5095:.4f}  (COCO AP@0.5 "
                      f"{result.coco_map50:.4f}, 101-point)", highlight=False)
    if args.json:
        payload = {"data": str(args.data), "cfg": str(args.cfg), "weights": str(args.weights),
                   "split": args.split, "conf_thres": args.conf, "nms_thres": args.nms,
                   "iou_thres": args.iou, **result.as_dict()}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(args.json), json.dumps(payload, indent=1))
    return 0
