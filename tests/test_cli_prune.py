"""`darkslim prune` and `darkslim info` end to end: files, report, errors."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import frontends
import ir
import runtime
from darkslim.cli import main
from darkslim.testing import random_inputs, random_variables
from tests.conftest import cfg_path, write_network
from tests.test_prune import at_size

REPORT_KEYS = {"mode", "percent", "threshold", "safe_threshold", "safe_percent",
               "channels_before", "channels_after", "params_before", "params_after",
               "bflops_before", "bflops_after", "layers",
               "max_abs_diff_keepsize_vs_compact", "max_abs_diff_gamma_zeroed_vs_compact"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """yolov3-tiny at 96 px with sparse seeded weights, as cfg + .weights files."""
    root = tmp_path_factory.mktemp("tiny")
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 96)
    variables = random_variables(graph, seed=7, sparsity=0.6)
    write_network(root, "tiny", graph, variables)
    return root, graph, variables


def test_prune_writes_a_loadable_network_and_report(tiny, capsys):
    root, graph, variables = tiny
    out = root / "out"
    assert main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"),
                 "--percent", "0.5", "--mode", "shortcut", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["mode"] == "shortcut" and report["percent"] == 0.5
    assert report["params_after"] < report["params_before"]
    assert report["bflops_after"] < report["bflops_before"]
    assert report["max_abs_diff_keepsize_vs_compact"] < 1e-4
    # tiny's 3×3 convs read dropped channels: the γ-zeroed network differs from the
    # compact one at the zero-padded borders, by far more than float32 rounding
    assert (report["max_abs_diff_gamma_zeroed_vs_compact"]
            > 10 * report["max_abs_diff_keepsize_vs_compact"])
    kept = report["prunable_channels_after"] / report["prunable_channels_before"]
    assert abs(kept - 0.5) < 0.02
    pruned = ir.parse_cfg(out / "pruned.cfg")
    assert ir.count_params(pruned) == report["params_after"]
    for index, (kept, total) in report["layers"].items():
        assert pruned.layers[int(index)].filters == kept
        assert graph.layers[int(index)].filters == total
    loaded = frontends.load_variables(pruned, out / "pruned.weights")
    assert loaded.loaded_convs == loaded.total_convs
    x = jnp.asarray(random_inputs(pruned, seed=0))
    out_heads = runtime.forward(pruned, loaded.variables, x).heads
    assert [h.shape[-1] for h in out_heads] == [255, 255]
    assert (out / "channels.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "params" in printed and "BFLOPs" in printed and "highest safe threshold" in printed


@pytest.mark.parametrize("args,message", [
    (["--percent", "1.5"], "--percent 1.5: expected 0 <= percent < 1"),
    (["--threshold", "50", "--min-keep", "0"], "keeps none of its"),
    (["--percent", "0.5", "--ignore", "1"], "--ignore 1: layer 1 is a [maxpool]"),
])
def test_bad_requests_write_nothing(tiny, tmp_path, capsys, args, message):
    root, _, _ = tiny
    out = tmp_path / "never"
    code = main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"), *args,
                 "--out", str(out)])
    assert code == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not out.exists()


def test_nan_gamma_is_refused(tiny, tmp_path, capsys):
    root, graph, variables = tiny
    params = dict(variables["params"])
    bad = {**params["layer_4"], "bn": {**params["layer_4"]["bn"]}}
    bad["bn"]["scale"] = np.where(np.arange(len(bad["bn"]["scale"])) == 3, np.nan,
                                  bad["bn"]["scale"]).astype(np.float32)
    params["layer_4"] = bad
    frontends.save_variables(graph, {**variables, "params": params}, tmp_path / "nan.weights")
    out = tmp_path / "out"
    assert main(["prune", str(root / "tiny.cfg"), str(tmp_path / "nan.weights"),
                 "--percent", "0.3", "--out", str(out)]) == 2
    assert "layer 4 (cfg line" in capsys.readouterr().err
    assert not out.exists()


def test_info_totals(capsys):
    assert main(["info", str(cfg_path("yolov3.cfg"))]) == 0
    printed = capsys.readouterr().out
    assert "61,949,149" in printed and "65.86" in printed


def test_prune_with_data_reports_map_three_ways(tmp_path):
    from darkslim.demo import template_cfg
    from runtime.synth import write_synth

    data = write_synth(tmp_path / "data", train=4, valid=8, size=64, seed=3,
                       cfg=ir.narrow(template_cfg(), 4, min_filters=4))
    graph = ir.parse_cfg(data.cfg)
    frontends.save_variables(graph, random_variables(graph, seed=1, sparsity=0.5),
                             tmp_path / "w.weights")
    out = tmp_path / "out"
    assert main(["prune", str(data.cfg), str(tmp_path / "w.weights"), "--percent", "0.3",
                 "--data", str(data.data), "--no-check", "--out", str(out)]) == 0
    maps = json.loads((out / "report.json").read_text())["map50"]
    assert set(maps) == {"original", "gamma_zeroed", "keep_size", "compact"}
    assert all(0.0 <= v <= 1.0 for v in maps.values())
    assert maps["keep_size"] == pytest.approx(maps["compact"], abs=1e-6)
