"""The whole slimming loop on the embedded synthetic dataset.

synth data → sparse training (L1 on γ) → prune (threshold from the γ distribution)
→ fine-tune → INT8 (`export --int8`'s path) → the seed's table: mAP@0.5, params, BFLOPs
and CPU latency before pruning, after pruning and after fine-tuning, plus the fine-tuned
network quantized to INT8 (onnxruntime only). Library code: it reports through callbacks
and writes files; `darkslim demo` prints.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import frontends
import ir
import passes
from darkslim import report as reports
from darkslim.check import measure_prune_diffs
from ir import Variables
from passes.analysis import Mode


@dataclass(frozen=True)
class DemoConfig:
    """What the demo does; `QUICK` is the CI-sized variant."""

    train: int = 512
    valid: int = 128
    size: int = 128
    seed: int = 0
    epochs: int = 30
    batch: int = 16
    lr: float = 3e-3
    sparsity: float = 2e-2      # s, or with schedule "auto" the controller's start
    schedule: str = "auto"
    target_prune: float = 0.55  # auto: steer s until this share of |γ| is below 1e-2
    reach: float = 0.5          # auto: ... by this fraction of the sparse epochs
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3
    percent: float | None = None
    min_percent: float = 0.55
    round_to: int = 16
    mode: Mode = "regular"
    narrow: int = 1
    # A batch-1 forward of this net takes ~1 ms: 200 interleaved runs (~0.5 s) keep the
    # before/after ratio within ±0.02 across runs, where 20 runs scattered it 1.11-1.34.
    latency_repeats: int = 200
    # INT8 of the fine-tuned network, as `export --int8` does it (static QDQ, keep-float
    # auto): calibration images from the train split, mAP@0.5 on the valid split;
    # refused (no row, the certificate still written) when mAP drops by more than this.
    int8: bool = True
    calib_images: int = 64
    int8_max_drop: float = 0.02


QUICK = DemoConfig(train=96, valid=32, size=64, epochs=6, batch=16, finetune_epochs=2,
                   narrow=2, latency_repeats=5, calib_images=16)
INT8_ONNX = "pruned-int8.onnx"
INT8_REPORT = "int8_report.json"


@dataclass(frozen=True)
class Stage:
    """One row of the seed's table; ``latency_ms`` is None for the INT8 row (darkslim's
    runtime runs float only)."""

    name: str
    map50: float
    params: int
    bflops: float
    latency_ms: float | None
    onnx_latency_ms: float | None = None


@dataclass(frozen=True)
class DemoResult:
    stages: tuple[Stage, ...]
    prune: passes.SlimReport
    checks: dict
    out: Path
    files: tuple[str, ...]
    seconds: dict
    sparse_history: tuple[dict, ...] = ()
    int8: dict | None = None  # int8_report.json's content (None: config.int8 off)

    @property
    def table(self) -> list[dict]:
        return [dataclasses.asdict(s) for s in self.stages]


def template_cfg() -> ir.Graph:
    """The shipped yolov3-tiny-style demo detector."""
    text = importlib.resources.files("darkslim.data").joinpath("synth-tiny.cfg").read_text()
    return ir.parse_cfg(text)


def choose_percent(graph: ir.Graph, variables: Variables, analysis: passes.Prunability,
                   floor: float = 0.5, collapsed: float = 0.01, step: float = 0.05) -> float:
    """The prune ratio read off the γ distribution: the share of prunable |γ| that
    sparse training drove below ``collapsed`` (rounded down to ``step``), at least
    ``floor``, and always below the safe threshold (no layer emptied by the global
    rule; the largest grid point under it when that is lower)."""
    gammas = reports.prunable_gammas(variables, analysis)
    safe = passes.compute_threshold(graph, variables, analysis, percent=0.0).safe_percent
    below_safe = max(0.0, (np.ceil(safe / 0.01) - 1) * 0.01)
    share = np.floor(float((gammas < collapsed).mean()) / step) * step
    return float(min(below_safe, max(floor, share)))


def _chain(*callbacks):
    """One ``on_epoch`` calling each of ``callbacks`` that is not None."""
    def call(info) -> None:
        for callback in callbacks:
            if callback is not None:
                callback(info)
    return call


def run_demo(config: DemoConfig, out: str | Path, *,
             on_stage: Callable[[str], None] = lambda s: None,
             on_step: Callable[[Any], None] | None = None,
             on_epoch: Callable[[Any], None] | None = None) -> DemoResult:
    """Run the loop and write ``out/``: data/, sparse/ (with metrics.jsonl and
    sparsity.png), finetune/, pruned.cfg, pruned.weights (the fine-tuned compact
    network), report.md, report.json, gamma_before.png, gamma_after.png, channels.png,
    and with ``config.int8`` pruned-int8.onnx (when accepted) and int8_report.json."""
    import time

    from darkslim.latency import measure_latency
    from darkslim.trainlog import RunWriter
    from runtime import init_variables
    from runtime.data import load_dataset
    from runtime.metrics import evaluate
    from runtime.sparsity import init_gammas
    from runtime.synth import write_synth
    from runtime.train import TrainConfig, fit, init_head_biases

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    on_stage("synthetic dataset")
    template = template_cfg()
    if config.narrow > 1:
        template = ir.narrow(template, config.narrow, min_filters=4)
    data = write_synth(out / "data", train=config.train, valid=config.valid,
                       size=config.size, seed=config.seed, cfg=template,
                       write=frontends.write_atomic)
    assert data.cfg is not None  # written from the template
    graph = ir.parse_cfg(data.cfg)
    train_set = load_dataset(data.data, "train")
    valid_set = load_dataset(data.data, "valid")
    lap("data")

    on_stage("sparse training")
    analysis = passes.analyze_prunability(graph, config.mode)
    variables = init_gammas(init_head_biases(graph, init_variables(graph, config.seed)), 0.5)
    gamma_before = reports.prunable_gammas(variables, analysis)
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch, lr=config.lr,
                               sparsity=config.sparsity, sparsity_schedule=config.schedule,
                               target_prune=config.target_prune,
                               sparsity_fraction=config.reach, mode=config.mode,
                               seed=config.seed)
    sparse_run = fit(graph, variables, train_set, train_config, out_dir=out / "sparse",
                 on_step=on_step, on_epoch=_chain(RunWriter(
                     graph, out / "sparse", title="demo: sparse training"), on_epoch))
    sparse = sparse_run.variables
    gamma_after = reports.prunable_gammas(sparse, analysis)
    lap("sparse training")

    on_stage("pruning")
    percent = config.percent if config.percent is not None else choose_percent(
        graph, sparse, analysis, floor=config.min_percent)
    # Channel counts in multiples of 16 suit the CPU's vector units: on the demo's sparse
    # weights at 55%, latency fell 1.17x for 1.62x fewer FLOPs with multiples of 8 and
    # 1.23x for 1.45x with multiples of 16 (the demo's bar: 0.8x the FLOP ratio).
    result = passes.prune(graph, sparse, passes.SlimChannels(
        percent=percent, mode=config.mode, round_to=config.round_to))
    diffs = measure_prune_diffs(graph, result)
    compact_graph, compact_vars = result.compact
    lap("prune")

    on_stage("fine-tuning")
    finetune_config = dataclasses.replace(train_config, epochs=config.finetune_epochs,
                                          lr=config.finetune_lr, sparsity=0.0,
                                          warmup_epochs=0.0)
    tuned = fit(compact_graph, compact_vars, train_set, finetune_config,
                out_dir=out / "finetune", on_step=on_step, on_epoch=_chain(RunWriter(
                    compact_graph, out / "finetune", plots=False), on_epoch)).variables
    lap("fine-tune")

    on_stage("evaluating")
    maps = [evaluate(g, v, valid_set, coco=False).map50 for g, v in
            ((graph, sparse), (compact_graph, compact_vars), (compact_graph, tuned))]
    lap("eval")
    from darkslim.onnx_deploy import export_checked, onnx_latencies

    float_models = [export_checked(g, v) for g, v in
                    ((graph, sparse), (compact_graph, tuned))]
    int8 = None
    if config.int8:
        on_stage("INT8 quantization")
        int8 = quantize_tuned(compact_graph, float_models[1], train_set, valid_set, config)
        lap("int8")
    on_stage("timing")
    before, after = measure_latency([(graph, sparse), (compact_graph, tuned)],
                                    repeats=config.latency_repeats, warmup=2)
    # One interleaved measurement over the float networks and the INT8 one, so that the
    # INT8/float ratio is as fair as the before/after one.
    quantized = () if int8 is None or int8.model is None else (int8.model,)
    onnx_ms = onnx_latencies([(graph, sparse), *[(compact_graph, tuned)] * (1 + len(quantized))],
                             repeats=config.latency_repeats,
                             models=[*float_models, *quantized])
    onnx_before, onnx_after = onnx_ms[:2]
    lap("latency")

    stages: tuple[Stage, ...] = (
        Stage("before pruning", maps[0], ir.count_params(graph),
              ir.count_flops(graph) / 1e9, before.median_ms, onnx_before),
        Stage("after pruning", maps[1], ir.count_params(compact_graph),
              ir.count_flops(compact_graph) / 1e9, after.median_ms, onnx_after),
        Stage("after fine-tuning", maps[2], ir.count_params(compact_graph),
              ir.count_flops(compact_graph) / 1e9, after.median_ms, onnx_after),
    )
    files: tuple[str, ...] = ()
    if int8 is not None:
        if quantized:
            stages += (Stage("fine-tuned INT8", int8.report["map50"]["int8"],
                             ir.count_params(compact_graph),
                             ir.count_flops(compact_graph) / 1e9, None, onnx_ms[2]),)
            int8.report["latency"] = {
                "engine": "onnxruntime", "batch": 1, "repeats": config.latency_repeats,
                "float_ms": onnx_after, "int8_ms": onnx_ms[2],
                "ratio": onnx_ms[2] / onnx_after,
                "statistic": "median of interleaved runs (with the unpruned network)"}
            frontends.write_atomic(out / INT8_ONNX, int8.data)
            files += (INT8_ONNX,)
        reports.write_json(out / INT8_REPORT, int8.report)
        files += (INT8_REPORT,)
    reports.write_text(out / "pruned.cfg", ir.write_cfg(compact_graph))
    frontends.save_variables(compact_graph, tuned, out / "pruned.weights")
    reports.plot_gamma_histogram({"before sparse training": gamma_before}, out /
                                 "gamma_before.png", title="|γ| before sparse training")
    reports.plot_gamma_histogram({"after sparse training": gamma_after},
                                 out / "gamma_after.png", threshold=result.threshold.value,
                                 title="|γ| after sparse training")
    reports.plot_channels_kept(result.report, out / "channels.png")
    demo = DemoResult(stages=stages, prune=result.report, checks=diffs, out=out,
                      files=("pruned.cfg", "pruned.weights", "report.md", "report.json",
                             "gamma_before.png", "gamma_after.png", "channels.png",
                             "sparse/metrics.jsonl", "sparse/sparsity.png", *files),
                      seconds=seconds,
                      sparse_history=tuple({k: v for k, v in row.items() if k != "gamma_hist"}
                                           for row in sparse_run.history),
                      int8=None if int8 is None else int8.report)
    reports.write_json(out / "report.json", {
        "config": dataclasses.asdict(config), "stages": demo.table,
        "sparse_s": [row["s"] for row in demo.sparse_history],
        "prune": passes.report_to_json(result.report), "checks": diffs,
        "int8": None if int8 is None else {
            "file": INT8_ONNX if quantized else None, "report": INT8_REPORT,
            "accepted": int8.report["accepted"], "map50": int8.report["map50"],
            "keep_float": int8.report["settings"]["keep_float"]},
        "seconds": seconds})
    reports.write_text(out / "report.md", markdown_report(demo, config))
    return demo


@dataclass(frozen=True)
class _Int8:
    """`quantize_tuned`'s result: the certificate, and the model (None: refused)."""

    report: dict
    model: Any = None
    data: bytes = b""


