"""`darkslim synth OUT_DIR`: a seeded synthetic Darknet dataset and a detector cfg for it."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from rich.console import Console


def synth_cfg_path() -> Path:
    """The shipped template of the demo detector (a yolov3-tiny-style cfg for CPU)."""
    return Path(str(importlib.resources.files("darkslim") / "data" / "synth-tiny.cfg"))


def add_parser(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic Darknet dataset and a model.cfg",
                       description="Seeded images of shapes (circle, square, triangle) on "
                       "textured backgrounds with exact boxes, in Darknet format "
                       "(.data, .names, list files, images/, labels/), plus a model.cfg "
                       "adapted to its classes, size and k-means anchors.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--train", type=int, default=512, help="training images (512)")
    p.add_argument("--valid", type=int, default=128, help="validation images (128)")
    p.add_argument("--size", type=int, default=128, help="image and network side (128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", default=None,
                   help="template cfg for model.cfg (default: the shipped synth-tiny.cfg)")
    p.set_defaults(func=run)


def run(args) -> int:
    import ir
    from frontends import write_atomic
    from runtime.synth import write_synth

    if args.train < 1 or args.valid < 1 or args.size < 32 or args.size % 32:
        raise ValueError(f"--train {args.train} --valid {args.valid} --size {args.size}: "
                         "expected at least one image per split and a size that is a "
                         "multiple of 32")
    template = ir.parse_cfg(Path(args.cfg) if args.cfg else synth_cfg_path())
    out = write_synth(args.out_dir, train=args.train, valid=args.valid, size=args.size,
                      seed=args.seed, cfg=template, write=write_atomic)
    console = Console()
    console.print(f"wrote {args.train} train + {args.valid} valid images "
                  f"({args.size}x{args.size}) to {out.root}")
    console.print(f"  data:   {out.data}\n  model:  {out.cfg}\n  anchors: "
                  + ", ".join(f"{w}x{h}" for w, h in out.anchors), highlight=False)
    console.print(f"next: darkslim train {out.data} {out.cfg} --epochs 30 --out "
                  f"{Path(args.out_dir) / 'run'}", highlight=False)
    return 0
