"""`darkslim sweep`: its mAP is prune + eval's, it resumes, it refuses bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import frontends
import ir
from darkslim import sweep
from darkslim.cli import main
from darkslim.sweep import SweepError, SweepPoint, SweepSpec

# Measured fields: they differ between two runs of the same sweep.
TIMED = ("latency_ms", "latency_min_ms", "speedup", "pareto", "map")


def cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def _relabel_with_own_detections(data, graph, variables) -> None:
    """Replace the valid labels by the network's own top detections, so the unpruned
    network scores a high mAP and pruning visibly lowers it (random weights alone
    score ~0 at every ratio, which could not tell two ratios apart)."""
    import jax

    from runtime.data import NO_AUGMENT, iterate_batches, label_path, load_dataset
    from runtime.metrics import postprocess
    from runtime.model import forward

    valid = load_dataset(data.data, "valid")
    size = graph.width
    batch = next(iterate_batches(valid, (size, size), len(valid), shuffle=False,
                                 drop_last=False, augment=NO_AUGMENT, max_boxes=8))
    raw = np.asarray(jax.device_get(forward(graph, variables, batch.images).detections))
    for sample, found in zip(valid.samples, postprocess(raw, 0.01, 0.5)):
        lines = []
        for x1, y1, x2, y2, _, cls in found[:3]:
            cx, cy = (x1 + x2) / 2 / size, (y1 + y2) / 2 / size
            w, h = (x2 - x1) / size, (y2 - y1) / size
            lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        label_path(sample.image).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The demo's detector (narrowed) on a 64 px synthetic set: cfg, sparse weights,
    .data with 8 valid images labelled by the network itself."""
    from darkslim.demo import template_cfg
    from darkslim.testing import random_variables
    from runtime.synth import write_synth

    root = tmp_path_factory.mktemp("sweep")
    data = write_synth(root / "data", train=4, valid=8, size=64, seed=3,
                       cfg=ir.narrow(template_cfg(), 4, min_filters=4))
    graph = ir.parse_cfg(data.cfg)
    variables = random_variables(graph, seed=1, sparsity=0.5)
    frontends.save_variables(graph, variables, root / "w.weights")
    _relabel_with_own_detections(data, graph, variables)
    return root, data.cfg, root / "w.weights", data.data


PERCENTS = "0.3,0.6"


@pytest.fixture(scope="module")
def full_sweep(network, tmp_path_factory):
    """An uninterrupted CLI sweep of the network: its folder and sweep.json."""
    _, cfg, weights, data = network
    out = tmp_path_factory.mktemp("full")
    assert cli("sweep", cfg, weights, "--data", data, "--percents", PERCENTS,
               "--engine", "darkslim", "--latency-repeats", 1, "--out", out) == 0
    return out, json.loads((out / "sweep.json").read_text())


def test_sweep_map_equals_prune_then_eval(network, full_sweep, tmp_path, capsys):
    _, cfg, weights, data = network
    out, result = full_sweep
    rows = {r["key"]: r for r in result["points"]}
    assert list(rows) == ["layers=0,percent=0", "layers=0,percent=0.3",
                          "layers=0,percent=0.6"]
    for percent in (0.3, 0.6):
        pruned = tmp_path / f"p{percent}"
        assert cli("prune", cfg, weights, "--percent", percent, "--no-check",
                   "--out", pruned) == 0
        assert cli("eval", data, pruned / "pruned.cfg", pruned / "pruned.weights",
                   "--no-coco", "--json", pruned / "eval.json") == 0
        by_hand = json.loads((pruned / "eval.json").read_text())
        row = rows[f"layers=0,percent={percent:g}"]
        assert row["map50"] == by_hand["map50"]
        assert row["params"] == ir.count_params(ir.parse_cfg(pruned / "pruned.cfg"))
    maps = [r["map50"] for r in rows.values()]
    # the relabelled set tells the two ratios apart (a mix-up would show)
    assert maps[0] > 0.5 and maps[1] != maps[2]
    assert rows["layers=0,percent=0"]["speedup"] == 1.0
    assert all(r["latency_ms"] >= r["latency_min_ms"] > 0 for r in rows.values())
    front = {k for k, r in rows.items() if r["pareto"]}
    best = max(rows.values(), key=lambda r: (r["map"], -r["latency_ms"]))
    assert best["key"] in front  # the fastest of the best mAP is never dominated
    assert front == sweep.pareto_front(list(rows.values()))
    assert (out / "sweep.png").stat().st_size > 10_000
    state = (out / "sweep.jsonl").read_text().splitlines()
    assert len(state) == 1 + 3 and "sweep" in json.loads(state[0])


