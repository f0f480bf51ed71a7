"""`darkslim train DATA.data MODEL.cfg`: (sparse) training and fine-tuning with optax."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train or sparse-train a Darknet network (also fine-tuning)",
        description="Train MODEL.cfg on a Darknet dataset. With --sparsity S the BatchNorm "
        "scales γ of the prunable convs get an L1 penalty (network slimming), so "
        "`darkslim prune` can remove their channels. Fine-tuning a pruned network is "
        "the same command on the pruned cfg and weights. Writes DIR/best.weights, "
        "DIR/last.weights, DIR/checkpoint.msgpack (for --resume), DIR/history.json and "
        "a γ histogram per epoch (DIR/gamma/).")
    p.add_argument("data", metavar="DATA.data")
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("--weights", help="start from these weights (.weights/.pt/.msgpack); "
                   "default: from scratch")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--lr-schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--sparsity", "-s", type=float, default=0.0, metavar="S",
                   help="L1 penalty s on the prunable γ (0: off; the field uses 1e-4..1e-2)")
    p.add_argument("--schedule", choices=("constant", "global", "local"), default="constant",
                   help="sparsity schedule: constant s; global: s*0.01 after --switch of "
                   "the run; local: after --switch the largest 15%% of γ get s*0.01")
    p.add_argument("--switch", type=float, default=0.5, metavar="F",
                   help="fraction of the run after which global/local decay starts (0.5)")
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
                   help="continue from DIR/checkpoint.msgpack")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad images/labels (counted) instead of stopping")
    p.add_argument("--no-eval", action="store_true", help="skip the per-epoch mAP")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import jax

    import ir
    from darkslim.report import plot_gamma_histogram, prunable_gammas
    from frontends import load_variables, write_atomic
    from passes import analyze_prunability
    from runtime import init_variables
    from runtime.data import NO_AUGMENT, Augment, load_dataset, read_data_config
    from runtime.sparsity import init_gammas
    from runtime.train import TrainConfig, check_classes, data_mesh, fit, init_head_biases

    console = Console(stderr=True)
    out = Path(args.out)
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

    if args.weights:
        loaded = load_variables(graph, args.weights)
        variables = loaded.variables
        for warning in getattr(loaded, "warnings", ()):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    else:
        variables = init_head_biases(graph, init_variables(graph, args.seed))
    gamma_init = args.gamma_init
    if gamma_init is None and args.sparsity > 0 and not args.weights:
        gamma_init = 0.5
    resuming = args.resume and (out / "checkpoint.msgpack").exists()
    if gamma_init is not None and not resuming:
        variables = init_gammas(variables, gamma_init)

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch, lr=args.lr, optimizer=args.optimizer,
        momentum=args.momentum, weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
        sparsity=args.sparsity, sparsity_schedule=args.schedule,
        sparsity_fraction=args.switch, mode=args.mode, seed=args.seed,
        augment=NO_AUGMENT if args.no_augment else Augment(), precise_bn=args.precise_bn)
    mesh = data_mesh() if jax.local_device_count() > 1 else None
    devices = jax.local_device_count()
    console.print(f"training {Path(args.cfg).name} on {len(train_set)} images "
                  f"({graph.width}x{graph.height}, batch {args.batch}, {args.epochs} epochs, "
                  f"{args.optimizer} lr {args.lr:g}"
                  + (f", sparsity {args.sparsity:g} {args.schedule} ({args.mode})"
                     if args.sparsity > 0 else "")
                  + (f", {devices} devices" if devices > 1 else "") + ")", highlight=False)

    out.mkdir(parents=True, exist_ok=True)
    gamma_dir = out / "gamma"
    gamma_dir.mkdir(parents=True, exist_ok=True)
    analysis = analyze_prunability(graph, args.mode)
    plot_gamma_histogram({"start": prunable_gammas(variables, analysis)},
                         gamma_dir / "epoch_000.png", title="|γ| at the start")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=console, disable=args.quiet,
                        transient=False)
    steps_per_epoch = max(1, len(train_set) // args.batch)
    task = progress.add_task("train", total=steps_per_epoch * args.epochs, stats="")

    def on_step(info) -> None:
        m = info.metrics
        progress.update(task, completed=info.step,
                        description=f"epoch {info.epoch + 1}/{args.epochs}",
                        stats=(f"loss {m['loss']:.3f} box {m['box']:.3f} obj {m['obj']:.3f} "
                               f"cls {m['cls']:.3f} lr {info.lr:.1e} |γ| "
                               f"{m['gamma_mean']:.3f} <.01 {m['gamma_small']:.0%}"))

    def on_epoch(info) -> None:
        m = info.metrics
        plot_gamma_histogram({f"epoch {info.epoch}": prunable_gammas(info.variables,
                                                                      analysis)},
                             gamma_dir / f"epoch_{info.epoch:03d}.png",
                             title=f"|γ| after epoch {info.epoch}")
        line = (f"epoch {info.epoch:3d}  loss {m.get('loss', float('nan')):.3f}  "
                f"|γ| {m.get('gamma_mean', 0):.3f}  <0.01 {m.get('gamma_small', 0):.1%}")
        if "map50" in m:
            line += f"  mAP@0.5 {m['map50']:.3f}" + ("  (best)" if info.best else "")
        progress.console.print(line, highlight=False)

    with progress:
        result = fit(graph, variables, train_set, config, valid_set=valid_set, out_dir=out,
                     resume=args.resume, mesh=mesh, on_step=on_step, on_epoch=on_epoch)
    summary = {"history": list(result.history), "best_map50": result.best_map,
               "out": str(out)}
    console.print(f"wrote {out / 'best.weights'} and {out / 'last.weights'}"
                  + (f" (best mAP@0.5 {result.best_map:.3f})" if result.best_map is not None
                     else ""), highlight=False)
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return 0
