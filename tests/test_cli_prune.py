"""`darkslim prune` and `darkslim info` end to end: files, reports, errors, pipelines."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import frontends
import ir
import passes
import runtime
from darkslim.cli import main
from darkslim.testing import random_inputs, random_variables
from tests.conftest import cfg_path, write_network
from tests.test_prune import at_size, small


def read_reports(out) -> tuple[str, tuple[passes.PassReport, ...]]:
    return passes.load_reports(json.loads((out / "report.json").read_text()))


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
    text, (report,) = read_reports(out)
    assert text == "slim-channels{percent=0.5,mode=shortcut}" == report.text
    assert isinstance(report, passes.SlimReport)
    assert report.mode == "shortcut" and report.threshold.percent == 0.5
    assert report.after.params < report.before.params
    assert report.after.flops < report.before.flops
    checks = json.loads((out / "checks.json").read_text())["slim_channels"][0]
    assert checks["max_abs_diff_keepsize_vs_compact"] < 1e-4
    # tiny's 3×3 convs read dropped channels: the γ-zeroed network differs from the
    # compact one at the zero-padded borders, by far more than float32 rounding
    assert (checks["max_abs_diff_gamma_zeroed_vs_compact"]
            > 10 * checks["max_abs_diff_keepsize_vs_compact"])
    kept, total = report.prunable_channels
    assert abs(kept / total - 0.5) < 0.02  # the seed's rule drops int(n * percent)
    assert report.masks.kept == kept
    pruned = ir.parse_cfg(out / "pruned.cfg")
    assert ir.count_params(pruned) == report.after.params
    for index, kept, total in report.channels:
        assert pruned.layers[index].filters == kept
        assert graph.layers[index].filters == total
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
    (["--threshold", "50", "--min-keep", "0"], "--threshold 50.0: layer 0 (cfg line"),
    (["--percent", "0.5", "--ignore", "1"], "--ignore 1: layer 1 is a [maxpool]"),
    (["--pipeline", "slim-channels{percent=1.5}"],
     "pipeline: slim-channels: percent=1.5: expected 0 <= percent < 1"),
    (["--pipeline", "slim-channels{percent=0.5}", "--layers", "2"],
     "--pipeline with --layers: give the pipeline or the shorthand flags, not both"),
    (["--pipeline", "slice-channels"], "slice-channels: takes ChannelMasks"),
    (["--round-to", "8"], "give --percent, --threshold, --target-speedup or --target-latency too"),
])
def test_bad_requests_write_nothing(tiny, tmp_path, capsys, args, message):
    root, _, _ = tiny
    out = tmp_path / "never"
    code = main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"), *args,
                 "--out", str(out)])
    assert code == 2
    assert message in " ".join(capsys.readouterr().err.split())  # rich wraps lines
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
    maps = json.loads((out / "checks.json").read_text())["slim_channels"][0]["map50"]
    assert set(maps) == {"original", "gamma_zeroed", "keep_size", "compact"}
    assert all(0.0 <= v <= 1.0 for v in maps.values())
    assert maps["keep_size"] == pytest.approx(maps["compact"], abs=1e-6)


# --------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def narrow_v3(tmp_path_factory):
    root = tmp_path_factory.mktemp("v3")
    graph = small("yolov3.cfg")
    variables = random_variables(graph, seed=11, sparsity=0.6)
    write_network(root, "v3", graph, variables)
    return root, graph, variables


def test_cli_layers_alone(narrow_v3, capsys):
    root, graph, variables = narrow_v3
    out = root / "layers"
    assert main(["prune", str(root / "v3.cfg"), str(root / "v3.weights"), "--layers", "8",
                 "--latency-repeats", "2", "--out", str(out)]) == 0
    text, (report,) = read_reports(out)
    assert text == "remove-blocks{n=8}" and isinstance(report, passes.BlocksReport)
    assert len(report.removed) == 8 and report.found == 23
    expected = passes.choose_blocks(graph, variables, n=8)
    assert [b.shortcut for b in report.removed] == [sb.block.shortcut for sb in expected]
    assert [b.score for b in report.removed] == pytest.approx([sb.score for sb in expected])
    pruned = ir.parse_cfg(out / "pruned.cfg")
    assert len(pruned.layers) == len(graph.layers) - 24 == report.after.layers
    assert report.before.params == ir.count_params(graph)
    assert report.after.params == ir.count_params(pruned)
    assert report.after.flops < report.before.flops
    latency = json.loads((out / "checks.json").read_text())["latency"]
    assert latency["ms_before"] > 0 and latency["ms_after"] > 0
    loaded = frontends.load_variables(pruned, out / "pruned.weights")
    assert loaded.loaded_convs == loaded.total_convs
    heads = runtime.forward(pruned, loaded.variables,
                            jnp.asarray(random_inputs(pruned, seed=0))).heads
    assert [h.shape[-1] for h in heads] == [255, 255, 255]
    printed = capsys.readouterr().out
    assert "removed blocks" in printed and "latency" in printed


def test_cli_layers_with_percent(narrow_v3):
    root, graph, variables = narrow_v3
    out = root / "both"
    assert main(["prune", str(root / "v3.cfg"), str(root / "v3.weights"), "--layers", "4",
                 "--percent", "0.5", "--latency-repeats", "0", "--out", str(out)]) == 0
    text, (blocks, slim) = read_reports(out)
    assert text == "remove-blocks{n=4},slim-channels{percent=0.5}"
    pruned = ir.parse_cfg(out / "pruned.cfg")
    blocks_only = passes.RemoveBlocks(n=4)(graph, variables)[0]
    assert blocks.before.params == ir.count_params(graph)
    assert blocks.after == slim.before == passes.Counts.of(blocks_only)
    assert slim.after.params == ir.count_params(pruned) < blocks.after.params
    checks = json.loads((out / "checks.json").read_text())
    assert checks["slim_channels"][0]["max_abs_diff_keepsize_vs_compact"] < 1e-4
    assert checks["latency"] is None
    assert slim.masks.fingerprint == passes.GraphFingerprint.of(blocks_only)
    for index, kept, total in slim.channels:  # indices after the removal
        assert pruned.layers[index].filters == kept
        assert blocks_only.layers[index].filters == total
    loaded = frontends.load_variables(pruned, out / "pruned.weights")
    assert loaded.loaded_convs == loaded.total_convs


def test_cli_pipeline_equals_the_shorthand_flags_file_for_file(narrow_v3, tmp_path):
    root, _, _ = narrow_v3
    common = [str(root / "v3.cfg"), str(root / "v3.weights"), "--latency-repeats", "0"]
    assert main(["prune", *common, "--layers", "8", "--percent", "0.5",
                 "--out", str(tmp_path / "flags")]) == 0
    assert main(["prune", *common, "--pipeline",
                 "remove-blocks{n=8},slim-channels{percent=0.5}",
                 "--out", str(tmp_path / "text")]) == 0
    names = sorted(p.name for p in (tmp_path / "flags").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "text").iterdir())
    assert {"pruned.cfg", "pruned.weights", "report.json", "checks.json",
            "channels.png"} <= set(names)
    for name in names:
        assert (tmp_path / "flags" / name).read_bytes() == \
            (tmp_path / "text" / name).read_bytes(), name


def test_cli_report_json_is_the_serialised_reports(narrow_v3, tmp_path):
    """report.json is exactly `dump_reports` of what `Pipeline.run` reports."""
    root, graph, variables = narrow_v3
    text = "slim-channels{percent=0.3,mode=shortcut},remove-blocks{n=2}"
    out = tmp_path / "out"
    assert main(["prune", str(root / "v3.cfg"), str(root / "v3.weights"), "--pipeline",
                 text, "--no-check", "--latency-repeats", "0", "--out", str(out)]) == 0
    loaded = frontends.load_variables(graph, root / "v3.weights")
    result = passes.parse_pipeline(text).run(graph, loaded.variables)
    assert json.loads((out / "report.json").read_text()) == \
        json.loads(json.dumps(passes.dump_reports(text, result.reports)))
    assert read_reports(out) == (text, result.reports)


@pytest.mark.parametrize("args,message", [
    ([], "give --pipeline, or --percent, --threshold, --target-speedup, --target-latency, "
         "--layers or --layer-threshold"),
    (["--layers", "24"], "--layers 24: expected 0 <= n <= 23"),
])
def test_cli_layer_errors_write_nothing(narrow_v3, tmp_path, capsys, args, message):
    root, _, _ = narrow_v3
    out = tmp_path / "never"
    assert main(["prune", str(root / "v3.cfg"), str(root / "v3.weights"), *args,
                 "--out", str(out)]) == 2
    assert message in " ".join(capsys.readouterr().err.split())  # rich wraps lines
    assert not out.exists()


def _array_memory_error() -> MemoryError:
    """The error numpy raises when an array cannot be allocated (issue 19's check of
    yolov4-sam-mish-csp-reorg-bfm asked for 27 GiB)."""
    try:
        from numpy._core._exceptions import _ArrayMemoryError
    except ImportError:  # numpy < 2
        from numpy.core._exceptions import _ArrayMemoryError
    return _ArrayMemoryError((27 * 2**28,), np.dtype("float32"))


@pytest.mark.parametrize(("exc", "needs"), [
    (_array_memory_error(), "27.0 GiB"),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                  "19327352832 bytes."), "18.0 GiB")])
def test_a_check_out_of_memory_is_skipped_with_the_files_written(tiny, capsys, monkeypatch,
                                                                 exc, needs):
    root, graph, variables = tiny
    out = root / "oom"

    def out_of_memory(*args, **kwargs):
        raise exc

    monkeypatch.setattr("darkslim.check.measure_prune_diffs", out_of_memory)
    assert main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"),
                 "--percent", "0.5", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    assert f"check skipped: keep-size vs compact at 64x64 needs {needs}" in flat
    assert "the pruned files are written; rerun with --no-check or --check-size N" in flat
    assert {"pruned.cfg", "pruned.weights", "report.json", "checks.json",
            "channels.png"} <= {p.name for p in out.iterdir()}
    entry = json.loads((out / "checks.json").read_text())["slim_channels"][0]
    assert entry["check_skipped"].startswith("check skipped: keep-size vs compact at 64x64")
    assert entry["max_abs_diff_keepsize_vs_compact"] is None
    _, (report,) = read_reports(out)
    pruned = ir.parse_cfg(out / "pruned.cfg")
    assert [pruned.layers[i].filters for i, _, _ in report.channels] == \
        [kept for _, kept, _ in report.channels]
    frontends.load_variables(pruned, out / "pruned.weights")  # complete, loadable


def test_other_check_errors_are_not_taken_for_memory(tiny, monkeypatch):
    root, _, _ = tiny

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not an allocation")

    monkeypatch.setattr("darkslim.check.measure_prune_diffs", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"),
              "--percent", "0.5", "--out", str(root / "bug")])


def test_check_size_flag(tiny):
    root, _, _ = tiny
    out = root / "at32"
    assert main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"),
                 "--percent", "0.5", "--check-size", "32", "--out", str(out)]) == 0
    entry = json.loads((out / "checks.json").read_text())["slim_channels"][0]
    assert entry["check_size"] == [32, 32]
    assert entry["max_abs_diff_keepsize_vs_compact"] < 1e-4
    with pytest.raises(SystemExit):
        main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"),
              "--percent", "0.5", "--check-size", "0", "--out", str(out)])
