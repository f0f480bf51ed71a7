"""Torch checkpoints (ultralytics and eriklindernoren layouts): round trips, BatchNorm eps,
output parity with a plain torch Darknet (`torch_reference`), safe loading, errors.

(Over 400 lines: both layouts share one set of fixtures and round-trip helpers here.)
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_darknet_weights import header_bytes, random_body
from torch_reference import Darknet

import frontends
import ir
from darkslim.cli import main
from frontends import CheckpointError, DarknetHeader
from tests.conftest import cfg_path

SIZE = 128


# -- helpers ---------------------------------------------------------------------------

def width_reduced(graph: ir.Graph, factor: int = 8) -> ir.Graph:
    return ir.narrow(graph, factor)


GRAPHS = {
    "yolov3-tiny": lambda: ir.parse_cfg(cfg_path("yolov3-tiny.cfg")),
    "yolov3/8": lambda: width_reduced(ir.parse_cfg(cfg_path("yolov3.cfg"))),
}


def module_weights_bytes(model: Darknet, header: bytes) -> bytes:
    """A .weights file of ``model``'s parameters, written here by hand (Darknet order)."""
    parts = [header]
    for i in model.graph.conv_indices():
        conv, bn = model.conv_modules(i)
        vectors = ([bn.bias, bn.weight, bn.running_mean, bn.running_var] if bn is not None
                   else [conv.bias])
        parts += [t.detach().numpy().astype("<f4").tobytes() for t in vectors]
        parts.append(conv.weight.detach().numpy().astype("<f4").tobytes())  # OIHW
    return b"".join(parts)


