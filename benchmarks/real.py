"""The seed's table on real photos: network slimming of a COCO-pretrained detector on a
real VOC set, every stage run through the `darkslim` CLI as a user types it.

Stages (each a CLI command; its output goes to OUT/logs/STAGE.log, its command line to
OUT/commands.sh):

1. ``data import voc``: the VOC folder -> a Darknet dataset (the set's own split);
2. ``anchors --write``: k-means anchors, the COCO cfg rewritten for the set's classes;
3. ``train --reinit-heads`` from the COCO weights: the baseline;
4. ``train --sparsity auto`` from the baseline: sparse training;
5. ``prune``: network slimming at ``--percent``;
6. ``train`` on the pruned network: plain, and with ``--teacher`` (the baseline);
7. ``eval`` of every stage's weights; ``export --int8`` of the fine-tuned network.

Then every network is exported to ONNX (BN folded) and timed at batch 1 in darkslim's
runtime and in onnxruntime, all interleaved in one run (load from other processes
falls on all alike), with the INT8 export beside them. ``detect`` draws four valid
photos before (baseline) and after (fine-tuned). The table goes to stdout, to
``--json`` (one object per stage with the columns as keys: ``map50``, ``map50_95``,
``params``, ``bflops``, ``latency_ms``, ``ort_latency_ms``, ``wall_s``) and, with
``--readme``, into benchmarks/README.md between the ``real.py`` markers.

    .venv/bin/python benchmarks/real.py --out /tmp/real --json /tmp/real/real.json
    .venv/bin/python benchmarks/real.py --voc DIR --valid-fraction 0.2 --seed 0 --out O --json J
    .venv/bin/python benchmarks/real.py --quick --out /tmp/q --json /tmp/q/real.json  # smoke

Every figure is of ``last.weights``: the valid photos are the test photos, so picking
the best epoch on them would flatter every row (``train`` still logs mAP per epoch).

Defaults: ``../shared/data/raccoon`` with its CSV split, ``../shared/models/yolov3-tiny-coco``
at 416. ``--device gpu`` runs the JAX stages on a GPU (``JAX_PLATFORMS=cuda``).
``--seeds N`` repeats both fine-tunes with N seeds and reports the mean (distillation's
goal is a mean over 3). Every batch, augmentation and initialisation is a function of
the seeds: two runs give the same mAP on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
RACCOON = SHARED / "data" / "raccoon"
COCO = SHARED / "models" / "yolov3-tiny-coco"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- real.py: begin -->", "<!-- real.py: end -->"


@dataclass(frozen=True)
class Recipe:
    """What each stage trains with (the full run's values are the ones measured best on
    the raccoon set; see benchmarks/README.md)."""

    size: int = 416
    batch: int = 16
    base_epochs: int = 16
    base_lr: float = 1e-3
    freeze: int = 13
    freeze_epochs: int = 2
    sparse_epochs: int = 8
    sparse_lr: float = 1e-3
    target_prune: float = 0.6
    s_init: float = 0.01
    gamma_lr: float = 20.0
    percent: float = 0.45
    round_to: int = 16
    tune_epochs: int = 16
    tune_lr: float = 1e-3
    distill_weight: float = 0.1  # measured: 1.0 lost 0.11 mAP on raccoon, 0.1 gained
    train_images: int = 0    # 0: all
    valid_images: int = 0
    latency_repeats: int = 15
    calib_images: int = 64
    per_epoch_eval: bool = True   # only to watch: every figure is of last.weights
    precise_bn: int = 8


QUICK = Recipe(size=128, batch=8, base_epochs=1, freeze_epochs=0, sparse_epochs=1,
               tune_epochs=1, train_images=16, valid_images=8, latency_repeats=3,
               calib_images=8, percent=0.5, per_epoch_eval=False, precise_bn=0)


class StageFailed(RuntimeError):
    pass


class Runner:
    """Runs CLI commands, logs them, times them."""

    def __init__(self, out: Path, device: str):
        self.out = out
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.commands = out / "commands.sh"
        self.commands.write_text("#!/bin/sh\n# the commands benchmarks/real.py ran, in order\n")
        self.env = dict(os.environ, JAX_PLATFORMS="cuda" if device == "gpu" else "cpu")

    def __call__(self, stage: str, *argv: str) -> float:
        line = "darkslim " + " ".join(_quote(a) for a in argv)
        with self.commands.open("a") as f:
            f.write(line + "\n")
        log = self.out / "logs" / f"{stage}.log"
        start = time.perf_counter()
        with log.open("w") as f:
            f.write(f"$ {line}\n")
            f.flush()
            done = subprocess.run([sys.executable, "-m", "darkslim", *argv], stdout=f,
                                  stderr=subprocess.STDOUT, env=self.env, cwd=self.out)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = "".join(log.read_text().splitlines(True)[-15:])
            raise StageFailed(f"stage {stage} failed (exit {done.returncode}): {line}\n"
                              f"last lines of {log}:\n{tail}")
        return wall


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:,@" for c in arg) else repr(arg)


def _limit(data: Path, train: int, valid: int) -> Path:
    """A copy of DATA.data whose lists hold the first ``train``/``valid`` images."""
    if not train and not valid:
        return data
    text = data.read_text()
    out = data.with_name("quick.data")
    for split, n in (("train", train), ("valid", valid)):
        listed = (data.parent / f"{split}.txt").read_text().splitlines()
        (data.parent / f"{split}-quick.txt").write_text("\n".join(listed[:n]) + "\n")
        text = text.replace(f"{split}={split}.txt", f"{split}={split}-quick.txt")
    out.write_text(text)
    return out


def run(args, recipe: Recipe) -> list[dict]:
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        raise StageFailed(f"{out}: exists and is not empty: expected a new folder")
    out.mkdir(parents=True, exist_ok=True)
    cli = Runner(out, args.device)
    rows: dict[str, dict] = {}
    walls: dict[str, float] = {}
    s = str(recipe.size)

    split = (["--split", *map(str, args.split)] if args.split else
             ["--valid-fraction", str(args.valid_fraction), "--seed", str(args.seed)]
             if args.valid_fraction else [])
    if not split and args.voc == RACCOON:
        split = ["--split", str(RACCOON / "data" / "train_labels.csv"),
                 str(RACCOON / "data" / "test_labels.csv")]
    walls["import"] = cli("import", "data", "import", "voc", str(args.voc), *split,
                          "--out", "data")
    data = _limit(next((out / "data").glob("*.data")), recipe.train_images,
                  recipe.valid_images).relative_to(out)  # commands as a user types them
    walls["anchors"] = cli("anchors", "anchors", str(data), "--num", "6", "--size", s, s,
                           "--cfg", str(args.cfg), "--write", "model.cfg", "--json",
                           "anchors.json")

    train = ("train", str(data))
    watch = (("--precise-bn", str(recipe.precise_bn))
             + (() if recipe.per_epoch_eval else ("--no-eval",)))
    common = ("--batch", str(recipe.batch), "--seed", str(args.seed), "--quiet", *watch)
    walls["baseline"] = cli(
        "baseline", *train, "model.cfg", "--weights", str(args.weights), "--reinit-heads",
        *(("--freeze", str(recipe.freeze), "--freeze-epochs", str(recipe.freeze_epochs))
          if recipe.freeze_epochs else ()),
        "--epochs", str(recipe.base_epochs), "--lr", str(recipe.base_lr), *common,
        "--out", "base")
    walls["sparse"] = cli(
        "sparse", *train, "model.cfg", "--weights", "base/last.weights", "--sparsity", "auto",
        "--s-init", str(recipe.s_init), "--target-prune", str(recipe.target_prune),
        "--gamma-lr", str(recipe.gamma_lr), "--epochs", str(recipe.sparse_epochs),
        "--lr", str(recipe.sparse_lr), *common, "--out", "sparse")
    walls["pruned"] = cli("prune", "prune", "model.cfg", "sparse/last.weights", "--percent",
                         str(recipe.percent), "--round-to", str(recipe.round_to), "--data",
                         str(data), "--out", "pruned")
    seeds = range(args.seed, args.seed + args.seeds)
    for seed in seeds:
        tag = "" if seed == args.seed else f"-seed{seed}"
        tune = (*train, "pruned/pruned.cfg", "--weights", "pruned/pruned.weights",
                "--epochs", str(recipe.tune_epochs), "--lr", str(recipe.tune_lr),
                "--batch", str(recipe.batch), "--seed", str(seed), "--quiet", *watch)
        walls["finetune" + tag] = cli("finetune" + tag, *tune, "--out", "tuned" + tag)
        walls["distill" + tag] = cli(
            "distill" + tag, *tune, "--teacher", "model.cfg", "base/last.weights",
            "--distill-weight", str(recipe.distill_weight), "--out", "distilled" + tag)

    networks = {"baseline": ("model.cfg", "base/last.weights"),
                "sparse": ("model.cfg", "sparse/last.weights"),
                "pruned": ("pruned/pruned.cfg", "pruned/pruned.weights"),
                "finetune": ("pruned/pruned.cfg", "tuned/last.weights"),
                "distill": ("pruned/pruned.cfg", "distilled/last.weights")}
    for stage, (cfg, weights) in networks.items():
        walls[stage] = walls.get(stage, 0.0) + cli(
            f"eval-{stage}", "eval", str(data), cfg, weights, "--json", f"eval/{stage}.json")
        evaluated = json.loads((out / "eval" / f"{stage}.json").read_text())
        rows[stage] = {"stage": stage, "cfg": cfg, "weights": weights,
                       "map50": evaluated["map50"], "map50_95": evaluated["map50_95"]}
    for seed in seeds:
        if seed == args.seed:
            continue
        for stage, folder in (("finetune", "tuned"), ("distill", "distilled")):
            tag = f"-seed{seed}"
            cli(f"eval-{stage}{tag}", "eval", str(data), "pruned/pruned.cfg",
                f"{folder}{tag}/last.weights", "--no-coco", "--json", f"eval/{stage}{tag}.json")
    for stage in ("finetune", "distill"):
        names = [stage + ("" if seed == args.seed else f"-seed{seed}") for seed in seeds]
        values = [json.loads((out / "eval" / f"{n}.json").read_text())["map50"] for n in names]
        rows[stage]["map50_seeds"] = values
        rows[stage]["map50_mean"] = statistics.fmean(values)

    (out / "int8").mkdir(exist_ok=True)
    walls["int8"] = cli("int8", "export", "pruned/pruned.cfg", "tuned/last.weights",
                        "int8/tuned-int8.onnx", "--int8", "--calib", str(data),
                        "--calib-images", str(recipe.calib_images), "--max-map-drop", "1")
    report = json.loads((out / "int8" / "int8_report.json").read_text())
    rows["int8"] = {"stage": "int8", "cfg": "pruned/pruned.cfg",
                    "weights": "int8/tuned-int8.onnx", "map50": report["map50"]["int8"],
                    "map50_95": None, "map50_float": report["map50"]["float"],
                    "keep_float": report["settings"]["keep_float"],
                    "min_head_snr_db": min((h["snr_db"] for h in report["heads"]
                                            if h["snr_db"] is not None), default=None)}

    valid = [line for line in (out / data.parent / _valid_list(out / data)).read_text()
             .splitlines()
             if line][:4]
    photos = [Path(p) if Path(p).is_absolute() else data.parent / p for p in valid]
    names = next((out / data.parent).glob("*.names"), None)
    for stage in ("baseline", "finetune"):
        cfg, weights = networks[stage]
        # Darknet's 0.25 is a COCO-trained threshold; a short run on a small set calibrates
        # objectness lower, so draw at the confidence of eval's best F1 unless told
        conf = (args.detect_conf if args.detect_conf is not None else
                json.loads((out / "eval" / f"{stage}.json").read_text())["conf"])
        rows[stage]["detect_conf"] = conf
        cli(f"detect-{stage}", "detect", cfg, weights, *map(str, photos), "--out",
            f"detect/{stage}", "--conf", f"{conf:.4g}", "--letterbox",
            *(("--names", str(names.relative_to(out))) if names else ()))

    _measure(out, networks, rows, recipe)
    for stage in rows:
        rows[stage]["wall_s"] = walls.get(stage, 0.0)
    return [rows[k] for k in ("baseline", "sparse", "pruned", "finetune", "distill", "int8")]


def _valid_list(data: Path) -> str:
    for line in data.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "valid":
            return value.strip()
    raise ValueError(f"{data}: no valid= line")


def _measure(out: Path, networks: dict, rows: dict, recipe: Recipe) -> None:
    """Params, BFLOPs and batch-1 latency of every network, interleaved in one run."""
    import frontends
    import ir
    from darkslim.latency import measure_latency, measure_onnx_latency
    from darkslim.onnx_deploy import export_checked
    from export import ExportOptions

    programs = {}
    for stage, (cfg, weights) in networks.items():
        graph = ir.parse_cfg(out / cfg)
        programs[stage] = (graph, frontends.load_variables(graph, out / weights).variables)
        rows[stage].update(params=ir.count_params(graph), bflops=ir.count_flops(graph) / 1e9)
    rows["int8"].update(params=rows["finetune"]["params"], bflops=rows["finetune"]["bflops"])
    stages = list(programs)
    runtime = measure_latency([programs[k] for k in stages], repeats=recipe.latency_repeats)
    for stage, timing in zip(stages, runtime):
        rows[stage]["latency_ms"] = timing.median_ms
    rows["int8"]["latency_ms"] = None  # INT8 runs on onnxruntime only
    models = [export_checked(*programs[k], ExportOptions()) for k in stages]
    models.append((out / "int8" / "tuned-int8.onnx").read_bytes())
    chw = [(s.c, s.h, s.w) for s in (ir.input_shape(programs[k][0]) for k in stages)]
    ort = measure_onnx_latency(models, [*chw, chw[stages.index("finetune")]],
                               repeats=recipe.latency_repeats)
    for stage, timing in zip([*stages, "int8"], ort):
        rows[stage]["ort_latency_ms"] = timing.median_ms


COLUMNS = (("stage", "stage", "{}"), ("mAP@0.5", "map50", "{:.4f}"),
           ("mAP@0.5:0.95", "map50_95", "{:.4f}"), ("params", "params", "{:,}"),
           ("BFLOPs", "bflops", "{:.3f}"), ("darkslim ms", "latency_ms", "{:.1f}"),
           ("onnxruntime ms", "ort_latency_ms", "{:.1f}"), ("wall s", "wall_s", "{:.0f}"))


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| " + " | ".join(c for c, _, _ in COLUMNS) + " | BFLOPs × | ort speed-up |",
             "|" + "---|" * (len(COLUMNS) + 2)]
    for row in rows:
        cells = ["—" if row.get(k) is None else f.format(row[k]) for _, k, f in COLUMNS]
        ratio = row["bflops"] / base["bflops"]
        speed = base["ort_latency_ms"] / row["ort_latency_ms"]
        lines.append("| " + " | ".join(cells) + f" | {ratio:.2f} | {speed:.2f}× |")
    return "\n".join(lines)


def _write_readme(text: str) -> None:
    current = README.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + block + rest.split(END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voc", type=Path, default=RACCOON, help="a VOC folder (raccoon)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--split", nargs=2, type=Path, metavar=("TRAIN", "VALID"))
    group.add_argument("--valid-fraction", type=float, metavar="F")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="fine-tune plain and distilled with N seeds (mean reported)")
    parser.add_argument("--cfg", type=Path, default=COCO / "yolov3-tiny.cfg")
    parser.add_argument("--weights", type=Path, default=COCO / "yolov3-tiny.weights")
    parser.add_argument("--quick", action="store_true", help="smoke size: a handful of "
                        "photos at 128 px, one epoch per stage")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--detect-conf", type=float, default=None,
                        help="detect's score threshold (default: the confidence of each "
                             "network's best F1 in eval)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--readme", action="store_true",
                        help="write the table into benchmarks/README.md")
    parser.add_argument("--set", nargs="*", default=(), metavar="FIELD=VALUE",
                        help="override recipe fields, e.g. tune_epochs=20")
    args = parser.parse_args(argv)
    for path in (args.voc, args.cfg, args.weights):
        if not path.exists():
            parser.error(f"{path}: not found (the defaults live in ../shared beside the "
                         "repository)")
    recipe = QUICK if args.quick else Recipe()
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in Recipe.__dataclass_fields__:
            parser.error(f"--set {item}: no recipe field {key!r}")
        kind = type(getattr(recipe, key))
        parsed = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        recipe = replace(recipe, **{key: parsed})

    start = time.perf_counter()
    try:
        rows = run(args, recipe)
    except StageFailed as err:
        print(err, file=sys.stderr)
        return 1
    total = time.perf_counter() - start
    text = table(rows)
    payload = {"recipe": asdict(recipe), "voc": str(args.voc), "seed": args.seed,
               "seeds": args.seeds, "total_wall_s": total, "load": os.getloadavg(),
               "stages": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1))
    print(text)
    print(f"total {total / 60:.1f} min; files in {args.out}")
    if args.readme:
        _write_readme(text + f"\n\nTotal wall time {total / 60:.1f} min (load "
                      f"{os.getloadavg()[0]:.1f}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
