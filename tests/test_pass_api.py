"""Pass API v2: text form, composition, reports, and the variables layout's one owner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import frontends
import ir
import passes
from darkslim.testing import assert_verifies, programs, tree_diff
from ir import variables as layout

MODES = st.sampled_from(["regular", "shortcut"])
FRACTIONS = st.floats(0.0, 0.95, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def slim_passes(draw) -> passes.SlimChannels:
    by_percent = draw(st.booleans())
    return passes.SlimChannels(
        percent=draw(FRACTIONS) if by_percent else None,
        threshold=None if by_percent else draw(st.floats(0, 2, allow_nan=False)),
        mode=draw(MODES),
        ignore=tuple(draw(st.lists(st.integers(0, 200), max_size=3, unique=True))),
        min_keep=draw(st.sampled_from([0.0, 0.01, 0.25, 1.0])),
        round_to=draw(st.integers(1, 16)))


@st.composite
def block_passes(draw) -> passes.RemoveBlocks:
    how = draw(st.sampled_from(["n", "threshold", "blocks"]))
    if how == "n":
        return passes.RemoveBlocks(n=draw(st.integers(0, 30)))
    if how == "threshold":
        return passes.RemoveBlocks(threshold=draw(st.floats(-1, 5, allow_nan=False)))
    return passes.RemoveBlocks(blocks=tuple(draw(st.lists(st.integers(0, 200), max_size=4))))


TEXT_PASSES = st.one_of(slim_passes(), block_passes(),
                        st.floats(1e-6, 1e-2).map(lambda e: passes.FoldBatchNorm(eps=e)),
                        st.just(passes.FoldBatchNorm()))


# ---------------------------------------------------------------------------- text form


def test_the_issue_example_reads_and_prints_back():
    text = "remove-blocks{n=8},slim-channels{percent=0.5,mode=shortcut}"
    p = passes.parse_pipeline(text)
    assert p == passes.pipeline(passes.RemoveBlocks(n=8),
                                passes.SlimChannels(percent=0.5, mode="shortcut"))
    assert str(p) == text
    assert str(passes.parse_pipeline(" slim-channels{ percent = 0.5 , ignore=[84, 96],"
                                     "min-keep=0.1} ")) == \
        "slim-channels{percent=0.5,ignore=[84,96],min_keep=0.1}"


@settings(max_examples=200)
@given(st.lists(TEXT_PASSES, min_size=1, max_size=5))
def test_pipeline_text_round_trips(steps):
    p = passes.pipeline(*steps)
    assert passes.parse_pipeline(str(p)) == p
    assert passes.pipeline(p, p) == passes.parse_pipeline(f"{p},{p}")  # nesting flattens


def test_text_never_shows_mask_bits():
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\nbatch_normalize=1\n"
                         "filters=300\n")
    masks = passes.ChannelMasks.from_arrays({0: np.arange(300) % 3 > 0}, graph)
    text = str(passes.pipeline(passes.FoldPrunedBias(masks), passes.SliceChannels(masks)))
    summary = f"<1 convs, 200/300 channels kept, graph {masks.fingerprint.digest}>"
    assert text == f"fold-pruned-bias{{masks={summary}}},slice-channels{{masks={summary}}}"
    assert "True" not in repr(masks) and len(repr(passes.FoldPrunedBias(masks))) < 200
    with pytest.raises(passes.PruneError, match="fold-pruned-bias: takes ChannelMasks"):
        passes.parse_pipeline(text)


@pytest.mark.parametrize("text,message", [
    ("", "pipeline: empty"),
    ("slim-channel{percent=0.5}", "unknown pass 'slim-channel'; expected one of"),
    ("slim-channels{percent=0.5", "unclosed bracket"),
    ("slim-channels{pct=0.5}", "option 'pct=0.5': expected key=value with a key among"),
    ("slim-channels{percent=0.5,threshold=0.1}", "give exactly one of percent or threshold"),
    ("slim-channels{percent=0.5,mode=both}",
     "pipeline: slim-channels: mode='both': expected 'regular' or 'shortcut'"),
    ("slim-channels{percent=0.5,ignore=[a]}", "expected a list of integers"),
    ("remove-blocks{n=1,threshold=0.1}", "give exactly one of blocks, n or threshold"),
])
def test_bad_pipeline_text_says_what_was_expected(text, message):
    with pytest.raises(passes.PruneError, match=message.replace("[", r"\[")
                       .replace("(", r"\(").replace(")", r"\)")):
        passes.parse_pipeline(text)


def test_user_passes_join_through_their_own_registry():
    from examples.round_to_multiple import RoundToMultiple

    registry = {**passes.PASSES, "fold-batch-norm-twice": passes.FoldBatchNorm}
    assert passes.parse_pipeline("fold-batch-norm-twice{eps=0.001}", registry) == \
        passes.pipeline(passes.FoldBatchNorm(eps=0.001))
    assert "round-to-multiple" not in passes.PASSES and RoundToMultiple.name
    with pytest.raises(TypeError):
        passes.PASSES["mine"] = passes.FoldBatchNorm  # read-only: no global state


# ------------------------------------------------------------------------ composition

RESIDUAL = programs(min_blocks=2, max_blocks=6,
                    kinds=("conv", "residual", "route", "upsample", "head"))


def _slim_then_blocks(data):
    slim = passes.SlimChannels(percent=data.draw(st.sampled_from([0.0, 0.3, 0.6])),
                               mode=data.draw(MODES))
    blocks = passes.RemoveBlocks(threshold=data.draw(st.sampled_from([0.0, 0.3, 10.0])))
    return data.draw(st.permutations([slim, blocks, slim]), label="order")


@settings(max_examples=30)
@given(RESIDUAL, st.data())
def test_pipeline_equals_its_passes_one_after_another(program, data):
    """``pipeline(a, b, c)`` equals ``c(b(a(...)))``, in any order, a pass repeated;
    every report's counts chain from one pass to the next."""
    graph, variables = program
    assume(passes.analyze_prunability(graph).units
           and passes.analyze_prunability(graph, "shortcut").units)
    steps = _slim_then_blocks(data)
    try:
        result = passes.pipeline(*steps).run(graph, variables)
    except passes.PruneError as exc:
        assume("no prunable layer" not in str(exc))  # blocks removed all of them
        raise
    g, v = graph, variables
    for step in steps:
        g, v = step(g, v)
    assert result.graph == g and tree_diff(result.variables, v) is None
    assert_verifies(g)
    passes.verify_program(g, v)
    assert [r.name for r in result.reports] == [s.name for s in steps]
    assert result.reports[0].before == passes.Counts.of(graph)
    for a, b in zip(result.reports, result.reports[1:]):
        assert a.after == b.before
    assert result.reports[-1].after == passes.Counts.of(g)