def image(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def outputs(model: Darknet, x: torch.Tensor) -> tuple[np.ndarray, ...]:
    heads, detections = model(x)
    return (*[h.numpy() for h in heads], detections.numpy())


def max_rel_diff(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> float:
    """Max abs difference of the heads, relative to the heads' scale (max |value|)."""
    return max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(a[:-1], b[:-1]))


def detections_close(a: np.ndarray, b: np.ndarray) -> bool:
    xy_scores = np.r_[0:2, 4:a.shape[-1]]
    return (np.abs(a[..., xy_scores] - b[..., xy_scores]).max() <= 1e-4 * SIZE
            and np.allclose(a[..., 2:4], b[..., 2:4], rtol=1e-3))


def strict_module(graph, state_dict, layout, **kwargs) -> Darknet:
    model = Darknet(graph, layout=layout, **kwargs)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_pt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- byte-exact round trips with the eps kept ------------------------------------------

@pytest.mark.parametrize("cfg", ["yolov3.cfg", "yolov3-tiny.cfg", "yolov3-spp.cfg"])
def test_weights_to_ultralytics_to_weights_is_byte_exact(tmp_path, cfg):
    graph = ir.parse_cfg(cfg_path(cfg))
    data = header_bytes(0, 2, 0, 2**33 + 9, True) + random_body(cfg)
    (tmp_path / "in.weights").write_bytes(data)
    loaded = frontends.load_variables(graph, tmp_path / "in.weights")
    frontends.save_variables(graph, loaded.variables, tmp_path / "m.pt", bn_eps=1e-5,
                             header=loaded.header)
    ckpt = load_pt(tmp_path / "m.pt")
    assert set(ckpt) == {"epoch", "best_fitness", "training_results", "model",
                         "optimizer", "darknet_header"}
    assert ckpt["epoch"] == -1 and ckpt["optimizer"] is None
    assert all(k.startswith("module_list.") for k in ckpt["model"])
    if cfg == "yolov3-tiny.cfg":  # the module itself is cheap enough to build here
        strict_module(graph, ckpt["model"], "ultralytics")
    back = frontends.load_variables(graph, tmp_path / "m.pt", bn_eps=1e-5)
    assert back.header.layout == "ultralytics" and back.header.container == "checkpoint"
    frontends.save_variables(graph, back.variables, tmp_path / "out.weights",
                             header=back.header)
    assert (tmp_path / "out.weights").read_bytes() == data


@pytest.mark.parametrize("cfg,anchor_buffers", [
    ("yolov3.cfg", False), ("yolov3-tiny.cfg", False), ("yolov3-tiny.cfg", True),
    ("yolov3-spp.cfg", False)])
def test_weights_to_erik_to_weights_is_byte_exact(tmp_path, cfg, anchor_buffers):
    graph = ir.parse_cfg(cfg_path(cfg))
    # erik's file is a bare state_dict: no room for the Darknet header, so use the
    # header darkslim writes by default.
    data = DarknetHeader().to_bytes() + random_body(cfg)
    (tmp_path / "in.weights").write_bytes(data)
    loaded = frontends.load_variables(graph, tmp_path / "in.weights")
    frontends.save_variables(graph, loaded.variables, tmp_path / "m.pth", layout="erik",
                             anchor_buffers=anchor_buffers)  # erik's eps is 1e-5 already
    state = load_pt(tmp_path / "m.pth")
    assert all(k.startswith("module_list.") for k in state)
    assert any(k.endswith(".anchors") for k in state) == anchor_buffers
    if cfg == "yolov3-tiny.cfg":
        strict_module(graph, state, "erik", anchor_buffers=anchor_buffers)
    back = frontends.load_variables(graph, tmp_path / "m.pth")
    assert back.header.layout == "erik" and back.header.bn_eps == 1e-5
    assert back.header.anchor_buffers == anchor_buffers
    frontends.save_variables(graph, back.variables, tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes() == data


def test_convert_cli_through_both_layouts(tmp_path, capsys):
    cfg = str(cfg_path("yolov3-tiny.cfg"))
    data = header_bytes(0, 2, 0, 7, True) + random_body("yolov3-tiny.cfg")
    (tmp_path / "in.weights").write_bytes(data)
    steps = [("in.weights", "u.pt", []), ("u.pt", "e.pth", ["--layout", "erik"]),
             ("e.pth", "u2.pt", ["--layout", "ultralytics"]), ("u2.pt", "out.weights", [])]
    for src, dst, extra in steps:
        assert main(["convert", cfg, str(tmp_path / src), str(tmp_path / dst),
                     "--bn-eps", "1e-5", *extra]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "erik layout" in out and "ultralytics layout" in out
    assert "zeros where Darknet and darkslim pad with -inf" in out
    # the erik hop keeps the Darknet header in the state_dict's _metadata: byte exact
    assert (tmp_path / "out.weights").read_bytes() == data


# -- BatchNorm eps: the function is kept -----------------------------------------------

@pytest.mark.parametrize("name", list(GRAPHS))
def test_default_ultralytics_eps_keeps_the_function(tmp_path, name):
    graph = GRAPHS[name]()
    darknet = Darknet(graph, bn_eps=1e-5).randomize(seed=1, size=SIZE)  # eps-1e-5 truth
    (tmp_path / "in.weights").write_bytes(module_weights_bytes(
        darknet, header_bytes(0, 2, 0, 0, True)))
    x = image()
    want = outputs(darknet, x)
    loaded = frontends.load_variables(graph, tmp_path / "in.weights")
    warnings = frontends.save_variables(graph, loaded.variables, tmp_path / "m.pt")
    assert not any(w.startswith("WARNING") for w in warnings)
    ultralytics = strict_module(graph, load_pt(tmp_path / "m.pt")["model"], "ultralytics")
    assert ultralytics.conv_modules(0)[1].eps == 1e-4
    got = outputs(ultralytics, x)
    assert max_rel_diff(got, want) <= 1e-4
    assert detections_close(got[-1], want[-1])
    # the check can fail: the same values without the eps conversion are far off
    unconverted = Darknet.from_variables(graph, loaded.variables, bn_eps=1e-4)
    assert max_rel_diff(outputs(unconverted, x), want) > 1e-2
    # and back to .weights: not byte exact (float32 rounding of v - 9e-5 + 9e-5), but the
    # same function
    back = frontends.load_variables(graph, tmp_path / "m.pt")
    frontends.save_variables(graph, back.variables, tmp_path / "out.weights")
    again = frontends.load_variables(graph, tmp_path / "out.weights").variables
    assert max_rel_diff(outputs(Darknet.from_variables(graph, again), x), want) <= 1e-4


@pytest.mark.parametrize("layout", ["ultralytics", "erik"])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_torch_checkpoint_computes_the_same_after_loading(tmp_path, name, layout):
    graph = GRAPHS[name]()
    erik = layout == "erik"
    model = Darknet(graph, layout=layout, anchor_buffers=erik).randomize(2, size=SIZE)
    if erik:
        torch.save(model.state_dict(), tmp_path / "m.pth")
    else:
        torch.save({"epoch": 12, "best_fitness": np.array(0.5), "training_results": "x",
                    "model": model.state_dict(), "optimizer": None}, tmp_path / "m.pth")
    x = image(3)
    want = outputs(model, x)
    loaded = frontends.load_variables(graph, tmp_path / "m.pth")
    meta = loaded.header
    assert (meta.layout, meta.bn_eps, meta.anchor_buffers) == (
        layout, 1e-4 if layout == "ultralytics" else 1e-5, erik)
    assert meta.container == ("state_dict" if erik else "checkpoint")
    got = outputs(Darknet.from_variables(graph, loaded.variables, bn_eps=1e-5), x)
    assert max_rel_diff(got, want) <= 1e-4
    assert detections_close(got[-1], want[-1])
    # written back in the same layout (eps and buffers from the header) it loads
    # strictly into that project's module and computes the same
    frontends.save_variables(graph, loaded.variables, tmp_path / "back.pt",
                             header=loaded.header)
    state = load_pt(tmp_path / "back.pt")
    again = strict_module(graph, state if erik else state["model"], layout,
                          anchor_buffers=erik)
    assert max_rel_diff(outputs(again, x), want) <= 1e-4


def test_runtime_forward_matches_the_torch_original(tmp_path):
    runtime = pytest.importorskip("runtime")
    if not hasattr(runtime, "forward"):
        pytest.skip("runtime.forward is not there yet")
    for name, make_graph in GRAPHS.items():
        graph = make_graph()
        # Darknet's -inf padding for tiny's size-2 stride-1 pool: the torch projects'
        # zero padding is a known, warned-about difference, not what is tested here.
        model = Darknet(graph, darknet_maxpool=True).randomize(4, size=SIZE)
        torch.save({"model": model.state_dict(), "epoch": 0}, tmp_path / "m.pt")
        x = image(5)
        want = outputs(model, x)
        loaded = frontends.load_variables(graph, tmp_path / "m.pt")
        out = runtime.forward(graph, loaded.variables,
                              np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)))
        got = (*[np.asarray(h).transpose(0, 3, 1, 2) for h in out.heads],
               np.asarray(out.detections))
        assert max_rel_diff(got, want) <= 1e-4, name
        assert detections_close(got[-1], want[-1]), name


def test_small_running_variances_are_reported_loudly(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    variables = frontends.default_variables(graph)
    var = np.ones(16, np.float32)
    var[[3, 5]] = 2e-5  # below the 9e-5 between ultralytics' eps and darkslim's
    variables["batch_stats"]["layer_0"]["bn"]["var"] = var
    warnings = frontends.save_variables(graph, variables, tmp_path / "m.pt")
    loud = [w for w in warnings if w.startswith("WARNING")]
    assert len(loud) == 1
    assert "BatchNorm eps 1e-05 -> 0.0001: 2 running variance(s) in 1 layer(s)" in loud[0]
    assert "layer 0 ([convolutional] at " in loud[0] and "NOT exactly" in loud[0]
    saved = load_pt(tmp_path / "m.pt")["model"]["module_list.0.BatchNorm2d.running_var"]
    assert saved[3] == 0 and saved[5] == 0
    np.testing.assert_allclose(saved[0].item(), 1 - 9e-5, rtol=1e-6)
    # reading a checkpoint trained with an eps below darkslim's has the same problem
    loaded = frontends.load_variables(graph, tmp_path / "m.pt", bn_eps=1e-6)
    assert any(w.startswith("WARNING") and "eps 1e-06 -> 1e-05" in w
               for w in loaded.warnings)


def test_tiny_maxpool_warning_only_where_such_a_pool_is(tmp_path):
    # spp's stride-1 pools (size 5, 9, 13) pad symmetrically in torch too: no warning
    for cfg, expected in (("yolov3-tiny.cfg", 1), ("yolov3-spp.cfg", 0)):
        graph = width_reduced(ir.parse_cfg(cfg_path(cfg)))
        warnings = frontends.save_variables(graph, frontends.default_variables(graph),
                                            tmp_path / "m.pt", bn_eps=1e-5)
        pools = [w for w in warnings if "pad this maxpool with zeros" in w]
        assert len(pools) == expected
        if cfg == "yolov3-tiny.cfg":  # the size-2 stride-1 pool is layer 11
            assert "layer 11 ([maxpool] at " in pools[0]
            assert isinstance(graph.layers[11], ir.MaxPool) and graph.layers[11].stride == 1


# -- safety ----------------------------------------------------------------------------

class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickles_are_refused_and_never_run(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    marker = tmp_path / "PWNED"
    torch.save({"model": Evil(marker), "epoch": 0}, tmp_path / "evil.pt")
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"model": Evil(marker)}, protocol=2))
    for name in ("evil.pt", "raw.pt"):
        with pytest.raises(CheckpointError) as info:
            frontends.load_variables(graph, tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name))
        assert "refused to unpickle" in message and "system" in message
        assert "never runs code" in message
    assert not marker.exists()


