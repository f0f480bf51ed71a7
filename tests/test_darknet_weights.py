"""Darknet .weights and Flax .msgpack frontends: layout, byte-exact round trips, errors.

Input files are built here byte by byte with numpy (not with the writer under test),
from a float count computed independently of `frontends`.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import frontends
import ir
from darkslim.cli import main
from frontends import DarknetHeader, WeightsError
from ir import layer_key
from tests.conftest import cfg_path

ROOT = Path(__file__).resolve().parents[1]


# -- building files by hand ------------------------------------------------------------

def conv_float_counts(graph: ir.Graph) -> list[tuple[int, int]]:
    """(layer index, floats) of every conv, as Darknet's load_weights reads them."""
    shapes = ir.verify(graph)
    counts = []
    for i, layer in enumerate(graph.layers):
        if isinstance(layer, ir.Conv):
            cin = shapes[i - 1].c if i else graph.channels
            vectors = 4 if layer.batch_normalize else 1
            weights = layer.filters * (cin // layer.groups) * layer.size ** 2
            counts.append((i, layer.filters * vectors + weights))
    return counts


def header_bytes(major: int, minor: int, revision: int, seen: int, wide: bool) -> bytes:
    return (np.array([major, minor, revision], "<i4").tobytes()
            + np.array([seen], "<i8" if wide else "<i4").tobytes())


@functools.lru_cache(maxsize=4)
def random_body(cfg: str, seed: int = 0) -> bytes:
    n = sum(c for _, c in conv_float_counts(ir.parse_cfg(cfg_path(cfg))))
    return np.random.default_rng(seed).random(n, dtype=np.float32).tobytes()


HEADERS = {  # (major, minor, revision, seen, seen is int64)
    "v0.2.0-int64-seen": (0, 2, 0, 2**40 + 12345, True),
    "v0.1.0-int32-seen": (0, 1, 0, 32013312, False),
}


def tiny_file(tmp_path: Path, n_bytes: int | None = None, name="tiny.weights") -> Path:
    data = header_bytes(0, 2, 0, 7, True) + random_body("yolov3-tiny.cfg")
    path = tmp_path / name
    path.write_bytes(data if n_bytes is None else data[:n_bytes])
    return path


# -- round trips -----------------------------------------------------------------------

@pytest.mark.parametrize("header", list(HEADERS), ids=list(HEADERS))
@pytest.mark.parametrize("cfg", ["yolov3.cfg", "yolov3-tiny.cfg", "yolov3-spp.cfg"])
def test_round_trip_is_byte_exact(tmp_path, cfg, header):
    major, minor, revision, seen, wide = HEADERS[header]
    graph = ir.parse_cfg(cfg_path(cfg))
    data = header_bytes(major, minor, revision, seen, wide) + random_body(cfg)
    (tmp_path / "in.weights").write_bytes(data)
    loaded = frontends.load_variables(graph, tmp_path / "in.weights")
    assert loaded.header == DarknetHeader(major, minor, revision, seen)
    assert loaded.header.seen_bytes == (8 if wide else 4)
    assert loaded.format == "darknet" and not loaded.partial and not loaded.warnings
    assert loaded.loaded_convs == loaded.total_convs == len(graph.conv_indices())
    shapes = frontends.expected_shapes(graph)
    assert _tree_map(np.shape, loaded.variables) == shapes
    assert all(a.dtype == np.float32 for a in _leaves(loaded.variables))
    frontends.save_variables(graph, loaded.variables, tmp_path / "out.weights",
                             header=loaded.header)
    assert (tmp_path / "out.weights").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.weights", "out.weights"]


def _tree_map(fn, tree):
    return {k: _tree_map(fn, v) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def _leaves(tree):
    for v in tree.values():
        yield from _leaves(v) if isinstance(v, dict) else (v,)


def test_values_land_where_darknet_puts_them(tmp_path):
    # BN conv, grouped BN conv, plain conv with bias: every float gets a distinct value.
    graph = ir.parse_cfg(
        "[net]\nwidth=8\nheight=8\nchannels=3\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"
        "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=3\npad=1\ngroups=2\n"
        "activation=leaky\n"
        "[convolutional]\nfilters=5\nsize=1\nactivation=linear\n")
    counts = conv_float_counts(graph)
    body = np.arange(sum(c for _, c in counts), dtype=np.float32)
    path = tmp_path / "m.weights"
    path.write_bytes(header_bytes(0, 2, 5, 0, True) + body.tobytes())
    v = frontends.load_variables(graph, path).variables
    p, s = v["params"], v["batch_stats"]
    # layer 0: beta, gamma, mean, var (4 each), then OIHW (4, 3, 3, 3)
    np.testing.assert_array_equal(p["layer_0"]["bn"]["bias"], body[0:4])
    np.testing.assert_array_equal(p["layer_0"]["bn"]["scale"], body[4:8])
    np.testing.assert_array_equal(s["layer_0"]["bn"]["mean"], body[8:12])
    np.testing.assert_array_equal(s["layer_0"]["bn"]["var"], body[12:16])
    oihw = body[16:16 + 108].reshape(4, 3, 3, 3)
    k0 = p["layer_0"]["conv"]["kernel"]
    assert k0.shape == (3, 3, 3, 4)
    assert k0[2, 1, 0, 3] == oihw[3, 0, 2, 1]
    np.testing.assert_array_equal(k0, oihw.transpose(2, 3, 1, 0))
    # layer 1: grouped, (6, 4/2, 3, 3) on disk, (3, 3, 2, 6) inside
    start = 124 + 24
    k1 = p["layer_1"]["conv"]["kernel"]
    assert k1.shape == (3, 3, 2, 6)
    np.testing.assert_array_equal(k1, body[start:start + 108].reshape(6, 2, 3, 3)
                                  .transpose(2, 3, 1, 0))
    # layer 2: bias first, then (5, 6, 1, 1)
    start += 108
    assert set(p["layer_2"]["conv"]) == {"kernel", "bias"} and "layer_2" not in s
    np.testing.assert_array_equal(p["layer_2"]["conv"]["bias"], body[start:start + 5])
    np.testing.assert_array_equal(p["layer_2"]["conv"]["kernel"][0, 0],
                                  body[start + 5:start + 35].reshape(5, 6).T)
    assert frontends.expected_shapes(graph)["params"]["layer_1"]["conv"]["kernel"] == (
        3, 3, 2, 6)


@pytest.mark.parametrize("version,seen_bytes", [
    ((0, 2, 0), 8), ((0, 1, 0), 4), ((0, 0, 1), 4), ((1, 0, 0), 8), ((0, 1000, 0), 4),
    ((1000, 2, 0), 4)])
def test_seen_width_follows_the_version(version, seen_bytes):
    header = DarknetHeader(*version, seen=3)
    assert header.seen_bytes == seen_bytes
    assert len(header.to_bytes()) == 12 + seen_bytes


def test_writing_jax_style_contiguous_arrays_gives_the_same_bytes(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    path = tiny_file(tmp_path)
    loaded = frontends.load_variables(graph, path)
    copied = _tree_map(lambda a: np.array(a, dtype=np.float32, order="C"), loaded.variables)
    frontends.save_variables(graph, copied, tmp_path / "b.weights",
                             header=DarknetHeader(0, 2, 0, 7))
    assert (tmp_path / "b.weights").read_bytes() == path.read_bytes()


# -- partial files ---------------------------------------------------------------------

def test_partial_backbone_loads_the_first_convs(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    counts = conv_float_counts(graph)
    n_floats = sum(c for _, c in counts[:10])
    path = tiny_file(tmp_path, 20 + 4 * n_floats, name="yolov3-tiny.conv.10")
    loaded = frontends.load_variables(graph, path, seed=3)  # numeric suffix: Darknet
    assert loaded.format == "darknet"
    assert (loaded.loaded_convs, loaded.total_convs, loaded.partial) == (10, 13, True)
    assert len(loaded.warnings) == 1
    assert "first 10 of 13 convs" in loaded.warnings[0]
    assert "other 3 are freshly initialised" in loaded.warnings[0]
    full = frontends.load_variables(graph, tiny_file(tmp_path))
    fresh = frontends.default_variables(graph, seed=3)
    for n, (index, _) in enumerate(counts):
        key = layer_key(index)
        want = full if n < 10 else fresh
        want = want.variables if n < 10 else want
        for got_leaf, want_leaf in zip(_leaves(loaded.variables["params"][key]),
                                       _leaves(want["params"][key])):
            np.testing.assert_array_equal(got_leaf, want_leaf)
    # Written back, the file is whole and starts with the backbone's bytes.
    frontends.save_variables(graph, loaded.variables, tmp_path / "whole.weights",
                             header=loaded.header)
    whole = (tmp_path / "whole.weights").read_bytes()
    assert len(whole) == 20 + 4 * sum(c for _, c in counts)
    assert whole.startswith(path.read_bytes())


def test_default_variables_are_darknets_and_seeded():
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    a = frontends.default_variables(graph, seed=1)
    b = frontends.default_variables(graph, seed=1)
    c = frontends.default_variables(graph, seed=2)
    k = a["params"]["layer_2"]["conv"]["kernel"]
    np.testing.assert_array_equal(k, b["params"]["layer_2"]["conv"]["kernel"])
    assert not np.array_equal(k, c["params"]["layer_2"]["conv"]["kernel"])
    limit = np.sqrt(2 / (3 * 3 * 16))  # Darknet: uniform in ±sqrt(2 / fan_in)
    assert np.abs(k).max() <= limit and abs(k.std() - limit / np.sqrt(3)) < 0.05 * limit
    np.testing.assert_array_equal(a["params"]["layer_0"]["bn"]["scale"], 1)
    np.testing.assert_array_equal(a["batch_stats"]["layer_0"]["bn"]["var"], 1)
    np.testing.assert_array_equal(a["params"]["layer_15"]["conv"]["bias"], 0)


# -- errors ----------------------------------------------------------------------------

def test_truncated_file_names_layer_line_and_offset(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    counts = conv_float_counts(graph)
    start = 20 + 4 * sum(c for _, c in counts[:4])  # conv 5 starts here
    index = counts[4][0]
    path = tiny_file(tmp_path, start + 4 * counts[4][1] // 2)
    with pytest.raises(WeightsError) as info:
        frontends.load_variables(graph, path)
    message = str(info.value)
    layer = graph.layers[index]
    assert message.startswith(str(path))
    assert f"layer {index} " in message and "conv 5 of 13" in message
    assert f"yolov3-tiny.cfg:{layer.line}" in message
    assert f"byte offset {start}" in message
    assert f"{4 * counts[4][1] // 2} bytes remain" in message


@pytest.mark.parametrize("n_bytes", [0, 11, 14, 18])
def test_truncated_header(tmp_path, n_bytes):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    path = tiny_file(tmp_path, n_bytes)
    with pytest.raises(WeightsError, match=rf"{n_bytes} bytes, too short for .*header"):
        frontends.load_variables(graph, path)


def test_header_only_file_loads_nothing(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    loaded = frontends.load_variables(graph, tiny_file(tmp_path, 20))
    assert loaded.loaded_convs == 0 and loaded.partial
    assert "first 0 of 13 convs" in loaded.warnings[0]


@pytest.mark.parametrize("extra,floats_left",
                         [(12, "3 floats"), (6, "1 floats and 2 bytes")])
def test_over_long_file_names_offset_and_floats_left(tmp_path, extra, floats_left):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    path = tiny_file(tmp_path)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + bytes(extra))
    with pytest.raises(WeightsError) as info:
        frontends.load_variables(graph, path)
    message = str(info.value)
    assert f"{extra} bytes ({floats_left}) left after the last conv" in message
    assert f"byte offset {size}" in message
    assert "layer 22 " in message and "another cfg?" in message


def test_weights_for_another_cfg_fail(tmp_path):
    path = tiny_file(tmp_path)
    bigger = ir.parse_cfg(cfg_path("yolov3.cfg"))
    with pytest.raises(WeightsError, match=r"ends inside layer \d+ .*another cfg\?"):
        frontends.load_variables(bigger, path)
    one_class = ir.parse_cfg(cfg_path("yolov3-tiny.cfg").read_text()
                             .replace("classes=80", "classes=1")
                             .replace("filters=255", "filters=18"))
    with pytest.raises(WeightsError, match=r"left after the last conv.*another cfg\?"):
        frontends.load_variables(one_class, path)


def test_connected_weights_round_trip_in_darknets_order(tmp_path):
    graph = ir.parse_cfg("[net]\nwidth=2\nheight=2\nchannels=1\n"
                         "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n"
                         "[connected]\nbatch_normalize=1\noutput=3\nactivation=linear\n")
    floats = np.arange(2 + 2 + 3 + 24 + 3 * 3, dtype="<f4")
    path = tmp_path / "m.weights"
    path.write_bytes(header_bytes(0, 2, 5, 7, True) + floats.tobytes())
    v = frontends.load_variables(graph, path).variables
    # load_connected_weights: biases, weights (output x inputs), scales, mean, variance
    np.testing.assert_array_equal(v["params"]["layer_1"]["bn"]["bias"], [4, 5, 6])
    kernel = v["params"]["layer_1"]["dense"]["kernel"]
    assert kernel.shape == (8, 3) and kernel[1, 0] == 8 and kernel[0, 1] == 15
    np.testing.assert_array_equal(v["params"]["layer_1"]["bn"]["scale"], [31, 32, 33])
    np.testing.assert_array_equal(v["batch_stats"]["layer_1"]["bn"]["var"], [37, 38, 39])
    frontends.save_variables(graph, v, tmp_path / "back.weights",
                             header=frontends.load_variables(graph, path).header)
    assert (tmp_path / "back.weights").read_bytes() == path.read_bytes()


def test_unsupported_weighted_layer_is_refused(tmp_path):
    graph = ir.parse_cfg("[net]\nwidth=4\nheight=4\nchannels=1\n"
                         "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n"
                         "[shortcut]\nfrom=-1\nweights_type=per_feature\n"
                         "weights_normalization=relu\n")
    path = tmp_path / "m.weights"
    path.write_bytes(header_bytes(0, 2, 0, 0, True) + bytes(4 * (2 + 2 + 2)))
    with pytest.raises(WeightsError, match=r"layer 1 \(\[shortcut\] .*cannot read"):
        frontends.load_variables(graph, path)
    with pytest.raises(WeightsError, match=r"layer 1 \(\[shortcut\] .*cannot write"):
        frontends.save_variables(graph, frontends.default_variables(graph), path)


def test_write_refuses_misshapen_variables_and_leaves_the_file(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    variables = frontends.default_variables(graph)
    bad = {**variables, "params": {**variables["params"], "layer_2": {
        **variables["params"]["layer_2"],
        "conv": {"kernel": np.zeros((3, 3, 16, 31), np.float32)}}}}
    del bad["params"]["layer_4"]
    target = tmp_path / "out.weights"
    target.write_bytes(b"old")
    with pytest.raises(WeightsError) as info:
        frontends.save_variables(graph, bad, target)
    message = str(info.value)
    assert "params/layer_2/conv/kernel (layer 2 ([convolutional] at " in message
    assert "expected shape (3, 3, 16, 32), found (3, 3, 16, 31)" in message
    assert "params/layer_4/conv/kernel (layer 4 " in message and "missing" in message
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.weights"]


def test_torch_file_named_weights_is_recognised(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    (tmp_path / "m.weights").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(WeightsError, match=r"m\.weights: a zip archive \(a torch "
                                           r"checkpoint\?\).*name it \.pt"):
        frontends.load_variables(graph, tmp_path / "m.weights")


def test_unknown_suffix_names_what_is_expected(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    with pytest.raises(WeightsError, match=r"m\.h5: unknown weights suffix '\.h5': "
                                           r"expected \.weights .*\.pt or \.pth.*\.msgpack"):
        frontends.load_variables(graph, tmp_path / "m.h5")
    with pytest.raises(WeightsError, match="unknown weights suffix"):
        frontends.save_variables(graph, frontends.default_variables(graph),
                                 tmp_path / "m.onnx")


# -- msgpack ---------------------------------------------------------------------------

def test_msgpack_round_trip_and_shape_check(tmp_path):
    from flax import serialization

    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    loaded = frontends.load_variables(graph, tiny_file(tmp_path))
    frontends.save_variables(graph, loaded.variables, tmp_path / "m.msgpack")
    raw = serialization.msgpack_restore((tmp_path / "m.msgpack").read_bytes())
    assert raw["params"]["layer_0"]["conv"]["kernel"].shape == (3, 3, 3, 16)
    back = frontends.load_variables(graph, tmp_path / "m.msgpack")
    assert back.format == "msgpack" and back.loaded_convs == 13
    frontends.save_variables(graph, back.variables, tmp_path / "b.weights",
                             header=DarknetHeader(0, 2, 0, 7))
    assert (tmp_path / "b.weights").read_bytes() == (tmp_path / "tiny.weights").read_bytes()

    spp = ir.parse_cfg(cfg_path("yolov3-spp.cfg"))
    with pytest.raises(WeightsError, match=r"m\.msgpack: \d+ variable\(s\) do not fit "
                                           r".*yolov3-spp\.cfg"):
        frontends.load_variables(spp, tmp_path / "m.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"\xc1not msgpack")
    with pytest.raises(WeightsError, match=r"junk\.msgpack: not a Flax msgpack file"):
        frontends.load_variables(graph, tmp_path / "junk.msgpack")


# -- packaging and CLI -----------------------------------------------------------------

def test_import_frontends_pulls_in_neither_torch_nor_flax():
    code = ("import sys, frontends; "
            "print(sorted(m for m in ('torch', 'flax', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_convert_cli_round_trip_and_partial_file(tmp_path, capsys):
    cfg = str(cfg_path("yolov3-tiny.cfg"))
    src = tiny_file(tmp_path)
    assert main(["convert", cfg, str(src), str(tmp_path / "m.msgpack")]) == 0
    assert main(["convert", cfg, str(tmp_path / "m.msgpack"),
                 str(tmp_path / "back.weights")]) == 0
    # the msgpack carries the Darknet header (version 0.2.0, seen 7): byte exact
    assert (tmp_path / "back.weights").read_bytes() == src.read_bytes()
    assert "seen 7" in " ".join(capsys.readouterr().out.split())
    counts = conv_float_counts(ir.parse_cfg(cfg))
    partial = tiny_file(tmp_path, 20 + 4 * sum(c for _, c in counts[:10]), "part.weights")
    # a partial file is refused unless --allow-partial ...
    assert main(["convert", cfg, str(partial), str(tmp_path / "whole.weights")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "part.weights: holds 10 of 13 convs" in err and "--allow-partial" in err
    assert not (tmp_path / "whole.weights").exists()
    assert main(["convert", cfg, str(partial), str(tmp_path / "whole.weights"),
                 "--allow-partial"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "10 of 13 convs" in out and "other 3 are freshly initialised" in out
    # ... or named as a Darknet backbone
    backbone = tmp_path / "yolov3-tiny.conv.10"
    backbone.write_bytes(partial.read_bytes())
    assert main(["convert", cfg, str(backbone), str(tmp_path / "bb.weights")]) == 0
    truncated = tiny_file(tmp_path, 1000, "cut.weights")
    assert main(["convert", cfg, str(truncated), str(tmp_path / "x.weights")]) == 2
    assert not (tmp_path / "x.weights").exists()
