"""`darkslim train DATA.data MODEL.cfg`: (sparse) training and fine-tuning with optax."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train or sparse-train a Darknet network (also fine-tuning)",
        description="Train MODEL.cfg on a Darknet dataset. With --sparsity S the BatchNorm "
        "scales γ of the prunable convs get an L1 penalty (network slimming), so "
        "`darkslim prune` can remove their channels. Fine-tuning a pruned network is "
        "the same command on the pruned cfg and weights. Writes DIR/best.weights, "
        "DIR/last.weights, DIR/checkpoints/ (Orbax, for --resume), DIR/history.json, "
        "DIR/metrics.jsonl (one JSON object per epoch), DIR/sparsity.png and a γ "
        "histogram per epoch (DIR/gamma/). Runs unchanged on several processes or "
        "machines (jax.distributed): under SLURM or Open MPI, or with --coordinator.")
    p.add_argument("data", metavar="DATA.data")
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("--weights", help="start from these weights (.weights/.pt/.msgpack, or "
                   "a backbone such as yolov3-tiny.conv.15); default: from scratch")
    p.add_argument("--reinit-heads", action="store_true",
                   help="transfer learning: the --weights were trained for another cfg "
                   "(e.g. COCO's 80 classes): load every layer whose shapes match, "
                   "re-initialise the convs feeding a detection head (with prior "
                   "biases) and any layer whose shapes differ; prints which is which. "
                   "Without it such weights are an error")
    p.add_argument("--weights-cfg", metavar="SRC.cfg",
                   help="the cfg the --weights were trained for (default: MODEL.cfg, or "
                   "for a Darknet file MODEL.cfg with the [yolo] class count the file's "
                   "size implies)")
    p.add_argument("--freeze", type=int, default=0, metavar="N",
                   help="train only the layers from N on (Darknet's stopbackward): the "
                   "pretrained backbone stays fixed while new heads settle (0: off)")
    p.add_argument("--freeze-epochs", type=float, default=None, metavar="E",
                   help="with --freeze: lift the freeze after E epochs (default: the "
                   "whole run)")
    p.add_argument("--teacher", nargs=2, metavar=("CFG", "WEIGHTS"),
                   help="distil from this frozen teacher (e.g. the unpruned network): "
                   "per [yolo] head, BCE to its objectness and class probabilities and "
                   "squared error to its box outputs where it is confident; its head "
                   "layout must match MODEL.cfg's")
    p.add_argument("--distill-weight", type=float, default=1.0, metavar="W",
                   help="with --teacher: the weight of the distillation term (1.0)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lr-schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--sparsity", "-s", default="0", metavar="S",
                   help="L1 penalty s on the prunable γ (0: off; the field uses 1e-4..1e-2), "
                   "or 'auto': steer s between epochs until --target-prune of the prunable "
                   "|γ| are below 1e-2, then hold it (start: --s-init)")
    p.add_argument("--target-prune", type=float, default=0.5, metavar="P",
                   help="with --sparsity auto: the share of prunable γ to drive below 1e-2")
    p.add_argument("--s-init", type=float, default=0.01, metavar="S",
                   help="with --sparsity auto: the starting s (0.01)")
    p.add_argument("--schedule", choices=("constant", "global", "local"), default="constant",
                   help="sparsity schedule: constant s; global: s*0.01 after --switch of "
                   "the run; local: after --switch the largest 15%% of γ get s*0.01")
    p.add_argument("--switch", type=float, default=0.5, metavar="F",
                   help="fraction of the run after which global/local decay starts; with "
                   "--sparsity auto, by which the target should be reached (0.5)")
    p.add_argument("--gamma-lr", type=float, default=1.0, metavar="K",
                   help="with --sparsity: the penalised γ learn K times faster (Adam moves a "
                        "parameter ~lr a step, so on a short run from pretrained weights "
                        "γ ~1.7 cannot reach 0 at the shared lr; 1: off)")
    p.add_argument("--iou-thresh", type=float, default=None, metavar="T",
                   help="every anchor whose shape IoU with a box exceeds T is a positive "
                        "(overrides the [yolo] iou_thresh key; default: the cfg's, or 1: "
                        "the best anchor only)")
    p.add_argument("--mode", choices=("regular", "shortcut"), default="regular",
                   help="which γ are penalised: those `darkslim prune --mode` would prune")
    p.add_argument("--gamma-init", type=float, default=None, metavar="G",
                   help="set every γ to G first (default 0.5 when sparse training from "
                   "scratch, as network slimming does; untouched otherwise)")
    p.add_argument("--no-augment", action="store_true", help="no flip/HSV/scale augmentation")
    p.add_argument("--precise-bn", type=int, default=8, metavar="N",
                   help="re-estimate BatchNorm statistics on N batches each epoch (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in DIR/checkpoints (any "
                   "number of processes)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-process: process 0's address (or JAX_COORDINATOR_ADDRESS); "
                   "not needed under SLURM or Open MPI")
    p.add_argument("--num-processes", type=int, metavar="N",
                   help="multi-process: the number of processes (or JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, metavar="I",
                   help="multi-process: this process's id, 0..N-1 (or JAX_PROCESS_ID)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad images/labels (counted) instead of stopping")
    p.add_argument("--no-eval", action="store_true", help="skip the per-epoch mAP")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _sparsity(args) -> tuple[float, str]:
    """(s, schedule) from ``--sparsity``: a number, or ``auto`` (s starts at --s-init)."""
    if str(args.sparsity).lower() == "auto":
        if not 0 < args.target_prune < 1:
            raise ValueError(f"--target-prune {args.target_prune}: expected a share in (0, 1)")
        return args.s_init, "auto"
    try:
        return float(args.sparsity), args.schedule
    except ValueError:
        raise ValueError(f"--sparsity {args.sparsity}: expected a number or 'auto'") from None


def _terms_text(info) -> str:
    """``box 1.234 obj 0.567 cls 0.089``: each loss term's metric, by name."""
    return " ".join(f"{name} {info.metrics.get(name, 0):.3f}" for name in info.terms)