def test_sweep_resumes_and_computes_only_the_rest(network, full_sweep, tmp_path):
    _, cfg, weights, data = network
    spec = SweepSpec.of(cfg, weights, data, sweep.parse_percents(PERCENTS))
    out = tmp_path / "resumed"
    first = sweep.run_sweep(spec, out, engine="darkslim", latency_repeats=1, max_points=1)
    assert not first.complete and first.computed == ("layers=0,percent=0",)
    assert not (out / "sweep.json").exists()
    seen = []
    second = sweep.run_sweep(spec, out, engine="darkslim", latency_repeats=1,
                             on_point=seen.append)
    assert second.complete
    assert second.computed == ("layers=0,percent=0.3", "layers=0,percent=0.6")
    assert [p.key for p in seen] == list(second.computed)
    resumed = json.loads((out / "sweep.json").read_text())
    _, full = full_sweep

    def untimed(result):
        return [{k: v for k, v in r.items() if k not in TIMED} for r in result["points"]]

    assert untimed(resumed) == untimed(full)
    assert resumed["sweep"] == full["sweep"]
    # a third run finds every point done and measures none
    third = sweep.run_sweep(spec, out, engine="darkslim", latency_repeats=1)
    assert third.computed == ()

    # the folder now holds this sweep: another grid is refused, unless restarted
    other = SweepSpec.of(cfg, weights, data, (0.5,))
    with pytest.raises(SweepError, match=r"sweep.jsonl: holds a sweep of different "
                       r"arguments \(percents: \[0.3, 0.6\] -> \[0.5\]\).*--restart"):
        sweep.open_state(out, other)
    assert sweep.open_state(out, other, restart=True) == {}


def test_a_killed_state_file_write_leaves_the_old_one(tmp_path, monkeypatch):
    spec = SweepSpec(cfg="a.cfg", weights="w", data="d", percents=(0.5,))
    sweep.open_state(tmp_path, spec)
    sweep.append_row(tmp_path, {"key": "layers=0,percent=0"})

    def crash(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(frontends, "write_atomic", crash)
    with pytest.raises(OSError):
        sweep.append_row(tmp_path, {"key": "layers=0,percent=0.5"})
    assert list(sweep.open_state(tmp_path, spec)) == ["layers=0,percent=0"]


def test_the_sweep_prunes_as_prune_does():
    """Each point runs the passes `darkslim prune` builds from the same flags."""
    import argparse

    from darkslim.commands import prune

    spec = SweepSpec(cfg="a", weights="w", data="d", percents=(0.4,), mode="shortcut",
                     round_to=8, min_keep=0.05)
    parser = argparse.ArgumentParser()
    prune.add_parser(parser.add_subparsers())
    args = parser.parse_args(["prune", "a.cfg", "w", "--out", "o", "--layers", "2",
                              "--percent", "0.4", "--mode", "shortcut", "--round-to",
                              "8", "--min-keep", "0.05"])
    assert (str(sweep.point_pipeline(SweepPoint(2, 0.4), spec))
            == str(prune.build_pipeline(args)))
    assert sweep.point_pipeline(SweepPoint(0, 0.0), spec) is None
    assert [p.key for p in SweepSpec(cfg="a", weights="w", data="d", percents=(0.0, 0.5),
                                     layers=(0, 1)).points()] == [
        "layers=0,percent=0", "layers=0,percent=0.5", "layers=1,percent=0",
        "layers=1,percent=0.5"]


# ----------------------------------------------------------------------- bad input

def test_a_ratio_that_empties_a_layer_is_a_refused_row(network):
    _, cfg, weights, data = network
    graph = ir.parse_cfg(cfg)
    variables = frontends.load_variables(graph, weights).variables
    spec = SweepSpec(cfg=str(cfg), weights=str(weights), data=str(data),
                     percents=(0.95,), min_keep=0.0)
    row = sweep.measure_point(graph, variables, SweepPoint(0, 0.95), spec, valid_set=None)
    assert row["status"] == "refused" and "map50" not in row
    assert row["reason"].startswith("percent 0.95: ")
    assert "layer" in row["reason"] and "cfg line" in row["reason"]
    # with the default floor the same ratio is pruned, and noted as above the safe one
    g, _, reports = sweep.prune_point(graph, variables, SweepPoint(0, 0.95),
                                      SweepSpec(cfg="a", weights="w", data="d",
                                                percents=(0.95,)))
    assert ir.count_params(g) < ir.count_params(graph)
    assert sweep._note(SweepPoint(0, 0.95), reports).startswith("above the safe percent")

    from rich.console import Console

    from darkslim.commands.sweep import render_table

    result = sweep.SweepResult(spec, (row,), (), False, "darkslim")
    console = Console(width=200, record=True)
    console.print(render_table(result))
    text = console.export_text()
    assert "refused" in text and "percent 0.95: layer 0 (cfg line" in text


@pytest.mark.parametrize("text,message", [
    ("0.5,1.2", "--percents 0.5,1.2: ratio 1.2 is out of range: expected 0 <= percent < 1"),
    ("-0.1:0.5:0.1", "ratio -0.1 is out of range"),
    ("0.1:0.5:0", "--percents 0.1:0.5:0: step 0: expected a step > 0"),
    ("0.1:0.5", "expected START:STOP:STEP"),
    ("0.1,abc", "'abc' is not a number"),
])
def test_bad_ratios_are_clear_errors(network, capsys, tmp_path, text, message):
    _, cfg, weights, data = network
    assert cli("sweep", cfg, weights, "--data", data, f"--percents={text}",
               "--out", tmp_path / "o") == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "o").exists()