def test_other_numpy_values_stay_refused(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    state = Darknet(graph).state_dict()
    torch.save({"model": state, "best_fitness": np.array([1], np.int32)},
               tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        frontends.load_variables(graph, tmp_path / "m.pt")


def _data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def test_numpy_bearing_ultralytics_checkpoints_load_under_both_spellings(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    model = Darknet(graph).randomize(6, small_var=0.0, size=64)
    torch.save({"epoch": 99, "best_fitness": np.array(0.5), "training_results": None,
                "model": model.state_dict(), "optimizer": None}, tmp_path / "np2.pt")
    assert b"numpy._core.multiarray" in _data_pkl(tmp_path / "np2.pt")
    # the same file as numpy 1 pickled it: rewrite the GLOBAL opcodes' module name
    with zipfile.ZipFile(tmp_path / "np2.pt") as src, \
            zipfile.ZipFile(tmp_path / "np1.pt", "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(info, data)
    pkl = _data_pkl(tmp_path / "np1.pt")
    assert b"numpy.core.multiarray" in pkl and b"numpy._core" not in pkl
    want = frontends.load_variables(graph, tmp_path / "np2.pt")
    got = frontends.load_variables(graph, tmp_path / "np1.pt")
    assert got.header.entries == ("epoch", "best_fitness", "training_results", "optimizer")
    for a, b in zip(_leaves(got.variables), _leaves(want.variables)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        got.variables["params"]["layer_0"]["conv"]["kernel"],
        model.state_dict()["module_list.0.Conv2d.weight"].numpy().transpose(2, 3, 1, 0))
    # the allow-list is scoped to the call: plain torch.load still refuses numpy
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "np2.pt", weights_only=True)


def _leaves(tree):
    for v in tree.values():
        yield from _leaves(v) if isinstance(v, dict) else (v,)


def test_legacy_non_zip_checkpoint_loads(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    model = Darknet(graph, layout="erik").randomize(7, small_var=0.0, size=64)
    torch.save(model.state_dict(), tmp_path / "legacy.pth",
               _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(tmp_path / "legacy.pth")
    loaded = frontends.load_variables(graph, tmp_path / "legacy.pth")
    assert loaded.header.layout == "erik"
    np.testing.assert_array_equal(
        loaded.variables["params"]["layer_4"]["bn"]["scale"],
        model.state_dict()["module_list.4.batch_norm_4.weight"].numpy())


# -- errors ----------------------------------------------------------------------------

def test_checkpoint_for_another_cfg_names_the_keys(tmp_path):
    tiny = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    torch.save({"model": Darknet(tiny).state_dict()}, tmp_path / "tiny.pt")
    big = ir.parse_cfg(cfg_path("yolov3.cfg"))
    with pytest.raises(CheckpointError) as info:
        frontends.load_variables(big, tmp_path / "tiny.pt")
    message = str(info.value)
    line = big.layers[0].line
    assert message.startswith(f"{tmp_path / 'tiny.pt'}: ")
    assert "key(s) of this ultralytics checkpoint do not fit" in message
    assert (f"module_list.0.Conv2d.weight (layer 0 ([convolutional] at "
            f"{big.path}:{line})): expected shape (32, 3, 3, 3), found (16, 3, 3, 3)"
            in message)
    assert "... and" in message and "another cfg?" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    state = Darknet(graph, layout="erik").state_dict()
    del state["module_list.2.batch_norm_2.running_var"]
    state["module_list.3.conv_3.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as info:
        frontends.load_variables(graph, tmp_path / "m.pth")
    message = str(info.value)
    assert ("module_list.2.batch_norm_2.running_var (layer 2 ([convolutional] at "
            in message and "missing, expected shape (32,)" in message)
    assert "module_list.3.conv_3.weight: unexpected (shape (2,))" in message
    assert "2 key(s) of this erik checkpoint" in message


def test_erik_anchor_buffers_are_checked_against_the_cfg(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    state = Darknet(graph, layout="erik", anchor_buffers=True).state_dict()
    assert state["module_list.16.yolo_16.anchors"].shape == (3, 2)
    state["module_list.16.yolo_16.anchors"] = state["module_list.16.yolo_16.anchors"] * 2
    torch.save(state, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"anchor buffers differ.*\n.*"
                       r"module_list\.16\.yolo_16\.anchors \(layer 16 \(\[yolo\]"):
        frontends.load_variables(graph, tmp_path / "m.pth")


def test_layout_detection_prefixes_and_precision(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    model = Darknet(graph).randomize(8, small_var=0.0, size=64)
    # DataParallel prefix, float16 storage
    half = {f"module.{k}": (v.half() if v.is_floating_point() else v)
            for k, v in model.state_dict().items()}
    torch.save({"model": half}, tmp_path / "half.pt")
    loaded = frontends.load_variables(graph, tmp_path / "half.pt")
    assert loaded.header.prefix == "module."
    assert any("float16 were converted to float32" in w for w in loaded.warnings)
    # a forced layout that does not match, and keys of no known layout
    with pytest.raises(CheckpointError, match=r"do not fit.*\n.*conv_0\.weight.*missing"):
        frontends.load_variables(graph, tmp_path / "half.pt", layout="erik")
    torch.save({"backbone.0.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"no key looks like a cfg-based YOLO "
                                              r"state_dict \(first keys: backbone"):
        frontends.load_variables(graph, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 this is no zip")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable torch file"):
        frontends.load_variables(graph, tmp_path / "junk.pt")


def test_runtime_initialised_jax_variables_save_in_every_format(tmp_path):
    runtime = pytest.importorskip("runtime")
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    variables = runtime.init_variables(graph, seed=0)  # jax arrays
    want = np.asarray(variables["params"]["layer_2"]["conv"]["kernel"])
    for name in ("m.weights", "m.pt", "m.pth", "m.msgpack"):
        frontends.save_variables(graph, variables, tmp_path / name, bn_eps=1e-5)
        got = frontends.load_variables(graph, tmp_path / name, bn_eps=1e-5).variables
        np.testing.assert_array_equal(got["params"]["layer_2"]["conv"]["kernel"], want)


def test_prune_from_a_pt_gives_a_strictly_loadable_pruned_pt(tmp_path):
    runtime = pytest.importorskip("runtime")
    graph = GRAPHS["yolov3/8"]()
    net = tuple((k, str(SIZE) if k in ("width", "height") else v) for k, v in graph.net)
    graph = dataclasses.replace(graph, net=net)
    (tmp_path / "m.cfg").write_text(ir.write_cfg(graph))
    model = Darknet(graph).randomize(10, size=SIZE)
    torch.save({"epoch": 5, "best_fitness": np.array(0.25), "model": model.state_dict()},
               tmp_path / "m.pt")
    assert main(["prune", str(tmp_path / "m.cfg"), str(tmp_path / "m.pt"), "--percent",
                 "0.3", "--no-check", "--out", str(tmp_path / "out")]) == 0
    pruned = ir.parse_cfg(tmp_path / "out" / "pruned.cfg")
    assert ir.count_params(pruned) < ir.count_params(graph)
    ckpt = load_pt(tmp_path / "out" / "pruned.pt")
    torch_pruned = strict_module(pruned, ckpt["model"], "ultralytics")  # eps 1e-4
    compact = frontends.load_variables(pruned, tmp_path / "out" / "pruned.weights")
    x = image(11)
    out = runtime.forward(pruned, compact.variables,
                          np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)))
    got = (*[np.asarray(h).transpose(0, 3, 1, 2) for h in out.heads],
           np.asarray(out.detections))
    want = outputs(torch_pruned, x)
    assert max_rel_diff(got, want) <= 1e-4
    assert detections_close(got[-1], want[-1])


def test_checkpoints_are_written_atomically_under_their_own_name(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    variables = frontends.default_variables(graph)
    frontends.save_variables(graph, variables, tmp_path / "best.pt", bn_eps=1e-5)
    with zipfile.ZipFile(tmp_path / "best.pt") as z:  # as torch.save(.., "best.pt") does
        assert z.namelist()[0].startswith("best/")
    bad = {**variables, "params": {**variables["params"]}}
    del bad["params"]["layer_0"]
    with pytest.raises(CheckpointError, match="params/layer_0/conv/kernel"):
        frontends.save_variables(graph, bad, tmp_path / "best.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
