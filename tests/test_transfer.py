"""Transfer to your classes: `convert --partial N` (Darknet's ``partial``), `train
--weights W --reinit-heads` (frontends.transfer) and `--freeze N` (runtime.optim.freeze).

Every check runs on seeded random weights of the 80-class yolov3-tiny cfg in tests/cfg
(a fresh clone); the same checks on the real COCO weights in
../shared/models/yolov3-tiny-coco are skipped, saying so, when that folder is absent.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import frontends
import ir
from conftest import cfg_path
from frontends.darknet import weighted_layers
from frontends.transfer import retarget_heads, transfer_variables
from runtime.train import init_head_biases

COCO = Path(__file__).resolve().parents[2] / "shared" / "models" / "yolov3-tiny-coco"
HEADS = (15, 22)  # yolov3-tiny's two convs that feed a [yolo]


def _coco() -> tuple[Path, Path]:
    cfg, weights = COCO / "yolov3-tiny.cfg", COCO / "yolov3-tiny.weights"
    if not weights.exists():
        pytest.skip(f"{weights} absent: the real COCO yolov3-tiny checks need ../shared")
    return cfg, weights


def _cli(*argv: str) -> int:
    from darkslim.cli import main

    return main(list(argv))


@pytest.fixture(scope="module")
def tiny80(tmp_path_factory):
    """yolov3-tiny (80 classes) with seeded random weights, as a .weights file whose
    header is not Darknet's own (version 0.2.0, seen 12345)."""
    root = tmp_path_factory.mktemp("tiny80")
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    variables = frontends.default_variables(graph, seed=7, initialiser="sparse")
    weights = root / "tiny80.weights"
    frontends.save_variables(graph, variables, weights,
                             header=frontends.DarknetHeader(0, 2, 0, 12345))
    return graph, variables, weights


def _one_class(graph: ir.Graph, size: int = 64) -> ir.Graph:
    """The user's cfg: classes=1, filters=18 before each [yolo], a small input."""
    return ir.with_input_size(retarget_heads(graph, 1), size)


def _fresh(graph: ir.Graph, seed: int = 0) -> dict:
    from runtime import init_variables

    return init_head_biases(graph, init_variables(graph, seed))


# ------------------------------------------------------------------- convert --partial

def _documented_partial(graph: ir.Graph, variables: dict, upto: int) -> bytes:
    """Darknet's partial file from its documented format, independently of
    frontends.darknet: int32 0, 2, 5 (the build's version), uint64 seen 0, then per
    [convolutional] before ``upto``: biases (β), [γ, mean, var], weights OIHW."""
    out = [struct.pack("<iiiQ", 0, 2, 5, 0)]
    for i, layer in enumerate(graph.layers[:upto]):
        if not isinstance(layer, ir.Conv):
            continue
        p, s = variables["params"][f"layer_{i}"], variables["batch_stats"].get(f"layer_{i}")
        if layer.batch_normalize:
            parts = [p["bn"]["bias"], p["bn"]["scale"], s["bn"]["mean"], s["bn"]["var"]]
        else:
            parts = [p["conv"]["bias"]]
        parts.append(np.transpose(p["conv"]["kernel"], (3, 2, 0, 1)))
        out += [np.ascontiguousarray(a, "<f4").tobytes() for a in parts]
    return b"".join(out)


def test_partial_writes_darknets_bytes(tiny80, tmp_path):
    graph, variables, weights = tiny80
    out = tmp_path / "tiny.conv.15"
    assert _cli("convert", str(cfg_path("yolov3-tiny.cfg")), str(weights), str(out),
                "--partial", "15") == 0
    expected = _documented_partial(graph, variables, 15)
    assert out.read_bytes() == expected
    # the source said seen 12345: partial writes 0, and Darknet's own version
    assert struct.unpack_from("<iiiQ", out.read_bytes()) == (0, 2, 5, 0)
    # a backbone of 9 convs loads as one, the rest freshly initialised
    loaded = frontends.load_variables(graph, out)
    assert (loaded.loaded_convs, loaded.total_convs) == (9, 13)