def test_an_empty_valid_set_is_a_clear_error(network, capsys, tmp_path):
    _, cfg, weights, data = network
    (tmp_path / "empty.txt").write_text("")
    bad = tmp_path / "empty.data"
    bad.write_text(data.read_text().replace("valid=valid.txt",
                                            f"valid={tmp_path / 'empty.txt'}")
                   .replace("train=train.txt", f"train={data.parent / 'train.txt'}")
                   .replace("names=synth.names", f"names={data.parent / 'synth.names'}"))
    assert cli("sweep", cfg, weights, "--data", bad, "--engine", "darkslim",
               "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "empty.data: the valid split" in err and "has 0 images" in err


def test_an_engine_not_installed_names_the_install(network, capsys, tmp_path):
    import importlib.util

    if importlib.util.find_spec("openvino") is not None:
        pytest.skip("openvino is installed here")
    _, cfg, weights, data = network
    assert cli("sweep", cfg, weights, "--data", data, "--engine", "openvino",
               "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "--engine openvino: openvino is not installed: pip install darkslim[openvino]" \
        in err


# ---------------------------------------------------------------------- properties

def test_percents_grid():
    assert sweep.parse_percents("0.1:0.9:0.1") == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
                                                   0.8, 0.9)
    assert sweep.parse_percents("0.5,0.3,0.5") == (0.3, 0.5)
    assert sweep.parse_layers("4,0,2") == (0, 2, 4)
    with pytest.raises(SweepError, match="--layers 1,-2: -2 blocks: expected a count >= 0"):
        sweep.parse_layers("1,-2")


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 5)), min_size=1, max_size=12))
def test_pareto_front_is_exactly_the_undominated_points(points):
    rows = [{"key": str(k), "map": m, "latency_ms": c} for k, (m, c) in enumerate(points)]
    front = sweep.pareto_front(rows)

    def beats(a, b):
        return (a["map"] >= b["map"] and a["latency_ms"] <= b["latency_ms"]
                and (a["map"] > b["map"] or a["latency_ms"] < b["latency_ms"]))

    assert front  # a finite set always has an undominated point
    for r in rows:
        dominated = any(beats(o, r) for o in rows)
        assert (r["key"] in front) == (not dominated)


@pytest.mark.slow
def test_finetune_epochs_add_a_tuned_map(network, tmp_path):
    """--finetune-epochs: each pruned point is fine-tuned and measured again (not the
    baseline); the Pareto front then ranks the tuned mAP. ~1 min on 2 cores."""
    _, cfg, weights, data = network
    spec = SweepSpec.of(cfg, weights, data, (0.5,), finetune_epochs=1, batch=4)
    result = sweep.run_sweep(spec, tmp_path, engine="darkslim", latency_repeats=1)
    base, pruned = result.rows
    assert base["map50_finetuned"] is None and base["map"] == base["map50"]
    assert isinstance(pruned["map50_finetuned"], float)
    assert pruned["map"] == pruned["map50_finetuned"]
    assert 0.0 <= pruned["map50_finetuned"] <= 1.0
