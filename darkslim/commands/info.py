"""`darkslim info MODEL.cfg [--weights W]`: the layer table, shapes, params, BFLOPs."""

from __future__ import annotations

from rich.table import Table

import ir
import passes
from darkslim.ui import make_console, warn


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="layer table: shapes, params, BFLOPs, prunable?")
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("--weights", metavar="W", help="also load and check a weights file "
                   "(.weights, .pt/.pth, .msgpack)")
    p.add_argument("--mode", choices=("regular", "shortcut"), default="regular",
                   help="prunability mode shown in the last column")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="torch checkpoints: the BatchNorm eps they were trained with")
    p.set_defaults(func=run)


def _describe(layer: ir.Layer) -> str:
    return ir.spec_of(layer).describe(layer)  # each kind's row (`ir.kinds`)


#: The table's words for each reason code (`passes.analysis.BlockReason`); the full
#: text is `passes.Prunability.reasons`.
_R = passes.BlockReason
_WORDS = {
    _R.HEAD: "feeds {kind}", _R.NO_BN: "no BN", _R.ACROSS_CHANNELS: "across-channel op",
    _R.MAXPOOL_DEPTH: "maxpool_depth", _R.REORDER: "{kind}",
    _R.PER_PIXEL_SCALE: "per-pixel scale", _R.SHARED_WEIGHTS: "shared weights",
    _R.GROUPED_CONV: "grouped conv", _R.UNSUPPORTED: "unsupported layer",
    _R.READ_BY: "unknown reader", _R.PARTIAL: "partial {kind}",
    _R.ROUTE_GROUPS: "route groups", _R.SHORTCUT_REGULAR: "coupled group",
    _R.IGNORED: "ignored",
}


def short_reason(blocker: passes.Blocker) -> str:
    """A few words for the table, from the reason's code and the kind it comes from."""
    return _WORDS[blocker.code].format(kind=blocker.kind)


_KIND = {"convolutional": "conv", "shortcut": "shortcut", "route": "route",
         "upsample": "upsample", "maxpool": "maxpool", "yolo": "yolo",
         "Gaussian_yolo": "gauss_yolo", "region": "region", "sam": "sam",
         "scale_channels": "scale_ch", "reorg3d": "reorg3d", "reorg": "reorg",
         "avgpool": "avgpool", "local_avgpool": "local_avg", "dropout": "dropout",
         "softmax": "softmax", "connected": "connected", "cost": "cost", "crop": "crop"}


def run(args) -> int:
    console = make_console()
    graph = ir.parse_cfg(args.cfg)
    shapes = ir.verify(graph)
    costs = ir.layer_costs(graph, shapes)
    analysis = passes.analyze_prunability(graph, args.mode)
    table = Table(title=f"{args.cfg}  ({graph.width}x{graph.height}x{graph.channels})",
                  show_lines=False)
    for column in ("#", "layer", "line", "", "input", "output", "params", "BFLOPs",
                   f"prunable ({args.mode})"):
        table.add_column(column, justify="right" if column in ("#", "line", "params",
                                                               "BFLOPs") else "left")
    image = ir.input_shape(graph)
    for i, (layer, shape, cost) in enumerate(zip(graph.layers, shapes, costs)):
        source = shapes[i - 1] if i else image
        if isinstance(layer, (ir.Conv, ir.Connected)):  # layers with channels of their own
            blocker = analysis.code(i)
            prunable = ("[green]yes[/]" if blocker is None
                        else f"[dim]no: {short_reason(blocker)}[/]")
        else:
            prunable = ""
        table.add_row(str(i), _KIND.get(layer.kind, layer.kind), str(layer.line),
                      _describe(layer),
                      "x".join(map(str, (source.c, source.h, source.w))),
                      "x".join(map(str, (shape.c, shape.h, shape.w))),
                      f"{cost.params:,}" if cost.params else "",
                      f"{cost.flops / 1e9:.3f}" if cost.flops else "", prunable)
    owners = sum(isinstance(layer, (ir.Conv, ir.Connected)) for layer in graph.layers)
    what = "convs" if owners == len(graph.conv_indices()) else "convs/connected"
    total_params = sum(c.params for c in costs)
    total_flops = sum(c.flops for c in costs) / 1e9
    table.add_section()
    table.add_row("", "total", "", "", "", "", f"{total_params:,}", f"{total_flops:.2f}",
                  f"{len(analysis.prunable)} of {owners} {what}")
    console.print(table)
    console.print(f"[bold]{total_params:,}[/] params, [bold]{total_flops:.2f}[/] BFLOPs "
                  f"at {graph.width}x{graph.height}, {len(graph.layers)} layers")
    if args.weights:
        import frontends

        loaded = frontends.load_variables(graph, args.weights, bn_eps=args.bn_eps)
        console.print(f"weights {args.weights}: {loaded.format}, "
                      f"{loaded.loaded_convs} of {loaded.total_convs} convs loaded")
        for warning in loaded.warnings:
            warn(console, warning)
        from passes.diagnostics import sparsity_metrics

        m = sparsity_metrics(graph, loaded.variables, args.mode)
        if m:
            quantiles = ", ".join(f"q{k[len('gamma_q'):]} {v:.3g}" for k, v in m.items()
                                  if k.startswith("gamma_q"))
            console.print(
                f"prunable |γ| ({args.mode} mode): {quantiles}; "
                f"{m['gamma_below_1e-2']:.1%} below 1e-2, {m['gamma_below_1e-3']:.1%} below "
                f"1e-3; highest safe prune ratio {m['safe_prune_ratio']:.4f}, leaving "
                f"{m['params_at_safe']:,} params and {m['bflops_at_safe']:.3f} BFLOPs",
                highlight=False, soft_wrap=True)
    return 0