def quantize_tuned(graph: ir.Graph, model, train_set, valid_set, config: DemoConfig) -> _Int8:
    """``export --int8``'s path (`darkslim.int8.int8_export`, keep-float auto) on the
    fine-tuned network's float export ``model``; not timed here (the demo times it
    interleaved with the float networks). A refusal keeps its certificate."""
    from darkslim.int8 import Int8Refused, calibration_images, file_record, int8_export

    images = calibration_images(train_set, graph, config.calib_images)
    try:
        result = int8_export(graph, model, calibration=images, valid=valid_set,
                             max_map_drop=config.int8_max_drop, latency_repeats=0,
                             settings={"calib": "the demo's train split (mAP: valid)"})
    except Int8Refused as refused:
        return _Int8({**refused.report, "file": None})
    data = result.model.SerializeToString()
    report = {**result.report, "file": file_record(INT8_ONNX, data)}
    return _Int8(report, result.model, data)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def markdown_table(stages: tuple[Stage, ...]) -> str:
    lines = ["| | mAP@0.5 | params | BFLOPs | CPU latency (batch 1, median) "
             "| onnxruntime latency |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in stages:
        lines.append(f"| {s.name} | {s.map50:.4f} | {s.params:,} | {s.bflops:.3f} | "
                     f"{_ms(s.latency_ms)} | {_ms(s.onnx_latency_ms)} |")
    return "\n".join(lines)


def _sparsity_text(demo: DemoResult, config: DemoConfig) -> str:
    if config.schedule != "auto":
        return f"s = {config.sparsity:g} ({config.schedule})"
    s = [round(row["s"], 4) for row in demo.sparse_history]
    return (f"s steered automatically from {config.sparsity:g} toward "
            f"{config.target_prune:.0%} of |γ| below 1e-2 by {config.reach:.0%} of the "
            f"run (s per epoch: {', '.join(f'{v:g}' for v in s)}; sparse/metrics.jsonl, "
            "sparse/sparsity.png)")


def int8_summary(report: dict | None) -> str:
    """One sentence on the INT8 row: how it was made, its mAP drop, its speed."""
    if report is None:
        return ""
    m, s, lat = report["map50"], report["settings"], report["latency"]
    kept = ", ".join(map(str, s["keep_float"])) or "none"
    head = (f"INT8: `export --int8`'s static QDQ quantization ({s['calibration_images']} "
            f"calibration images from the train split, {s['method']}, float layers: {kept})")
    if not report["accepted"]:
        return (f"{head} was refused: mAP@0.5 (onnxruntime) {m['float']:.4f} → "
                f"{m['int8']:.4f}, drop {m['drop']:.4f} > {m['max_drop']:g}; see "
                f"{INT8_REPORT}.")
    return (f"{head}: mAP@0.5 on onnxruntime {m['float']:.4f} float → {m['int8']:.4f} INT8 "
            f"(drop {m['drop']:+.4f}, limit {m['max_drop']:g}); onnxruntime latency "
            f"{lat['int8_ms']:.2f} ms vs {lat['float_ms']:.2f} ms float "
            f"({lat['ratio']:.2f}×, timed interleaved with the float rows); {INT8_ONNX}, "
            f"{INT8_REPORT}.")


def _int8_text(demo: DemoResult) -> str:
    text = int8_summary(demo.int8)
    return f"\n{text}\n" if text else ""


def markdown_report(demo: DemoResult, config: DemoConfig) -> str:
    r, t = demo.prune, demo.prune.threshold
    kept = "\n".join(f"| {i} | {k} | {total} |" for i, k, total in r.channels)
    prunable_kept, prunable_total = r.prunable_channels
    checks = demo.checks
    return f"""# darkslim demo

Synthetic dataset: {config.train} train / {config.valid} valid images at {config.size} px
(seed {config.seed}). Sparse training {config.epochs} epochs, {_sparsity_text(demo, config)};
pruned with `{r.text}` (percent {t.percent:.2f}, threshold {t.value:.4g}, channel counts
rounded up to multiples of {r.round_to}; highest safe threshold {t.safe_value:.4g} =
percent {t.safe_percent:.3f}); fine-tuned
{config.finetune_epochs} epochs.

{markdown_table(demo.stages)}
{_int8_text(demo)}
Prunable channels {prunable_total} → {prunable_kept};
max |keep-size − compact| = {checks['max_abs_diff_keepsize_vs_compact']:.2e};
max |γ-zeroed − compact| = {checks['max_abs_diff_gamma_zeroed_vs_compact']:.2e} (border effect).

![γ before](gamma_before.png) ![γ after](gamma_after.png)

![channels kept](channels.png)

| conv | kept | of |
| ---: | ---: | ---: |
{kept}

Stage times (s): {json.dumps(demo.seconds)}
"""
