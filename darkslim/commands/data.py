"""`darkslim data import {voc,coco,yolo} SRC --out DIR`: an annotation set in Pascal VOC
XML, COCO JSON or the ultralytics YOLO layout, written as a Darknet dataset that
``darkslim train`` and ``eval`` read (`frontends.annotations`)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from darkslim.ui import make_console, warn

FORMATS = ("voc", "coco", "yolo")


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="import VOC, COCO or YOLO annotations as a Darknet "
                       "dataset", description="Dataset tools.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = actions.add_parser(
        "import", help="write a VOC, COCO or YOLO set as a Darknet dataset",
        description="Read Pascal VOC XML (SRC: a folder, searched recursively), a COCO "
        "instances json (SRC: the json) or an ultralytics set (SRC: data.yaml or its "
        "folder) and write OUT/NAME.data, NAME.names, train.txt, valid.txt, images/ "
        "(linked, never re-encoded), labels/ and import_report.json, atomically. The "
        "split is the source's own (--split lists, a YOLO set's train/val) or a seeded "
        "--valid-fraction. Bad input stops the import with the file and element at "
        "fault; --skip-bad leaves those images out and lists them in the report.")
    imp.add_argument("format", choices=FORMATS)
    imp.add_argument("src", metavar="SRC")
    imp.add_argument("--out", required=True, metavar="DIR")
    imp.add_argument("--name", help="name of the .data and .names files (default: "
                     "SRC's name)")
    imp.add_argument("--images", metavar="DIR", help="voc, coco: the folder of the "
                     "images (default: beside the annotations; coco: the folder named "
                     "like the json's split)")
    imp.add_argument("--split", nargs=2, metavar=("TRAIN_LIST", "VALID_LIST"),
                     help="the source's split: image lists (paths, names or ids) or CSVs "
                     "with a filename column")
    imp.add_argument("--valid-fraction", type=float, metavar="F",
                     help="a seeded random split instead (default 0.2 when the source "
                     "has no split of its own)")
    imp.add_argument("--seed", type=int, default=0, help="seed of --valid-fraction (0)")
    imp.add_argument("--classes", metavar="A,B", help="pick these classes, in this "
                     "order (boxes of the others are left out and counted)")
    imp.add_argument("--skip-bad", action="store_true", help="leave out images with bad "
                     "annotations (listed in import_report.json) instead of stopping")
    imp.add_argument("--clip", action="store_true", help="cut boxes partly outside "
                     "their image to it (each listed in import_report.json)")
    imp.add_argument("--keep-difficult", action="store_true",
                     help="voc: keep objects marked difficult (voc_label.py drops them)")
    imp.add_argument("--keep-crowd", action="store_true",
                     help="coco: keep crowd regions (iscrowd=1)")
    imp.add_argument("--link", choices=("hard", "sym", "copy"), default="hard",
                     help="how images get into DIR: hard links (copies across file "
                     "systems), symlinks or copies (hard)")
    imp.add_argument("--force", action="store_true", help="replace an existing DIR")
    imp.set_defaults(func=run)


def run(args) -> int:
    import frontends.annotations as fa
    from runtime.dataset import label_path

    src = Path(args.src)
    fa.check_out(args.out, force=args.force)  # before reading a large set
    if args.split and args.valid_fraction is not None:
        raise ValueError("--split and --valid-fraction: expected one of the two")
    if args.images and args.format == "yolo":
        raise ValueError("--images: a YOLO set's images are named by its data.yaml")
    common = {"skip_bad": args.skip_bad, "clip": args.clip}
    if args.format == "voc":
        annotations = fa.read_voc(src, images=args.images,
                                  keep_difficult=args.keep_difficult, **common)
    elif args.format == "coco":
        annotations = fa.read_coco(src, images=args.images, keep_crowd=args.keep_crowd,
                                   **common)
    else:
        annotations = fa.read_yolo(src, **common)
    if args.classes:
        annotations = fa.select_classes(
            annotations, tuple(c.strip() for c in args.classes.split(",") if c.strip()))
    if args.split:
        split = fa.split_by_lists(annotations.images, *args.split,
                                   lenient=bool(annotations.problems))
        how = f"--split {args.split[0]} {args.split[1]}"
    elif args.valid_fraction is None and any(im.split == "valid"
                                             for im in annotations.images):
        split = fa.split_by_source(annotations.images)
        how = "the source's train/val"
    else:
        fraction = 0.2 if args.valid_fraction is None else args.valid_fraction
        split = fa.split_by_fraction(annotations.images, fraction, args.seed)
        how = f"--valid-fraction {fraction} --seed {args.seed}"
    name = args.name or (src.stem if src.is_file() and src.name != "data.yaml"
                         else src.resolve().name if src.is_dir() else src.parent.name)
    report = {"command": "data import", "format": args.format, "source": str(src),
              "split": how}
    written = fa.write_darknet_dataset(args.out, split, annotations, label_path=label_path,
                                       name=name, link=args.link, force=args.force,
                                       report=report)
    _print_summary(make_console(), args, annotations, split, written, how)
    return 0


def _print_summary(console, args, annotations, split, written, how) -> None:
    from frontends.annotations import QUANTILES

    tr, va = written.train_stats, written.valid_stats
    console.print(f"imported {tr.images + va.images} images from {escape(args.src)} "
                  f"({args.format}): {tr.images} train, {va.images} valid ({escape(how)})",
                  highlight=False, soft_wrap=True)
    table = Table(title_justify="left")
    table.add_column("class")
    table.add_column("train boxes", justify="right")
    table.add_column("valid boxes", justify="right")
    for i, n in enumerate(annotations.names):
        table.add_row(escape(n), str(tr.boxes[i]), str(va.boxes[i]))
    table.add_section()
    table.add_row("all", str(sum(tr.boxes)), str(sum(va.boxes)))
    table.add_row("images without boxes", str(tr.empty_images), str(va.empty_images))
    console.print(table)
    console.print("box size: quantiles of sqrt(box area / image area); COCO sizes "
                  "small < 32² <= medium < 96² <= large (pixels²)", highlight=False,
                  soft_wrap=True)
    sizes = Table()
    sizes.add_column("split")
    for q in QUANTILES:
        sizes.add_column(f"p{round(q * 100)}", justify="right")
    for col in ("small", "medium", "large"):
        sizes.add_column(col, justify="right")
    for label, s in (("train", tr), ("valid", va)):
        qs = [f"{v:.3f}" for v in s.relative_size] or ["-"] * len(QUANTILES)
        sizes.add_row(label, *qs, str(s.small), str(s.medium), str(s.large))
    console.print(sizes)
    for what, n in annotations.left_out:
        console.print(f"left out: {n} {escape(what)}", highlight=False)
    for what, n in annotations.notes:
        console.print(f"note: {n} {escape(what)}", highlight=False)
    if split.unlisted:
        warn(console, f"{len(split.unlisted)} images in neither split list left out "
             f"(e.g. {split.unlisted[0].name}; all in {written.report})")
    if split.unmatched:
        warn(console, f"{len(split.unmatched)} split list entries name images left out "
             f"as bad (e.g. {split.unmatched[0]})")
    if annotations.problems:
        problems = annotations.problems
        dropped = sum(p.action == "image left out" for p in problems)
        clipped = sum(p.action.startswith("box clipped") for p in problems)
        warn(console, f"{len(problems)} bad inputs: {dropped} images left out, {clipped} "
             f"boxes clipped, {len(problems) - dropped - clipped} annotations left out "
             f"(all listed in {written.report})")
        for problem in problems[:5]:
            console.print(f"  {escape(str(problem))}", highlight=False, soft_wrap=True)
        if len(problems) > 5:
            console.print(f"  ... and {len(problems) - 5} more", highlight=False)
    # The paths as the user gave them (relative stays relative), for copying.
    root = Path(args.out)
    how_linked = "copies" if written.linked == "copy" else f"{written.linked} links"
    console.print(f"wrote {escape(str(root))} (images: {how_linked})\n  data: "
                  f"{escape(str(root / written.data.name))}", highlight=False)
    console.print(f"next: darkslim train {escape(str(root / written.data.name))} "
                  "MODEL.cfg --out RUN", highlight=False)
