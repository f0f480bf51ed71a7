"""The property-testing kit itself: it finds and shrinks a planted bug, its oracle
agrees with the runtime, its strategies respect the analysis, and every check fails
loudly (with a useful message) on the problem it exists to catch."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import frontends
import ir
import passes
import runtime
from darkslim.testing import (
    PROFILES,
    assert_equivalent,
    assert_identity_when_noop,
    assert_pass_is_pure,
    assert_roundtrip_cfg,
    assert_roundtrip_weights,
    assert_verifies,
    describe_graph,
    graphs,
    inputs,
    load_profile,
    masks,
    programs,
    random_inputs,
    random_variables,
    reference_forward,
    variables,
)
from ir import layer_key

# ------------------------------------------------------------- a toy pass, bug planted


@dataclasses.dataclass(frozen=True)
class ToySlice:
    """A toy of `passes.SliceChannels` in plain numpy (convs, routes, maxpools,
    upsamples). With ``forget_route_offsets`` it indexes each [route] input's kept
    channels as if that input started at channel 0 of the concatenation: the classic
    slicing bug, invisible until a route with a pruned non-first input feeds a conv."""

    masks: passes.ChannelMasks
    forget_route_offsets: bool = False
    name: str = "toy-slice"

    def __call__(self, graph, variables):
        shapes = ir.verify(graph)
        by_conv = self.masks.as_dict()
        kept: list[np.ndarray] = []  # kept channel indices of every layer's output
        image = np.arange(graph.channels)
        layers, params, stats = list(graph.layers), {}, {}
        for i, layer in enumerate(graph.layers):
            if isinstance(layer, ir.Route):
                parts, offset = [], 0
                for j in layer.inputs:
                    parts.append(kept[j] + (0 if self.forget_route_offsets else offset))
                    offset += shapes[j].c
                kept.append(np.concatenate(parts))
            elif not isinstance(layer, ir.Conv):
                kept.append(kept[i - 1] if i else image)
            else:
                out = np.flatnonzero(by_conv.get(i, np.ones(layer.filters, bool)))
                ins = kept[i - 1] if i else image
                kept.append(out)
                key = layer_key(i)
                p = variables["params"][key]
                params[key] = {part: {n: np.asarray(a)[..., out] for n, a in leaves.items()}
                               for part, leaves in p.items()}  # out is the last axis
                if len(ins) < params[key]["conv"]["kernel"].shape[2]:  # inputs were cut
                    params[key]["conv"]["kernel"] = params[key]["conv"]["kernel"][:, :, ins]
                if key in variables["batch_stats"]:
                    stats[key] = {"bn": {n: np.asarray(a)[out] for n, a in
                                         variables["batch_stats"][key]["bn"].items()}}
                layers[i] = dataclasses.replace(layer, filters=len(out))
        return (dataclasses.replace(graph, layers=tuple(layers)),
                {"params": params, "batch_stats": stats})


TOY_KINDS = ("conv", "downsample", "route", "maxpool", "spp", "upsample")


@st.composite
def toy_cases(draw):
    graph = draw(graphs(max_blocks=5, widths=(2, 6), sizes=(8, 16), kinds=TOY_KINDS,
                        heads=(1, 1), head_kinds=("yolo",), styles=("detector",)))
    analysis = passes.analyze_prunability(graph, "regular")
    return (graph, draw(variables(graph)), draw(masks(graph, analysis)),
            draw(inputs(graph)))


def slicing_is_exact(case, forget_route_offsets: bool) -> bool:
    graph, variables_, masks_, x = case
    keep_size = passes.FoldPrunedBias(masks_)(graph, variables_)
    compact = ToySlice(masks_, forget_route_offsets)(*keep_size)
    try:
        assert_equivalent(keep_size, compact, x, forward=reference_forward)
    except (AssertionError, IndexError):
        return False
    return True


def test_planted_route_offset_bug_is_found_and_shrunk():
    # Derandomised whatever the profile: shrinking is a heuristic search, and this
    # test pins how small its result is.
    case = find(toy_cases(), lambda c: not slicing_is_exact(c, True),
                settings=settings(max_examples=1000, database=None, derandomize=True,
                                  deadline=None))
    graph, _, masks_, _ = case
    listing = f"{describe_graph(graph)}\n{masks_}"
    print(f"shrunk counterexample:\n{listing}")  # shown by pytest -s / on failure
    # The counterexample is the bug and nothing else: two convs, a route joining
    # them (the second input at a non-zero offset), the head conv that reads it.
    assert len(graph.layers) <= 5, listing
    assert any(isinstance(layer, ir.Route) and len(layer.inputs) >= 2
               for layer in graph.layers), listing
    assert not masks_.is_noop
    # ...and the correct toy passes on it.
    assert slicing_is_exact(case, False)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(toy_cases())
def test_correct_toy_slice_passes_the_property(case):
    assert slicing_is_exact(case, forget_route_offsets=False)


# -------------------------------------------------------------- oracle and strategies


@settings(max_examples=min(settings.default.max_examples, 10))
@given(programs(sizes=(16, 32)), st.integers(0, 2**31))
def test_reference_forward_agrees_with_the_runtime(program, seed):
    graph, variables_ = program
    x = random_inputs(graph, seed, batch=2)
    assert_equivalent(program, program, x, forward=(runtime.forward, reference_forward))


@settings(max_examples=min(settings.default.max_examples, 20))
@given(graphs(), st.integers(0, 2**31), st.floats(0, 1))
def test_random_variables_fit_the_graph(graph, seed, sparsity):
    v = random_variables(graph, seed, sparsity=sparsity)
    made = runtime.init_variables(graph)  # what the Flax module creates
    for collection in ("params", "batch_stats"):
        assert (jax.tree.map(np.shape, v[collection])
                == jax.tree.map(np.shape, made.get(collection, {})))
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(v))
    for stats in v["batch_stats"].values():
        assert (stats["bn"]["var"] > 0).all()
    # seeded: the same seed gives the same values, another seed other kernels
    again = random_variables(graph, seed, sparsity=sparsity)
    assert jax.tree.structure(again) == jax.tree.structure(v)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again),
                                                      jax.tree.leaves(v)))
    other = random_variables(graph, seed + 1, sparsity=sparsity)
    kernels = [(a, b) for a, b in zip(jax.tree.leaves(other["params"]),
                                      jax.tree.leaves(v["params"])) if a.ndim >= 2]
    assert kernels and not all(np.array_equal(a, b) for a, b in kernels)


def test_sparsity_controls_the_fraction_of_tiny_gammas():
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\nbatch_normalize=1\n"
                         "filters=4000\nactivation=leaky\n")
    for sparsity in (0.0, 0.3, 0.9):
        v = random_variables(graph, 1, sparsity=sparsity)
        gamma = v["params"]["layer_0"]["bn"]["scale"]
        assert abs(np.mean(np.abs(gamma) < 1e-3) - sparsity) < 0.03


@given(st.data())
def test_masks_share_one_mask_per_unit_and_never_empty(data):
    graph = data.draw(graphs(kinds=("conv", "residual", "route", "route_groups",
                                    "downsample", "sam", "se")))
    analysis = passes.analyze_prunability(graph, "shortcut")
    drawn = data.draw(masks(graph, analysis)).as_dict()
    shapes = ir.verify(graph)
    assert set(drawn) == set(analysis.prunable)
    for unit in analysis.units:
        assert all(np.array_equal(drawn[i], drawn[unit[0]]) for i in unit)
        assert drawn[unit[0]].any() and len(drawn[unit[0]]) == shapes[unit[0]].c
    for unit, groups in analysis.balanced:  # read by [route] groups=: balanced slices
        kept = drawn[unit[0]].reshape(groups, -1).sum(axis=1)
        assert (kept == kept[0]).all() and kept[0] >= 1, (unit, groups, drawn[unit[0]])


def test_masks_shrink_to_keeping_everything():
    graph = ir.parse_cfg("[net]\nwidth=8\nheight=8\n[convolutional]\nbatch_normalize=1\n"
                         "filters=8\nactivation=leaky\n[convolutional]\nfilters=6\n"
                         "activation=linear\n[yolo]\nmask=0\nanchors=10,10\nclasses=1\n")
    analysis = passes.analyze_prunability(graph)
    simplest = find(masks(graph, analysis), lambda m: True)
    assert simplest.is_noop
    one_drop = find(masks(graph, analysis), lambda m: not m.is_noop)
    assert sum(not k for k in one_drop.get(0)) == 1


# ---------------------------------------------------------------- each check bites

TINY = ("[net]\nwidth=16\nheight=16\nchannels=3\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=mish\n"
        "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n"
        "[yolo]\nmask=0\nanchors=10,14\nclasses=1\nnum=1\n")


@pytest.fixture(scope="module")
def tiny():
    graph = ir.parse_cfg(TINY)
    return graph, random_variables(graph, 0), random_inputs(graph, 0, batch=2)


def test_assert_equivalent_names_head_and_place(tiny):
    graph, v, x = tiny
    kernel = np.array(v["params"]["layer_2"]["conv"]["kernel"])
    kernel[0, 0, 1, 3] += 0.5
    broken = {**v, "params": {**v["params"], "layer_2": {"conv": {
        "kernel": kernel, "bias": v["params"]["layer_2"]["conv"]["bias"]}}}}
    assert_equivalent((graph, v), (graph, v), x)
    with pytest.raises(AssertionError, match=r"head 0 \(feeding \[yolo\] layer 3\), shape "
                       r"\(2, 16, 16, 6\): \d+ of 3072 values differ.*\n.*max \|a - b\| = "
                       r"[\d.e-]+ at \(n=\d, y=\d+, x=\d+, c=3\)"):
        assert_equivalent((graph, v), (graph, broken), x, forward=reference_forward)


def test_assert_equivalent_border_ignores_the_folding_ring(tiny):
    # γ-zeroed vs folded differ only where the 3x3 consumer's window reads padding.
    graph, v, x = tiny
    m = passes.ChannelMasks.from_arrays({0: np.array([True, False, True, False])}, graph)
    zeroed = passes.ZeroPrunedGamma(m)(graph, v)
    folded = passes.FoldPrunedBias(m)(graph, v)
    with pytest.raises(AssertionError, match=r"all \d+ lie in the 1-pixel border ring"):
        assert_equivalent(zeroed, folded, x)
    assert_equivalent(zeroed, folded, x, border=1)


def test_assert_verifies_and_roundtrip_cfg_show_the_layer():
    bad = ir.parse_cfg("[net]\nwidth=16\nheight=16\n[convolutional]\nfilters=4\n"
                       "[route]\nlayers=-1\ngroups=3\ngroup_id=0\n")
    with pytest.raises(AssertionError, match=r"(?s)does not verify:.*groups=3 does not "
                       r"divide.*\n  1 route 0 groups=3"):
        assert_verifies(bad)
    lossy = ir.Graph(net=(("width", "16"), ("height", "16")),
                     layers=(ir.Conv(filters=4), ir.Route(inputs=(0,), group_id=1)))
    with pytest.raises(AssertionError, match=r"(?s)first difference.*layer 1:.*group_id=1"
                                             r".*group_id=0"):
        assert_roundtrip_cfg(lossy)


@pytest.fixture(scope="module")
def mixed_graph():
    """A generated graph with BN convs and a conv with a bias besides the head's."""
    return find(graphs(), lambda g: len(g.conv_indices()) >= 4 and any(
        not layer.batch_normalize for layer in g.layers[:-2] if isinstance(layer, ir.Conv)),
        settings=settings(database=None, derandomize=True, max_examples=1000))


