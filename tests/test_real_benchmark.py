"""`benchmarks/real.py --quick`: the seed's table on real photos, at smoke size (16 train
and 8 valid raccoon photos at 128 px, one epoch per stage). Every stage must write its
files and every cell of the table must be filled; the numbers themselves are the full
benchmark's business (benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
NEEDED = (SHARED / "data" / "raccoon", SHARED / "models" / "yolov3-tiny-coco")

STAGES = ("baseline", "sparse", "pruned", "finetune", "distill", "int8")
FILLED = ("map50", "map50_95", "params", "bflops", "latency_ms", "ort_latency_ms", "wall_s")
# INT8 runs on onnxruntime only and its mAP is mAP@0.5 (the certificate's)
NOT_FOR_INT8 = ("map50_95", "latency_ms")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    missing = [str(p) for p in NEEDED if not p.exists()]
    if missing:
        pytest.skip(f"needs the raccoon set and COCO yolov3-tiny in ../shared: "
                    f"{', '.join(missing)} not found")
    out = tmp_path_factory.mktemp("real") / "run"
    report = out.parent / "real.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real.py"), "--quick",
                           "--out", str(out), "--json", str(report)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads(report.read_text()), done.stdout


def test_every_stage_wrote_its_outputs(quick):
    out, _, _ = quick
    for path in ("data/raccoon.data", "model.cfg", "anchors.json", "commands.sh",
                 "base/last.weights", "base/metrics.jsonl", "sparse/last.weights",
                 "sparse/sparsity.png", "pruned/pruned.cfg", "pruned/pruned.weights",
                 "pruned/channels.png", "pruned/checks.json", "tuned/last.weights",
                 "distilled/last.weights", "int8/tuned-int8.onnx", "int8/int8_report.json",
                 *(f"eval/{s}.json" for s in STAGES[:-1])):
        assert (out / path).is_file() and (out / path).stat().st_size > 0, path
    for stage in ("baseline", "finetune"):
        drawn = sorted((out / "detect" / stage).glob("*.jpg"))
        assert len(drawn) == 4, (stage, drawn)
    commands = (out / "commands.sh").read_text()
    for command in ("data import voc", "anchors", "--reinit-heads", "--sparsity auto",
                    "prune", "--teacher", "eval", "export", "--int8", "detect"):
        assert command in commands, command
    assert "iou_thresh=0.213" in (out / "model.cfg").read_text()


def test_every_table_cell_is_filled(quick):
    _, report, stdout = quick
    rows = {row["stage"]: row for row in report["stages"]}
    assert tuple(rows) == STAGES
    for stage, row in rows.items():
        for key in FILLED:
            if stage == "int8" and key in NOT_FOR_INT8:
                continue
            value = row[key]
            assert isinstance(value, (int, float)) and value == value, (stage, key, value)
            assert value >= 0, (stage, key, value)
        assert 0 <= row["map50"] <= 1
    # the prune shrank the network, the fine-tunes kept its shape
    assert rows["pruned"]["bflops"] < rows["baseline"]["bflops"]
    assert rows["finetune"]["params"] == rows["distill"]["params"] == rows["pruned"]["params"]
    assert rows["sparse"]["params"] == rows["baseline"]["params"]
    for stage in STAGES:  # the printed table has a row per stage
        assert f"| {stage} |" in stdout
    assert report["recipe"]["size"] == 128 and report["total_wall_s"] > 0
