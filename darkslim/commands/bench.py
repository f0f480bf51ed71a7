"""`darkslim bench MODEL.cfg [WEIGHTS] [--size N] [--batch 1 8] [--train] [--json OUT]`.

How fast a network (a pruned one, typically) runs on this machine: the darkslim
runtime's steady-state forward latency per batch size (median of repeats, after
compiling and warming up), with --train the time of one training step (forward, the
YOLOv3 loss, backward, the sparsity penalty and an SGD update), and the compile times
apart. Random weights when WEIGHTS is omitted (latency does not depend on the values).
The device is JAX's default (a GPU where jax[cuda12] sees one) unless --device names a
platform.
"""

from __future__ import annotations

from rich.table import Table

import ir
from darkslim.ui import make_console


def _batches(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"--batch {text}: expected a positive batch size")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="forward latency and train-step time of a network "
                       "on this machine", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("cfg", metavar="MODEL.cfg")
    p.add_argument("weights", metavar="WEIGHTS", nargs="?",
                   help=".weights, .pt/.pth or .msgpack (default: random weights)")
    p.add_argument("--size", type=int, metavar="N",
                   help="input width and height (default: the cfg's)")
    p.add_argument("--batch", type=_batches, nargs="+", default=[1, 8], metavar="B",
                   help="batch sizes to time (default: 1 8)")
    p.add_argument("--train", action="store_true",
                   help="also time a training step (loss, backward, sparsity, SGD)")
    p.add_argument("--sparsity", type=float, default=1e-3, metavar="S",
                   help="with --train: the L1 penalty on the prunable γ")
    p.add_argument("--repeats", type=int, default=5, metavar="K",
                   help="timed runs per measurement; the median is reported")
    p.add_argument("--warmup", type=int, default=1, metavar="K",
                   help="untimed runs after compiling")
    p.add_argument("--device", metavar="PLATFORM",
                   help="cpu, gpu, ... (default: JAX's default device)")
    p.add_argument("--precision", choices=("default", "high", "highest"),
                   help="jax_default_matmul_precision for convs and matmuls: on NVIDIA "
                   "GPUs 'default' lets XLA use TF32 for float32; 'highest' keeps full "
                   "float32 (what the 1e-4 parity checks assume). No effect on the CPU")
    p.add_argument("--engine", action="append", default=[], metavar="NAME",
                   help="also time another engine beside the runtime (onnxruntime)")
    p.add_argument("--bn-eps", type=float, default=None, metavar="E",
                   help="torch checkpoints: the BatchNorm eps they were trained with")
    p.add_argument("--json", metavar="OUT", help="also write every figure as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from darkslim import bench as measure
    from darkslim.report import write_json

    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats {args.repeats} --warmup {args.warmup}: expected "
                         "at least one timed run and no negative warm-up")
    unknown = sorted(set(args.engine) - set(measure.ENGINES))
    if unknown:
        raise ValueError(f"--engine {','.join(unknown)}: expected one of "
                         f"{', '.join(measure.ENGINES)}")
    console = make_console()
    graph = ir.parse_cfg(args.cfg)
    if args.size:
        graph = ir.with_input_size(graph, args.size)
    ir.verify(graph)

    import jax

    if args.precision:
        jax.config.update("jax_default_matmul_precision", args.precision)
    device = jax.devices(args.device)[0] if args.device else jax.devices()[0]
    if args.weights:
        import frontends

        variables = frontends.load_variables(graph, args.weights, bn_eps=args.bn_eps).variables
    else:
        from runtime import init_variables

        variables = init_variables(graph)
    with console.status(f"compiling and timing on {device}..."):
        result = measure.bench(graph, variables, tuple(args.batch), train=args.train,
                               engines=tuple(args.engine), repeats=args.repeats,
                               warmup=args.warmup, sparsity=args.sparsity, device=device)
    # jax's Config declares its flags at run time: read this one from its values.
    precision = jax.config.values.get("jax_default_matmul_precision")
    result["matmul_precision"] = str(precision or "default")
    console.print(render_table(result))
    for name, facts in result["engines"].items():
        if "unavailable" in facts:
            console.print(f"{name}: not measured: {facts['unavailable']}", highlight=False)
    if args.json:
        write_json(args.json, result)
        console.print(f"wrote {args.json}")
    return 0


def render_table(result: dict) -> Table:
    """One row per batch size: latency, per image, GFLOP/s, compile; train alike."""
    table = Table(title=f"{result['cfg']} at {result['size'][1]}x{result['size'][0]}, "
                  f"{result['gflops_per_image']:.2f} BFLOPs/image; {result['device']} "
                  f"({result['device_kind']}), jax {result['jax_version']}")
    table.caption = (f"median of {result['repeats']} runs after {result['warmup']} "
                     "warm-up runs; compile time apart; train GFLOP/s counts 3× the "
                     "forward FLOPs")
    engines = [n for n, facts in result["engines"].items() if "forward_ms" in facts]
    columns = ["batch", "forward ms", "ms / image", "GFLOP/s", "compile s"]
    columns += [f"{n} ms" for n in engines]
    if "train_step_ms" in result:
        columns += ["train step ms", "train img/s", "train compile s"]
    for column in columns:
        table.add_column(column, justify="right")
    for batch, ms in result["forward_ms"].items():
        row = [batch, f"{ms:.1f}", f"{ms / int(batch):.1f}",
               f"{result['gflops_per_s']['forward'][batch]:.1f}",
               f"{result['compile_s']['forward'][batch]:.2f}"]
        row += [f"{result['engines'][n]['forward_ms'][batch]:.1f}" for n in engines]
        if "train_step_ms" in result:
            step = result["train_step_ms"][batch]
            row += [f"{step:.1f}", f"{int(batch) / step * 1e3:.1f}",
                    f"{result['compile_s']['train_step'][batch]:.2f}"]
        table.add_row(*row)
    return table