def _epoch_line(info, epochs: int) -> str:
    m = info.metrics
    line = (f"epoch {info.epoch:3d}/{epochs}  loss {m.get('loss', float('nan')):.3f} "
            f"({_terms_text(info)})  s {m.get('s', 0):.3g}")
    if "safe_prune_ratio" in m:
        line += (f"  |γ| q50 {m['gamma_q50']:.3g} <1e-2 {m['gamma_below_1e-2']:.1%} "
                 f"<1e-3 {m['gamma_below_1e-3']:.1%}  safe prune {m['safe_prune_ratio']:.1%}"
                 f" → {m['params_at_safe']:,} params {m['bflops_at_safe']:.3f} BFLOPs")
    if "map50" in m:
        line += f"  mAP@0.5 {m['map50']:.3f}" + ("  (best)" if info.best else "")
    return line


def _ranges(indices) -> str:
    """``0-2, 4, 6-8``: layer indices, runs collapsed."""
    parts: list[str] = []
    run: list[int] = []
    for i in indices:
        if run and i != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts) or "none"


def print_transfer(console, graph, report) -> None:
    """Which layers came from the weights file and which were (re-)initialised."""
    from rich.markup import escape

    from frontends.variables import where

    console.print(escape(f"loaded {len(report.loaded)} layers from {report.source} (laid "
                         f"out as {report.source_cfg}): layers {_ranges(report.loaded)}"),
                  highlight=False)
    words = {"head": "re-initialised (head)", "shape": "re-initialised (shapes differ)",
             "absent": "initialised (not in the file)"}
    for change in report.changed:
        console.print(escape(f"  {words[change.reason]}: {where(graph, change.index)}: "
                             f"{change.detail}"), highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def _teacher_term(graph, teacher, weight: float):
    """The `runtime.distill.Distill` term for ``--teacher CFG WEIGHTS``."""
    import ir
    from frontends import load_variables
    from runtime.distill import Distill, check_head_layout

    cfg, weights = teacher
    teacher_graph = ir.parse_cfg(Path(cfg))
    ir.verify(teacher_graph)
    check_head_layout(graph, teacher_graph)
    loaded = load_variables(teacher_graph, weights, allow_partial=False)
    return Distill(teacher=teacher_graph, extra=loaded.variables, weight=weight)


def run(args) -> int:
    import jax

    from runtime.parallel import initialize_distributed

    # Before anything touches a device: join the other processes, if there are any.
    cluster = initialize_distributed(args.coordinator, args.num_processes, args.process_id)

    import ir
    from darkslim.report import plot_gamma_histogram
    from darkslim.trainlog import RunWriter
    from frontends import write_atomic
    from frontends.transfer import transfer_variables
    from passes import analyze_prunability
    from passes.diagnostics import prunable_abs_gammas
    from runtime import init_variables
    from runtime.data import NO_AUGMENT, Augment, load_dataset, read_data_config
    from runtime.loss import LossConfig
    from runtime.parallel import data_mesh
    from runtime.sparsity import init_gammas
    from runtime.train import (
    CHECKPOINTS,
    Checkpointer,
    TrainConfig,
    check_classes,
    fit,
    init_head_biases,
    )

    primary = cluster.process_index == 0
    console = Console(stderr=True, quiet=not primary)
    out = Path(args.out)
    s, schedule = _sparsity(args)
    graph = ir.parse_cfg(Path(args.cfg))
    ir.verify(graph)
    config_data = read_data_config(args.data)
    check_classes(graph, config_data.classes, args.data)
    train_set = load_dataset(config_data, "train", skip_bad=args.skip_bad)
    valid_set = None
    if not args.no_eval and config_data.valid is not None:
        valid_set = load_dataset(config_data, "valid", skip_bad=args.skip_bad)
    for name, ds in (("train", train_set), ("valid", valid_set)):
        if ds is not None and ds.skipped:
            console.print(f"[yellow]skipped {len(ds.skipped)} bad {name} images[/] "
                          f"(first: {ds.skipped[0]})", highlight=False)

    if args.freeze < 0 or args.freeze >= len(graph.layers):
        raise ValueError(f"--freeze {args.freeze}: expected a layer index in 0.."
                         f"{len(graph.layers) - 1} ({args.cfg} has {len(graph.layers)} "
                         "layers; 0 trains all)")
    if args.freeze_epochs is not None and not args.freeze:
        raise ValueError(f"--freeze-epochs {args.freeze_epochs:g}: needs --freeze N")
    if (args.reinit_heads or args.weights_cfg) and not args.weights:
        raise ValueError("--reinit-heads/--weights-cfg: need --weights W to start from")
    variables: ir.Variables = init_head_biases(graph, init_variables(graph, args.seed))
    if args.weights:
        source = ir.parse_cfg(Path(args.weights_cfg)) if args.weights_cfg else None
        transfer = transfer_variables(graph, args.weights, variables,
                                      reinit_heads=args.reinit_heads, source=source)
        variables = transfer.variables
        print_transfer(console, graph, transfer.report)
    gamma_init = args.gamma_init
    if gamma_init is None and s > 0 and not args.weights:
        gamma_init = 0.5
    resuming = args.resume and Checkpointer.find_latest(out / CHECKPOINTS) is not None
    if gamma_init is not None and not resuming:
        variables = init_gammas(variables, gamma_init)

    extra_terms: tuple = ()
    if args.teacher:
        extra_terms = (_teacher_term(graph, args.teacher, args.distill_weight),)
        console.print(f"distilling from {args.teacher[0]} ({args.teacher[1]}), weight "
                      f"{args.distill_weight:g}", highlight=False)
    elif args.distill_weight != 1.0:
        raise ValueError(f"--distill-weight {args.distill_weight:g}: needs --teacher CFG "
                         "WEIGHTS")

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch, lr=args.lr, optimizer=args.optimizer,
        momentum=args.momentum, weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
        sparsity=s, sparsity_schedule=schedule, target_prune=args.target_prune,
        sparsity_fraction=args.switch, mode=args.mode, seed=args.seed,
        augment=NO_AUGMENT if args.no_augment else Augment(), precise_bn=args.precise_bn,
        freeze=args.freeze, freeze_epochs=args.freeze_epochs, gamma_lr=args.gamma_lr,
        loss=LossConfig(iou_thresh=args.iou_thresh))
    devices = jax.device_count()
    mesh = data_mesh() if devices > 1 else None
    steps_per_epoch = max(1, len(train_set) // args.batch)
    left_out = len(train_set) - steps_per_epoch * args.batch
    sparse_text = ""
    if s > 0:
        sparse_text = (f", sparsity auto → {args.target_prune:.0%} below 1e-2 from s {s:g}"
                       if schedule == "auto" else f", sparsity {s:g} {schedule}")
        sparse_text += f" ({args.mode})"
    console.print(f"training {Path(args.cfg).name} on {len(train_set)} images "
                  f"({graph.width}x{graph.height}, batch {args.batch}, {args.epochs} epochs, "
                  f"{args.optimizer} lr {args.lr:g}" + sparse_text
                  + (f", {devices} devices" if devices > 1 else "")
                  + (f" in {cluster.process_count} processes ({cluster.source})"
                     if cluster.process_count > 1 else "")
                  + (f", layers before {args.freeze} frozen"
                     + (f" for {args.freeze_epochs:g} epochs" if args.freeze_epochs
                        is not None else "") if args.freeze else "") + ")"
                  + (f"; {left_out} images past the last full batch sit out each epoch "
                     "(a different set every epoch)" if left_out else ""), highlight=False)

    gamma_dir = out / "gamma"
    analysis = analyze_prunability(graph, args.mode)
    writer = RunWriter(graph, out, title=f"{Path(args.cfg).name}: sparse training")
    if primary:
        gamma_dir.mkdir(parents=True, exist_ok=True)
        plot_gamma_histogram({"start": prunable_abs_gammas(variables, analysis)},
                             gamma_dir / "epoch_000.png", title="|γ| at the start")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console,
                        disable=args.quiet or not primary, transient=False)
    task = progress.add_task("train", total=steps_per_epoch * args.epochs, stats="")

    def on_step(info) -> None:
        m = info.metrics
        progress.update(task, completed=info.step,
                        description=f"epoch {info.epoch + 1}/{args.epochs}",
                        stats=(f"loss {m['loss']:.3f} {_terms_text(info)} "
                               f"lr {info.lr:.1e} s {m['s']:.2g} |γ| "
                               f"{m['gamma_mean']:.3f} <.01 {m['gamma_small']:.0%}"))

    def on_epoch(info) -> None:
        writer(info)
        if primary:
            plot_gamma_histogram({f"epoch {info.epoch}": prunable_abs_gammas(
                info.variables, analysis)}, gamma_dir / f"epoch_{info.epoch:03d}.png",
                title=f"|γ| after epoch {info.epoch}")
        progress.console.print(_epoch_line(info, args.epochs), highlight=False)

    with progress:
        result = fit(graph, variables, train_set, config, valid_set=valid_set, out_dir=out,
                     resume=args.resume, mesh=mesh, on_step=on_step, on_epoch=on_epoch,
                     extra_terms=extra_terms)
    if primary:
        summary = {"history": list(result.history), "best_map50": result.best_map,
                   "out": str(out), "processes": cluster.process_count, "devices": devices}
        console.print(f"wrote {out / 'best.weights'}, {out / 'last.weights'}, "
                      f"{out / 'metrics.jsonl'} and {out / 'sparsity.png'}"
                      + (f" (best mAP@0.5 {result.best_map:.3f})"
                         if result.best_map is not None else ""), highlight=False)
        write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return 0