@pytest.mark.parametrize("fmt,options", [("darknet", {}), ("msgpack", {}),
                                         ("torch", {"layout": "ultralytics"}),
                                         ("torch", {"layout": "erik"})])
def test_weights_roundtrip_on_a_generated_program(mixed_graph, fmt, options):
    variables_ = random_variables(mixed_graph, 7, sparsity=0.5)
    assert_roundtrip_weights(mixed_graph, variables_, fmt, **options)


def test_weights_roundtrip_reports_the_leaf(mixed_graph, monkeypatch):
    variables_ = random_variables(mixed_graph, 7)
    real = frontends.load_variables

    def lossy(graph, path, **kw):  # a reader that loses the last bit of one γ
        loaded = real(graph, path, **kw)
        key = layer_key(graph.conv_indices()[0])
        part = "bn" if "bn" in loaded.variables["params"][key] else "conv"
        name = "scale" if part == "bn" else "bias"
        leaf = np.array(loaded.variables["params"][key][part][name])
        leaf[0] = np.nextafter(leaf[0], np.inf)
        loaded.variables["params"][key][part][name] = leaf
        return loaded

    monkeypatch.setattr(frontends, "load_variables", lossy)
    with pytest.raises(AssertionError, match=r"darknet: variables read back differ.*\n"
                       r"  params/layer_\d+/(bn/scale|conv/bias): 1 of \d+ values differ"):
        assert_roundtrip_weights(mixed_graph, variables_, "darknet")


