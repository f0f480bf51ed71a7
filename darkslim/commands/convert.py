"""`darkslim convert MODEL.cfg IN OUT`: weights from one format to another, by suffix.

Any direction among Darknet ``.weights`` (also ``*.conv.N`` backbones), torch
``.pt``/``.pth`` (ultralytics or eriklindernoren layout) and Flax ``.msgpack``.
"""

from __future__ import annotations

from rich.markup import escape

import frontends
import ir
from darkslim.ui import make_console, warn


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert weights between .weights, .pt/.pth and .msgpack",
        description="Convert MODEL.cfg's weights from IN to OUT; formats by suffix: "
        ".weights (Darknet; also backbones like darknet53.conv.74), .pt/.pth (torch "
        "checkpoint, ultralytics or eriklindernoren layout), .msgpack (Flax).")
    p.add_argument("cfg", metavar="MODEL.cfg", help="the network's Darknet cfg")
    p.add_argument("input", metavar="IN", help="weights to read")
    p.add_argument("output", metavar="OUT", help="weights to write (atomically)")
    p.add_argument("--layout", choices=frontends.LAYOUTS, default=None,
                   help="key layout of a torch OUT (default: IN's when IN is torch, "
                   "else ultralytics)")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="BatchNorm eps of the torch checkpoint(s) involved (default per "
                   "layout: ultralytics 1e-4, erik 1e-5); darkslim computes with 1e-5 "
                   "and folds the difference into the running variances, so the "
                   "network's function is kept. --bn-eps 1e-5 keeps the values as is")
    p.add_argument("--anchor-buffers", action="store_true",
                   help="erik OUT: include the yolo_{i}.anchors/anchor_grid buffers "
                   "(newer eriklindernoren code registers them; kept when IN had them)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed initialising the convs a partial .weights file lacks")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept a .weights file holding fewer convs than the cfg (the "
                   "rest freshly initialised); *.conv.N backbones are always accepted")
    p.add_argument("--partial", type=int, default=None, metavar="N",
                   help="write only the first N layers' weights, byte for byte what "
                   "`darknet partial MODEL.cfg IN OUT N` writes (header 0.2.5, seen 0): a "
                   "backbone to train another cfg from, e.g. yolov3-tiny.conv.15. OUT "
                   "must be a Darknet file; a Darknet IN is read only up to layer N")
    p.set_defaults(func=run)


def _describe(loaded: frontends.LoadedWeights) -> str:
    header = loaded.header
    if loaded.format == "darknet":
        what = f"Darknet .weights ({header})"
    elif loaded.format == "torch":
        what = (f"torch {header.container}, {header.layout} layout, BN eps "
                f"{header.bn_eps:g}")
    else:
        what = "Flax msgpack"
    return f"{what}: {loaded.loaded_convs} of {loaded.total_convs} convs"


def _run_partial(args, out) -> int:
    """``--partial N``: Darknet's ``partial``: ``load_weights_upto`` then
    ``save_weights_upto``, header 0.2.5 and seen 0."""
    graph = ir.parse_cfg(args.cfg)
    if frontends.format_of(args.output) != "darknet":
        raise frontends.WeightsError(
            f"{args.output}: --partial {args.partial} writes a Darknet file: expected OUT "
            "named *.weights or *.conv.N (e.g. yolov3-tiny.conv.15)")
    if not 1 <= args.partial <= len(graph.layers):
        raise frontends.WeightsError(
            f"{args.output}: --partial {args.partial}: expected a layer count in 1.."
            f"{len(graph.layers)} ({args.cfg} has {len(graph.layers)} layers)")
    loaded = frontends.load_variables(graph, args.input, bn_eps=args.bn_eps,
                                      seed=args.seed, upto=args.partial)
    held = [i for i in frontends.darknet.weighted_layers(graph) if i < args.partial]
    if loaded.format == "darknet" and loaded.loaded_convs < len(held):
        raise frontends.WeightsError(
            f"{args.input}: holds {loaded.loaded_convs} convs, --partial {args.partial} "
            f"needs the {len(held)} before layer {args.partial}")
    out.print(f"[bold]read[/]  {escape(args.input)}: {escape(_describe(loaded))}",
              highlight=False)
    frontends.write_partial(graph, loaded.variables, args.output, args.partial)
    last = (f"up to layer {held[-1]} ([{graph.layers[held[-1]].kind}] at "
            f"{args.cfg}:{graph.layers[held[-1]].line})") if held else "none"
    out.print(f"[bold]wrote[/] {escape(args.output)}: Darknet .weights "
              f"({escape(str(frontends.PARTIAL_HEADER))}), the first {args.partial} layers: "
              f"{len(held)} convs ({escape(last)})", highlight=False)
    return 0


def run(args) -> int:
    out = make_console()
    if args.partial is not None:
        return _run_partial(args, out)
    graph = ir.parse_cfg(args.cfg)
    loaded = frontends.load_variables(graph, args.input, bn_eps=args.bn_eps,
                                      seed=args.seed, allow_partial=args.allow_partial)
    out.print(f"[bold]read[/]  {escape(args.input)}: {escape(_describe(loaded))}",
              highlight=False)
    if loaded.format == "torch" and loaded.header.bn_eps != frontends.RUNTIME_BN_EPS:
        out.print(f"      BN eps {loaded.header.bn_eps:g} -> "
                  f"{frontends.RUNTIME_BN_EPS:g}: running variances shifted by "
                  f"{loaded.header.bn_eps - frontends.RUNTIME_BN_EPS:+g}", highlight=False)
    fmt = frontends.format_of(args.output)
    if args.bn_eps is not None and "torch" not in (loaded.format, fmt):
        warn(out, "--bn-eps applies to torch checkpoints only: ignored")
    layout = None
    if fmt == "torch":
        meta = loaded.header
        meta = meta if isinstance(meta, frontends.CheckpointMeta) else None
        layout = args.layout or (meta.layout if meta else "ultralytics")
    warnings = frontends.save_variables(
        graph, loaded.variables, args.output, layout=layout, bn_eps=args.bn_eps,
        header=loaded.header, anchor_buffers=args.anchor_buffers or None)
    shown = set()
    for warning in (*loaded.warnings, *warnings):
        text = warning.split(": ", 1)[-1]  # the same fact about IN and OUT: say it once
        if text in shown:
            continue
        shown.add(text)
        if warning.startswith("WARNING"):  # an inexact conversion: loudly
            out.print(f"[bold red]{escape(warning)}[/]", highlight=False)
        else:
            warn(out, warning)
    if fmt == "torch":
        assert layout is not None  # set above for torch
        eps = args.bn_eps if args.bn_eps is not None else (
            loaded.header.bn_eps if isinstance(loaded.header, frontends.CheckpointMeta)
            and loaded.header.layout == layout else frontends.DEFAULT_BN_EPS[layout])
        container = "checkpoint dict" if layout == "ultralytics" else "state_dict"
        what = f"torch {container}, {layout} layout, BN eps {eps:g}"
    elif fmt == "darknet":
        header = frontends.darknet_header_of(loaded.header) or frontends.DarknetHeader()
        what = f"Darknet .weights ({header})"
    else:
        what = "Flax msgpack"
    out.print(f"[bold]wrote[/] {escape(args.output)}: {escape(what)}, "
              f"{loaded.total_convs} convs", highlight=False)
    return 0