@settings(max_examples=25)
@given(RESIDUAL, st.data())
def test_reports_serialise_and_parse_back(program, data):
    graph, variables = program
    assume(passes.analyze_prunability(graph).units)
    steps = _slim_then_blocks(data)
    try:
        result = passes.pipeline(*steps).run(graph, variables)
    except passes.PruneError as exc:
        assume("no prunable layer" not in str(exc))
        raise
    text = str(passes.pipeline(*steps))
    document = json.loads(json.dumps(passes.dump_reports(text, result.reports)))
    assert passes.load_reports(document) == (text, result.reports)
    for report in result.reports:
        assert report.text == passes.pass_text(report_pass(steps, report))
        if isinstance(report, passes.SlimReport):
            kept = sum(k for _, k, _ in report.channels)
            assert kept == report.after.channels
            assert report.masks.kept == sum(k for i, k, _ in report.channels
                                            if report.masks.get(i) is not None)


def report_pass(steps, report):
    return next(s for s in steps if s.name == report.name and str(passes.pipeline(s)) ==
                report.text)


def test_remove_blocks_selects_once_and_reports_scores():
    conv = "[convolutional]\nbatch_normalize=1\nfilters=4\nactivation=leaky\n"
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\n" + conv
                         + (conv + conv + "[shortcut]\nfrom=-3\n") * 3)
    variables = ir.init_variables(graph, "sparse", seed=3)
    result = passes.RemoveBlocks(n=2).run(graph, variables)
    report = result.report
    ranked = passes.rank_blocks(graph, variables)
    assert [b.shortcut for b in report.removed] == sorted(sb.block.shortcut
                                                         for sb in ranked[:2])
    assert sorted(b.score for b in report.removed) == [sb.score for sb in ranked[:2]]
    assert report.found == 3 and report.after.layers == report.before.layers - 6
    assert report.score == "mean_abs_gamma"
    assert dict(report.index_map)[0] == 0