def test_partial_reads_only_the_first_layers_of_a_file_for_other_heads(tiny80, tmp_path):
    """As Darknet's load_weights_upto: the 80-class file cut for the 1-class cfg."""
    graph, variables, weights = tiny80
    cfg = tmp_path / "one.cfg"
    cfg.write_text(ir.write_cfg(_one_class(graph)))
    out = tmp_path / "one.conv.15"
    assert _cli("convert", str(cfg), str(weights), str(out), "--partial", "15") == 0
    assert out.read_bytes() == _documented_partial(graph, variables, 15)


def test_partial_of_the_real_coco_weights_is_the_prefix_of_the_file(tmp_path):
    cfg, weights = _coco()
    out = tmp_path / "yolov3-tiny.conv.15"
    assert _cli("convert", str(cfg), str(weights), str(out), "--partial", "15") == 0
    original = weights.read_bytes()
    major, minor, _ = struct.unpack_from("<iii", original)
    body = original[20 if major * 10 + minor >= 2 else 16:]
    written = out.read_bytes()
    assert written[:20] == struct.pack("<iiiQ", 0, 2, 5, 0)
    graph = ir.parse_cfg(cfg)
    floats = sum(int(np.prod(s)) for i in weighted_layers(graph) if i < 15
                 for s in frontends.expected_shapes(graph)["params"][f"layer_{i}"]
                 ["conv"].values()) + sum(
        4 * graph.layers[i].filters for i in weighted_layers(graph)
        if i < 15 and graph.layers[i].batch_normalize)
    assert written[20:] == body[:4 * floats]


@pytest.mark.parametrize("argv, words", [
    (("out.pt", "--partial", "15"), "writes a Darknet file"),
    (("out.conv.40", "--partial", "40"), "expected a layer count in 1..24"),
    (("out.conv.0", "--partial", "0"), "expected a layer count in 1..24"),
])
def test_partial_refusals(tiny80, tmp_path, capsys, argv, words):
    _, _, weights = tiny80
    out, *flags = argv
    assert _cli("convert", str(cfg_path("yolov3-tiny.cfg")), str(weights),
                str(tmp_path / out), *flags) == 2
    assert words in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / out).exists()


# ---------------------------------------------------------------------- --reinit-heads