def test_assert_pass_is_pure_catches_mutation_and_nondeterminism(tiny):
    graph, v, _ = tiny
    fresh = random_variables(graph, 0)  # numpy leaves a bad pass could write into

    def mutating(g, variables_):
        variables_["params"]["layer_0"]["bn"]["scale"][1] = 0.0
        return g, variables_

    with pytest.raises(AssertionError, match=r"mutated its input variables.*\n  "
                       r"params/layer_0/bn/scale: 1 of 4 values differ"):
        assert_pass_is_pure(mutating, (graph, fresh))
    rng = np.random.default_rng(0)

    def noisy(g, variables_):
        params = variables_["params"]
        layer_1 = jax.tree.map(lambda a: a + rng.random(), params["layer_1"])
        return g, {**variables_, "params": {**params, "layer_1": layer_1}}

    with pytest.raises(AssertionError, match=r"different variables on two calls"):
        assert_pass_is_pure(noisy, (graph, v))
    m = passes.ChannelMasks.from_arrays({0: np.array([True, False, True, True])}, graph)
    out = assert_pass_is_pure(passes.FoldPrunedBias(m), (graph, v))
    assert_pass_is_pure(passes.SliceChannels(m), out)


def test_assert_identity_when_noop(tiny):
    graph, v, _ = tiny
    keep_all = passes.ChannelMasks.from_arrays({0: np.ones(4, bool)}, graph)
    assert_identity_when_noop(passes.FoldPrunedBias(keep_all), (graph, v))
    assert_identity_when_noop(passes.pipeline(passes.FoldPrunedBias(keep_all),
                                              passes.SliceChannels(keep_all)), (graph, v))

    def copying(g, variables_):
        return dataclasses.replace(g), jax.tree.map(np.copy, variables_)

    with pytest.raises(AssertionError, match=r"returned an equal but new graph; returned "
                       r"an equal but new variables object"):
        assert_identity_when_noop(copying, (graph, v))


# ------------------------------------------------------------------------- profiles


def test_profiles(monkeypatch):
    before = settings.default
    try:
        monkeypatch.setenv("HYPOTHESIS_PROFILE", "ci")
        assert load_profile() == "ci"
        assert settings.default.derandomize and settings.default.deadline is None
        assert settings.default.max_examples == PROFILES["ci"].max_examples
        assert load_profile("dev") == "dev" and not settings.default.derandomize
        monkeypatch.setenv("HYPOTHESIS_PROFILE", "nightly")
        with pytest.raises(ValueError, match=r"HYPOTHESIS_PROFILE='nightly'.*ci, dev"):
            load_profile()
    finally:
        settings.register_profile("_restore", before)
        settings.load_profile("_restore")