# -------------------------------------------------------------------- variables layout


def test_layer_keys_have_one_owner():
    assert layout.layer_key(7) == "layer_7" and layout.layer_index("layer_7") == 7
    assert layout.layer_index("layer_x") is None and layout.layer_index("bn") is None
    assert passes.tree.layer_key is layout.layer_key is frontends.variables.layer_key


def test_initialisers_are_seeded_per_layer_and_fit():
    graph = ir.parse_cfg(
        "[net]\nwidth=16\nheight=16\nchannels=3\n"
        "[convolutional]\nbatch_normalize=1\nfilters=64\nsize=3\nactivation=leaky\n"
        "[convolutional]\nbatch_normalize=1\nfilters=64\nsize=1\nactivation=leaky\n"
        "[convolutional]\nfilters=18\nsize=1\nactivation=linear\n"
        "[yolo]\nmask=0\nanchors=4,4\nclasses=13\nnum=1\n")
    for name in layout.INITIALISERS:
        full = ir.init_variables(graph, name, seed=5)
        ir.check_variables(graph, full, name)
        part = ir.init_variables(graph, name, seed=5, layers=frozenset({1}))
        assert set(part["params"]) == {"layer_1"}
        assert tree_diff(part["params"]["layer_1"], full["params"]["layer_1"]) is None
        other = ir.init_variables(graph, name, seed=6)
        assert not np.array_equal(other["params"]["layer_0"]["conv"]["kernel"],
                                  full["params"]["layer_0"]["conv"]["kernel"])
        kernel = full["params"]["layer_0"]["conv"]["kernel"]
        assert kernel.dtype == np.float32
        assert np.abs(kernel).max() <= np.sqrt(2 / 27) and np.abs(kernel).max() > 0.2
    darknet = ir.init_variables(graph, "darknet")
    assert (darknet["params"]["layer_0"]["bn"]["scale"] == 1).all()
    gamma = np.abs(ir.init_variables(graph, "sparse")["params"]["layer_0"]["bn"]["scale"])
    assert 0.1 < (gamma < 0.01).mean() < 0.7 and gamma.max() > 0.1
    assert frontends.default_variables(graph, initialiser="sparse").keys() == {
        "params", "batch_stats"}
    with pytest.raises(ValueError, match="initialiser='he': expected one of 'darknet', "
                       "'sparse'"):
        ir.init_variables(graph, "he")


def test_misfits_name_every_layer():
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n"
                         "[convolutional]\nbatch_normalize=1\nfilters=4\n"
                         "[convolutional]\nfilters=2\n")
    good = ir.init_variables(graph)
    assert layout.misfits(graph, good) == ()
    bad = {"params": {**good["params"], "layer_1": {"conv": {
        "kernel": np.zeros((1, 1, 4, 3), np.float32)}}, "layer_9": {}},
        "batch_stats": good["batch_stats"]}
    found = layout.misfits(graph, bad)
    assert [(m.path, m.index) for m in found] == [
        (("params", "layer_1", "conv", "kernel"), 1),
        (("params", "layer_1", "conv", "bias"), 1)]
    with pytest.raises(passes.PruneError, match=r"here: 2 variable\(s\) do not fit"):
        passes.verify_program(graph, bad, "here")
    assert layout.misfits(graph, [1])[0].problem.startswith("expected a variables dict")
