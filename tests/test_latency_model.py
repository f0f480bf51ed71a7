"""The latency model (`passes.LatencyTable`), the `slim-to-latency` pass and
``prune --target-speedup/--target-latency``: synthetic tables (no timing) everywhere
but one small real measurement."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ir
import passes
from darkslim import latency_table as lt
from darkslim.cli import main
from darkslim.testing import (
    assert_equivalent,
    assert_verifies,
    programs,
    random_inputs,
    random_variables,
    reference_forward,
)
from tests.conftest import cfg_path, write_network
from tests.test_prune import at_size

MODES = st.sampled_from(["regular", "shortcut"])


def synthetic_table(graph: ir.Graph, *, multiple: int = 1, key: passes.TableKey | None = None,
                    half: bool = True) -> passes.LatencyTable:
    """A table whose conv times are a FLOP count plus a constant (no timing), and
    whose other layers cost their output size; calibrated as if the whole network ran
    10% faster than the sum of its layers (and 20% at half size)."""
    plan = lt.plan_table(graph)
    grids = []
    for sig in plan.signatures:
        c_ins = lt.grid_counts(sig.c_in, multiple) if sig.groups == 1 else (sig.c_in,)
        c_outs = lt.grid_counts(sig.c_out, multiple) if sig.groups == 1 else (sig.c_out,)
        area = sig.height * sig.width / sig.stride ** 2 * sig.size ** 2
        ms = [[0.01 + a * b * area * 1e-6 for b in c_outs] for a in c_ins]
        grids.append(passes.ConvGrid(signature=sig, c_in=c_ins, c_out=c_outs,
                                     ms=passes.monotone_grid(ms)))
    shapes = ir.verify(graph)
    layers = passes.layer_entries(
        graph, dict(plan.of_layer), lambda i: shapes[i].c * shapes[i].h * shapes[i].w * 1e-7)
    key = key or passes.TableKey(engine="onnxruntime", engine_version="test",
                                 cpu="synthetic", size=(graph.height, graph.width),
                                 cfg=passes.GraphFingerprint.of(graph).digest, threads=1)
    table = passes.LatencyTable(key=key, convs=tuple(grids), layers=layers,
                                network_ms=1.0, multiple=multiple)
    total = table.full_sum_ms
    table = dataclasses.replace(table, network_ms=0.9 * total)
    return dataclasses.replace(table, half_ms=0.5 * 0.8 * total, half_sum_ms=0.5 * total) \
        if half else table


def sum_gamma(graph, variables, masks: passes.ChannelMasks, units) -> float:
    by = masks.as_dict()
    total = 0.0
    for unit in units:
        for i in unit:
            g = np.abs(np.asarray(passes.tree.get(variables, i, passes.tree.GAMMA),
                                  np.float64))
            total += float(g[by[i]].sum()) if i in by else float(g.sum())
    return total


def prunable(program, mode):
    graph, _ = program
    analysis = passes.analyze_prunability(graph, mode)
    assume(analysis.units)
    return analysis


# ------------------------------------------------------------------ the table


def test_the_latency_rule_table_covers_every_kind_and_a_missing_one_fails():
    assert set(passes.LATENCY_RULES) == {spec.layer for spec in ir.KINDS}
    assert isinstance(passes.LATENCY_RULES[ir.Section], ir.Refusal)
    rules = {k: passes.LATENCY_RULES[k] for k in passes.LATENCY_RULES if k is not ir.Sam}
    with pytest.raises(TypeError, match=r"latency: no rule for layer kind \[sam\]"):
        ir.check_table("latency", rules)


@settings(max_examples=15, deadline=None)
@given(programs(max_blocks=5))
def test_table_round_trips_json(program):
    graph, _ = program
    table = synthetic_table(graph, multiple=4)
    text = json.dumps(passes.table_to_json(table))
    assert passes.table_from_json(json.loads(text)) == table


def test_a_table_of_another_format_is_an_error():
    with pytest.raises(passes.PruneError, match="format 'other/1'"):
        passes.table_from_json({"format": "other/1"})


@settings(max_examples=15, deadline=None)
@given(programs(max_blocks=5))
def test_prediction_is_exact_at_grid_points_and_for_the_unpruned_network(program):
    graph, _ = program
    table = synthetic_table(graph)
    for i, entry in enumerate(table.layers):
        if entry.grid is None or table.convs[entry.grid].signature.groups > 1:
            continue
        grid = table.convs[entry.grid]
        for a, c_in in enumerate(grid.c_in):
            for b, c_out in enumerate(grid.c_out):
                assert table.layer_ms(i, c_in, c_out) == grid.ms[a][b]
    assert table.predict(graph).total_ms == pytest.approx(table.network_ms, rel=1e-12)


def test_prediction_rounds_channels_up_to_the_engines_block():
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 64)
    table = synthetic_table(graph, multiple=16)
    conv = next(i for i, e in enumerate(table.layers) if e.grid is not None
                and e.c_out >= 64 and e.c_in >= 64)
    e = table.layers[conv]
    assert table.layer_ms(conv, e.c_in, 49) == table.layer_ms(conv, e.c_in, 64)
    assert table.layer_ms(conv, e.c_in, 48) < table.layer_ms(conv, e.c_in, 49)


@settings(max_examples=25, deadline=None)
@given(programs(max_blocks=5), st.data())
def test_prediction_is_monotone_in_channels(program, data):
    graph, _ = program
    table = synthetic_table(graph, multiple=data.draw(st.sampled_from([1, 4])))
    for i, e in enumerate(table.layers):
        a1 = data.draw(st.integers(1, max(e.c_in, 1)))
        a2 = data.draw(st.integers(a1, max(e.c_in, 1)))
        b1 = data.draw(st.integers(1, max(e.c_out, 1)))
        b2 = data.draw(st.integers(b1, max(e.c_out, 1)))
        assert table.layer_ms(i, a1, b1) <= table.layer_ms(i, a2, b2) + 1e-12
    sums = sorted(data.draw(st.lists(st.floats(0, 2 * table.full_sum_ms), min_size=2,
                                     max_size=5)))
    whole = [table.calibrate(s) for s in sums]
    assert whole == sorted(whole)


@settings(max_examples=20, deadline=None)
@given(programs(max_blocks=5, sparsity=(0.3, 0.9)), MODES, st.data())
def test_nested_masks_never_predict_more(program, mode, data):
    graph, variables = program
    analysis = prunable(program, mode)
    table = synthetic_table(graph)
    low = data.draw(st.floats(0.0, 0.9))
    high = data.draw(st.floats(low, 0.95))
    light = passes.SlimChannels(percent=low, mode=mode).run(graph, variables)
    heavy = passes.SlimChannels(percent=high, mode=mode).run(graph, variables)
    assert analysis.units
    assert (table.predict(heavy.graph).total_ms
            <= table.predict(light.graph).total_ms * (1 + 1e-9))


# ------------------------------------------------------------------- the pass


@settings(max_examples=25, deadline=None)
@given(programs(max_blocks=6, sparsity=(0.3, 0.9)), MODES,
       st.floats(1.05, 3.0), st.sampled_from([1, 2, 4]), st.data())
def test_slim_to_latency_keeps_at_least_a_global_threshold_at_the_same_prediction(
        program, mode, speedup, round_to, data):
    graph, variables = program
    analysis = prunable(program, mode)
    table = synthetic_table(graph, multiple=round_to)
    try:
        result = passes.SlimToLatency(target_speedup=speedup, mode=mode,
                                      table=table).run(graph, variables)
    except passes.PruneError as exc:
        assert "best reachable" in str(exc)
        assume(False)
    report = result.report
    assert isinstance(report, passes.LatencyReport)
    mine = sum_gamma(graph, variables, report.masks, analysis.units)
    predicted = report.predicted_after_ms
    for percent in data.draw(st.lists(st.floats(0.0, 0.95), min_size=1, max_size=4)):
        other = passes.SlimChannels(percent=percent, mode=mode).run(graph, variables)
        if table.predict(other.graph).total_ms <= predicted:
            theirs = sum_gamma(graph, variables, other.report.masks, analysis.units)
            assert mine >= theirs * (1 - 1e-9)


@settings(max_examples=20, deadline=None)
@given(programs(max_blocks=6, sparsity=(0.3, 0.9)), MODES, st.floats(1.05, 2.5))
def test_slim_to_latency_masks_pass_the_slim_channels_invariants(program, mode, speedup):
    graph, variables = program
    analysis = prunable(program, mode)
    table = synthetic_table(graph)
    slt = passes.SlimToLatency(target_speedup=speedup, mode=mode, table=table)
    try:
        result = slt.run(graph, variables)
    except passes.PruneError:
        assume(False)
    report = result.report
    masks = report.masks
    assert isinstance(masks, passes.ChannelMasks)
    passes.check_masks(graph, masks, "test")
    shapes = assert_verifies(result.graph)
    for unit in analysis.units:  # a unit's members share one mask
        assert len({tuple(masks.get(i)) for i in unit}) == 1
        for i in unit:
            assert shapes[i].c == int(masks.get(i).sum()) >= 1
    keep = passes.FoldPrunedBias(masks)(graph, variables)
    assert_equivalent(keep, (result.graph, result.variables),
                      random_inputs(graph, seed=1, batch=1), rtol=1e-4,
                      forward=reference_forward)
    # the budget holds unless [route] groups= balancing added channels back
    if not analysis.balanced:
        assert report.predicted_after_ms <= report.target_ms * (1 + 1e-9)
    assert report.predicted_before_ms == pytest.approx(table.network_ms)
    assert table.predict(result.graph).total_ms == pytest.approx(report.predicted_after_ms)
    # the same masks through the slim-channels machinery: the same compact network
    sliced = passes.SliceChannels(masks)(*passes.FoldPrunedBias(
        masks, zero_dropped_inputs=False)(graph, variables))
    assert sliced[0] == result.graph


def test_the_report_round_trips_and_the_pipeline_is_text():
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 64)
    variables = random_variables(graph, seed=3, sparsity=0.6)
    table = synthetic_table(graph, multiple=8)
    pipe = passes.pipeline(passes.SlimToLatency(target_speedup=2.0, table=table))
    assert str(pipe) == "slim-to-latency{target_speedup=2.0}"
    assert passes.parse_pipeline(str(pipe)) == passes.pipeline(
        passes.SlimToLatency(target_speedup=2.0))
    result = pipe.run(graph, variables)
    (report,) = result.reports
    data = json.loads(json.dumps(passes.dump_reports(str(pipe), result.reports)))
    assert passes.load_reports(data) == (str(pipe), (report,))
    assert report.table == table.key and report.round_to == 8
    assert report.predicted_speedup >= 2.0 * (1 - 1e-9)
    kept = [k for i, k, t in report.channels if i in report.prunable and k < t]
    assert kept and all(k % 8 == 0 for k in kept)  # steps of the engine's block


def test_an_unmeetable_budget_names_the_best_reachable_latency():
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 64)
    variables = random_variables(graph, seed=3, sparsity=0.6)
    table = synthetic_table(graph)
    with pytest.raises(passes.PruneError) as info:
        passes.SlimToLatency(target_ms=1e-6, table=table).run(graph, variables)
    text = str(info.value)
    analysis = passes.analyze_prunability(graph)
    floors = {i: max(1, int(np.ceil(0.01 * graph.layers[i].filters)))
              for unit in analysis.units for i in unit}
    floor = passes.slim_latency.predict_masks(
        graph, table, {unit: np.arange(graph.layers[unit[0]].filters) < floors[unit[0]]
                       for unit in analysis.units})
    assert "target_ms=1e-06: cannot be met" in text
    assert f"{floor:.2f} ms" in text and "best reachable" in text
    before = table.network_ms
    with pytest.raises(passes.PruneError, match=(
            rf"target_speedup=1000 \({before / 1000:.2f} ms\): cannot be met: .* is "
            rf"{floor:.2f} ms, a speed-up of {before / floor:.2f}x over {before:.2f} ms")):
        passes.SlimToLatency(target_speedup=1000, table=table).run(graph, variables)


def test_bad_arguments_and_a_missing_or_foreign_table_are_errors():
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 64)
    variables = random_variables(graph, seed=3, sparsity=0.6)
    with pytest.raises(passes.PruneError, match="exactly one of target_speedup or target_ms"):
        passes.SlimToLatency(target_speedup=2, target_ms=3)
    with pytest.raises(passes.PruneError, match=r"target_speedup=0\.5: expected a finite"):
        passes.SlimToLatency(target_speedup=0.5)
    with pytest.raises(passes.PruneError, match="no latency table"):
        passes.SlimToLatency(target_speedup=2).run(graph, variables)
    with pytest.raises(passes.PruneError, match="with a key among"):
        passes.parse_pipeline("slim-to-latency{target_speedup=2,table=x}")
    other = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 96)
    with pytest.raises(passes.PruneError, match="measured at 64x64"):
        passes.SlimToLatency(target_speedup=2, table=synthetic_table(graph)).run(
            other, random_variables(other, seed=3))
    blocks = passes.RemoveBlocks(n=1)
    v3 = at_size(ir.parse_cfg(cfg_path("yolov3.cfg")), 64)
    v3_vars = random_variables(v3, seed=1, sparsity=0.5)
    with pytest.raises(passes.PruneError, match="first differ at layer"):
        passes.pipeline(blocks, passes.SlimToLatency(
            target_speedup=2, table=synthetic_table(v3))).run(v3, v3_vars)
    with pytest.raises(passes.PruneError, match="table measured on 'onnxruntime'"):
        passes.SlimToLatency(target_speedup=2, engine="openvino",
                             table=synthetic_table(graph))


# ----------------------------------------------------------- engines and cache


def test_unknown_and_unavailable_engines_are_clear_errors(monkeypatch):
    with pytest.raises(lt.EngineError, match="--engine tensorrt: unknown engine; expected "
                       "one of onnxruntime, openvino, darkslim"):
        lt.engine_version("tensorrt")
    with pytest.raises(lt.EngineError, match="--engine darkslim: .*not implemented"):
        lt.engine_version("darkslim")
    with pytest.raises(lt.EngineError, match="--engine openvino: "):
        lt.engine_version("openvino")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(lt.EngineError, match="onnxruntime is not installed"):
        lt.engine_version("onnxruntime")


def test_a_cached_table_is_reused_and_a_stale_key_re_measures(tmp_path):
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 64)
    calls = []

    def fake(graph, variables, engine, **options):
        calls.append(options)
        return synthetic_table(graph, key=lt.table_key(graph, engine, options["threads"]))

    path = tmp_path / "t.json"
    first = lt.load_or_measure(graph, None, "onnxruntime", path, measure=fake)
    assert first.measured and path.is_file() and len(calls) == 1
    assert "no table at" in first.why
    again = lt.load_or_measure(graph, None, "onnxruntime", path, measure=fake)
    assert not again.measured and again.table == first.table and len(calls) == 1
    data = json.loads(path.read_text())
    data["key"]["cpu"] = "another CPU"
    path.write_text(json.dumps(data))
    stale = lt.load_or_measure(graph, None, "onnxruntime", path, measure=fake)
    assert stale.measured and len(calls) == 2
    assert "measured for another key (cpu 'another CPU' ->" in stale.why
    assert lt.load_table(path).key == lt.table_key(graph, "onnxruntime", 1)
    other_threads = lt.load_or_measure(graph, None, "onnxruntime", path, threads=2,
                                       measure=fake)
    assert other_threads.measured and "threads 1 -> 2" in other_threads.why
    path.write_text("{not json")
    assert lt.load_or_measure(graph, None, "onnxruntime", path, measure=fake).measured


def test_a_small_real_measurement_on_onnxruntime():
    pytest.importorskip("onnxruntime")
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    graph = dataclasses.replace(at_size(graph, 32), layers=graph.layers[:3])
    seen = []
    table = lt.measure_latency_table(graph, repeats=1, warmup=0, multiple=8,
                                     progress=lambda d, n, w: seen.append((d, n)))
    assert table.key == lt.table_key(graph, "onnxruntime", 1)
    assert [e.kind for e in table.layers] == ["convolutional", "maxpool", "convolutional"]
    assert len(table.convs) == 2 and table.convs[1].c_in == (8, 16)
    assert all(ms > 0 for g in table.convs for row in g.ms for ms in row)
    assert seen[-1][0] == seen[-1][1]
    assert table.predict(graph).total_ms == pytest.approx(table.network_ms)
    assert table.half_ms > 0 and table.half_sum_ms > 0


# ---------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-latency")
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 64)
    variables = random_variables(graph, seed=7, sparsity=0.6)
    write_network(root, "tiny", graph, variables)
    table = synthetic_table(graph, key=lt.table_key(graph, "onnxruntime", 1), multiple=8)
    lt.save_table(root / "table.json", table)
    return root, graph, table


def test_prune_target_speedup_reports_predicted_and_measured(tiny, capsys):
    root, graph, table = tiny
    out = root / "out"
    assert main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"),
                 "--target-speedup", "2", "--latency-table", str(root / "table.json"),
                 "--latency-repeats", "2", "--no-check", "--out", str(out)]) == 0
    text, (report,) = passes.load_reports(json.loads((out / "report.json").read_text()))
    assert text == "slim-to-latency{target_speedup=2.0}"
    assert isinstance(report, passes.LatencyReport) and report.table == table.key
    check = json.loads((out / "checks.json").read_text())["slim_channels"][0]
    assert check["latency_table"]["measured"] is False
    model = check["latency_model"]
    assert model["predicted_speedup"] == pytest.approx(report.predicted_speedup)
    assert model["measured_ms_before"] > 0 and model["measured_ms_after"] > 0
    assert model["threads"] == 1 and model["repeats"] == 2
    shown = capsys.readouterr().out
    assert "latency table: loaded" in shown and "measured on onnxruntime" in shown
    assert (ir.parse_cfg(out / "pruned.cfg").layers
            == passes.SlimToLatency(target_speedup=2.0, table=table).run(
                graph, json_weights(root, graph)).graph.layers)


def json_weights(root, graph):
    import frontends

    return frontends.load_variables(graph, root / "tiny.weights").variables


@pytest.mark.parametrize("args, message", [
    (["--target-speedup", "2", "--engine", "tensorrt"], "--engine tensorrt: unknown engine"),
    (["--target-latency", "0.000001"], "--target-latency 1e-06: cannot be met"),
    (["--target-speedup", "0.5"], "--target-speedup 0.5: expected a finite speed-up > 1"),
])
def test_prune_target_errors_name_the_number(tiny, capsys, args, message):
    root, _, _ = tiny
    out = root / "bad"
    code = main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"), *args,
                 "--latency-table", str(root / "table.json"), "--out", str(out)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_prune_target_and_percent_are_exclusive(tiny, capsys):
    root, _, _ = tiny
    with pytest.raises(SystemExit) as info:
        main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"),
              "--target-speedup", "2", "--percent", "0.5", "--out", str(root / "x")])
    assert info.value.code == 2
    assert "not allowed with argument --target-speedup" in capsys.readouterr().err


def test_prune_pipeline_text_fills_in_the_table(tiny):
    root, _, _ = tiny
    out = {}
    for name, how in (("flags", ["--target-speedup", "2"]),
                      ("text", ["--pipeline", "slim-to-latency{target_speedup=2}"])):
        out[name] = root / f"pipe-{name}"
        assert main(["prune", str(root / "tiny.cfg"), str(root / "tiny.weights"), *how,
                     "--latency-table", str(root / "table.json"), "--latency-repeats", "0",
                     "--no-check", "--out", str(out[name])]) == 0
    assert ((out["flags"] / "pruned.cfg").read_text()
            == (out["text"] / "pruned.cfg").read_text())
    check = json.loads((out["text"] / "checks.json").read_text())["slim_channels"][0]
    assert "latency_model" not in check  # --latency-repeats 0: not measured
