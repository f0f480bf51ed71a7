"""`darkslim anchors DATA.data --num K --size W H`: k-means anchors for a dataset."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "anchors", help="k-means anchors for a dataset (and a cfg that uses them)",
        description="K anchors for DATA.data's training boxes, as Darknet's `detector "
        "calc_anchors`: k-means on the box shapes scaled to the network size W H, with "
        "1 - IoU as the distance (seeded, best of --restarts starts). Prints them sorted "
        "by area and their mean best IoU with the boxes; with --cfg also the cfg's own "
        "anchors' mean IoU, and with --write a copy of the cfg with the new anchors in "
        "its [yolo] sections (a mask= per head by size, the largest anchors to the "
        "coarsest head; classes= set to DATA.data's, head filters follow): the cfg to "
        "train on your data.")
    p.add_argument("data", metavar="DATA.data")
    p.add_argument("--num", type=int, default=None, metavar="K",
                   help="number of anchors (default: the --cfg's num=, else 9)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None,
                   help="network width and height (default: the --cfg's)")
    p.add_argument("--cfg", metavar="MODEL.cfg", help="compare with (and --write into) "
                   "this cfg")
    p.add_argument("--write", metavar="OUT.cfg", help="write MODEL.cfg with the new "
                   "anchors and DATA.data's class count (atomically); needs --cfg")
    p.add_argument("--iou-thresh", type=float, default=0.213, metavar="T",
                   help="with --write: the [yolo] iou_thresh to write (0.213, YOLOv4's: every "
                        "anchor overlapping a box by more than T is a positive, so refit "
                        "anchors, often near-duplicates, do not split one object's "
                        "objectness among look-alike slots; 1: the best anchor only)")
    p.add_argument("--json", metavar="OUT", help="write the anchors and mean IoUs as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restarts", type=int, default=10,
                   help="k-means starts, the best mean IoU kept (Darknet: 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    import ir
    from darkslim.ui import make_console
    from frontends import write_atomic
    from runtime.anchors import box_shapes, cfg_anchors, kmeans_anchors, mean_best_iou, with_anchors
    from runtime.data import load_dataset, read_data_config

    if args.write and not args.cfg:
        raise ValueError(f"--write {args.write}: needs --cfg MODEL.cfg to write into")
    graph = ir.parse_cfg(Path(args.cfg)) if args.cfg else None
    if args.size is not None:
        width, height = args.size
    elif graph is not None:
        width, height = graph.width, graph.height
    else:
        raise ValueError("--size W H: expected the network size (or --cfg MODEL.cfg to "
                         "take it from)")
    if width < 1 or height < 1:
        raise ValueError(f"--size {width} {height}: expected positive sizes")
    k = args.num
    if k is None:
        heads = graph.yolo_indices() if graph is not None else ()
        first = graph.layers[heads[0]] if graph is not None and heads else None
        k = len(first.anchors) if isinstance(first, ir.Yolo) else 9
    dataset = load_dataset(args.data, "train")
    wh = box_shapes((s.labels for s in dataset.samples), width, height)
    result = kmeans_anchors(wh, k, seed=args.seed, restarts=args.restarts)
    out = make_console()
    out.print(f"{result.boxes} boxes in {len(dataset)} images of {args.data}, network "
              f"{width}x{height}, k={k} (seed {args.seed}, best of {args.restarts})",
              highlight=False)
    out.print("anchors = " + ", ".join(f"{w},{h}" for w, h in result.anchors),
              highlight=False)
    out.print(f"mean IoU {result.mean_iou:.4f} (new anchors)", highlight=False)
    summary = {"data": str(args.data), "width": width, "height": height, "num": k,
               "seed": args.seed, "restarts": args.restarts, "boxes": result.boxes,
               "anchors": [list(a) for a in result.anchors], "mean_iou": result.mean_iou}
    if graph is not None and graph.yolo_indices():
        own = cfg_anchors(graph)
        own_iou = mean_best_iou(wh, own)
        same_size = (graph.width, graph.height) == (width, height)
        out.print(f"mean IoU {own_iou:.4f} ({args.cfg}'s {len(own)} anchors"
                  + ("" if same_size else f", made for {graph.width}x{graph.height}")
                  + ")", highlight=False)
        summary["cfg"] = str(args.cfg)
        summary["cfg_anchors"] = [list(a) for a in own]
        summary["cfg_mean_iou"] = own_iou
    if args.write:
        assert graph is not None  # --write needs --cfg (checked above)
        classes = read_data_config(args.data).classes
        written = with_anchors(graph, result.anchors, width=width, height=height,
                               classes=classes, iou_thresh=args.iou_thresh)
        write_atomic(Path(args.write), ir.write_cfg(written).encode())
        yolos = [(i, layer) for i, layer in enumerate(written.layers)
                 if isinstance(layer, ir.Yolo)]
        masks = "; ".join(f"layer {i}: mask={','.join(map(str, head.mask))}"
                          for i, head in yolos)
        out.print(f"wrote {args.write} ({masks}; classes={classes} as in {args.data}; "
                  f"iou_thresh={args.iou_thresh:g})",
                  highlight=False)
        summary["written"] = str(args.write)
    if args.json:
        write_atomic(Path(args.json), json.dumps(summary, indent=1).encode())
    return 0