def _check_transfer(graph: ir.Graph, source_vars: dict, transfer, fresh: dict) -> None:
    report = transfer.report
    assert report.reinitialised_indices == HEADS
    assert [c.reason for c in report.changed] == ["head", "head"]
    assert report.loaded == tuple(i for i in weighted_layers(graph) if i not in HEADS)
    for i in report.loaded:
        key = f"layer_{i}"
        for collection in ("params", "batch_stats"):
            got = jax.tree.map(np.asarray, transfer.variables[collection].get(key, {}))
            want = jax.tree.map(np.asarray, source_vars[collection].get(key, {}))
            assert jax.tree.structure(got) == jax.tree.structure(want)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_array_equal(a, b)
    for i in HEADS:  # the fresh init with the prior biases, not anything of the file
        for a, b in zip(jax.tree.leaves(transfer.variables["params"][f"layer_{i}"]),
                        jax.tree.leaves(fresh["params"][f"layer_{i}"])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        bias = np.asarray(transfer.variables["params"][f"layer_{i}"]["conv"]["bias"])
        assert bias.shape == (18,) and np.all(bias.reshape(3, 6)[:, 4] < -1)  # the prior
    frontends.check_variables(graph, transfer.variables, "transfer")


def test_other_heads_are_an_error_naming_the_flag(tiny80):
    graph, _, weights = tiny80
    one = _one_class(graph)
    with pytest.raises(frontends.WeightsError, match="reinit_heads=True") as info:
        transfer_variables(one, weights, _fresh(one))
    text = str(info.value)
    assert "classes=80" in text and "layer 15" in text and "layer 22" in text
    assert "255 filters" in text and "18 filters" in text


def test_reinit_heads_loads_every_matching_layer(tiny80):
    graph, variables, weights = tiny80
    one = _one_class(graph)
    fresh = _fresh(one)
    _check_transfer(one, variables, transfer_variables(one, weights, fresh,
                                                       reinit_heads=True), fresh)


def test_reinit_heads_from_the_real_coco_weights():
    cfg, weights = _coco()
    coco = ir.parse_cfg(cfg)
    source = frontends.load_variables(coco, weights).variables
    one = _one_class(coco)
    fresh = _fresh(one)
    transfer = transfer_variables(one, weights, fresh, reinit_heads=True)
    _check_transfer(one, source, transfer, fresh)
    assert "classes=80" in transfer.report.source_cfg


def test_a_matching_file_loads_whole_and_reinit_heads_still_resets_the_heads(tiny80):
    graph, variables, weights = tiny80
    fresh = _fresh(graph)
    plain = transfer_variables(graph, weights, fresh)
    assert plain.report.changed == () and len(plain.report.loaded) == 13
    reset = transfer_variables(graph, weights, fresh, reinit_heads=True)
    assert reset.report.reinitialised_indices == HEADS
    assert all("feeds [yolo]" in c.detail and "filters" not in c.detail
               for c in reset.report.changed)


def test_a_backbone_leaves_the_rest_to_the_init(tiny80, tmp_path):
    graph, variables, weights = tiny80
    backbone = tmp_path / "tiny.conv.15"
    frontends.write_partial(graph, variables, backbone, 15)
    one = _one_class(graph)
    transfer = transfer_variables(one, backbone, _fresh(one))  # no flag needed
    assert transfer.report.loaded == tuple(i for i in weighted_layers(graph) if i < 15)
    assert transfer.report.absent_indices == (15, 18, 21, 22)


def test_a_shape_difference_off_the_heads_is_named(tiny80, tmp_path):
    graph, variables, weights = tiny80
    wider = graph.replace_layers({13: dataclasses.replace(graph.layers[13], filters=128)})
    with pytest.raises(frontends.WeightsError, match="--weights-cfg"):
        transfer_variables(wider, weights, _fresh(wider), reinit_heads=True)
    t = transfer_variables(wider, weights, _fresh(wider), reinit_heads=True, source=graph)
    reasons = {c.index: c.reason for c in t.report.changed}
    # 13 is narrower, 14 and 18 read it: their kernels differ too
    assert reasons == {13: "shape", 14: "shape", 15: "head", 18: "shape", 22: "head"}
    assert "256 filters" in t.report.changed[0].detail


# ------------------------------------------------------------------------------ freeze

_SMALL = """[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=4,5, 8,9, 16,14
classes=1
num=3
"""


@pytest.mark.parametrize("steps", [None, 2])
def test_freeze_keeps_the_first_layers_bit_identical(steps):
    from runtime.optim import freeze
    from runtime.step import init_train_state, make_train_step

    graph = ir.parse_cfg(_SMALL)
    variables = _fresh(graph)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    targets = np.full((2, 4, 5), -1.0, np.float32)
    targets[:, 0] = [0, 0.5, 0.5, 0.3, 0.4]
    tx = optax.chain(optax.adamw(1e-2, weight_decay=5e-4),
                     freeze(variables["params"], 2, steps))
    step = make_train_step(graph, tx)
    state = init_train_state(variables, tx)
    for _ in range(2):
        state, _ = step(state, images, targets)
    for key, before in variables["params"].items():
        same = [np.array_equal(np.asarray(a), np.asarray(b))
                for a, b in zip(jax.tree.leaves(state.params[key]), jax.tree.leaves(before))]
        assert all(same) if key in ("layer_0", "layer_1") else not any(same), key
    state, _ = step(state, images, targets)
    moved = not np.array_equal(np.asarray(state.params["layer_0"]["conv"]["kernel"]),
                               variables["params"]["layer_0"]["conv"]["kernel"])
    assert moved == (steps is not None)  # lifted after 2 steps, or never


# -------------------------------------------------------------------------------- CLI

def _one_class_data(root: Path):
    from runtime.synth import SynthSpec, write_synth

    return write_synth(root, train=8, valid=4, size=64, seed=0,
                       spec=SynthSpec(classes=("circle",)))


def _train(data, cfg: Path, weights: Path, out: Path, *flags: str) -> int:
    return _cli("train", str(data.data), str(cfg), "--weights", str(weights), "--epochs",
                "1", "--batch", "8", "--out", str(out), "--quiet", "--no-eval",
                "--precise-bn", "0", "--no-augment", *flags)


def test_train_reinit_heads_and_freeze(tiny80, tmp_path, capsys):
    graph, variables, weights = tiny80
    data = _one_class_data(tmp_path / "data")
    cfg = tmp_path / "one.cfg"
    cfg.write_text(ir.write_cfg(_one_class(graph)))
    assert _train(data, cfg, weights, tmp_path / "no") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pass --reinit-heads" in err and "255 filters" in err
    assert not (tmp_path / "no" / "last.weights").exists()

    out = tmp_path / "run"
    assert _train(data, cfg, weights, out, "--reinit-heads", "--freeze", "13") == 0
    text = " ".join(capsys.readouterr().err.split())
    assert "loaded 11 layers" in text and "layers 0, 2, 4, 6, 8, 10, 12-14, 18, 21" in text
    assert text.count("re-initialised (head)") == 2
    assert "layer 15 ([convolutional]" in text and "layer 22 ([convolutional]" in text
    assert "layers before 13 frozen" in text
    trained = frontends.load_variables(_one_class(graph), out / "last.weights").variables
    for i in (0, 2, 12):  # frozen: as loaded (the BN running statistics do move)
        for part in ("conv", "bn"):
            for name, value in trained["params"][f"layer_{i}"][part].items():
                np.testing.assert_array_equal(value, variables["params"][f"layer_{i}"]
                                              [part][name])
    assert not np.array_equal(trained["params"]["layer_13"]["conv"]["kernel"],
                              variables["params"]["layer_13"]["conv"]["kernel"])


@pytest.mark.slow
def test_train_from_the_real_coco_weights(tmp_path, capsys):
    cfg, weights = _coco()
    data = _one_class_data(tmp_path / "data")
    one = tmp_path / "one.cfg"
    one.write_text(ir.write_cfg(_one_class(ir.parse_cfg(cfg))))
    assert _train(data, one, weights, tmp_path / "run", "--reinit-heads") == 0
    text = " ".join(capsys.readouterr().err.split())
    assert "classes=80 in its [yolo] heads" in text and "loaded 11 layers" in text
    assert (tmp_path / "run" / "last.weights").exists()


@pytest.mark.parametrize("flags, words", [
    (("--freeze", "99"), "--freeze 99: expected a layer index"),
    (("--freeze-epochs", "1"), "needs --freeze N"),
])
def test_train_flag_refusals(tiny80, tmp_path, capsys, flags, words):
    graph, _, weights = tiny80
    data = _one_class_data(tmp_path / "data")
    cfg = tmp_path / "one.cfg"
    cfg.write_text(ir.write_cfg(_one_class(graph)))
    assert _train(data, cfg, weights, tmp_path / "x", *flags) == 2
    assert words in " ".join(capsys.readouterr().err.split())


def test_a_msgpack_for_other_heads_needs_its_cfg(tiny80, tmp_path):
    """Only a Darknet file's class count is inferred (from its size); for the other
    formats the error names --weights-cfg, and with the source cfg they transfer."""
    graph, variables, _ = tiny80
    path = tmp_path / "tiny80.msgpack"
    frontends.save_variables(graph, variables, path)
    one = _one_class(graph)
    with pytest.raises(frontends.WeightsError, match="--weights-cfg"):
        transfer_variables(one, path, _fresh(one), reinit_heads=True)
    fresh = _fresh(one)
    _check_transfer(one, variables, transfer_variables(one, path, fresh, reinit_heads=True,
                                                       source=graph), fresh)
