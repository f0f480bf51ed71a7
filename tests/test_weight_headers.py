"""The Darknet header travels through every format, and partial files are refused
where running on random weights would be a mistake.

`.weights -> X -> .weights` is byte exact for X = .msgpack, an ultralytics .pt (with the
eps kept at 1e-5) and an erik .pth, on headers 0.2.5 with a 64-bit ``seen`` and 0.1.0
with a 32-bit one. Input files are built byte by byte here, not by the writer under test.
"""

from __future__ import annotations

import numpy as np
import pytest

import frontends
import ir
from darkslim.cli import main
from frontends import CheckpointError, DarknetHeader, WeightsError
from tests.conftest import cfg_path
from tests.test_darknet_weights import header_bytes, random_body

HEADERS = {  # (major, minor, revision, seen, seen is int64)
    "0.2.5-seen64": (0, 2, 5, 2**35 + 123, True),
    "0.1.0-seen32": (0, 1, 0, 32013312, False),
}
VIA = {  # suffix, save options, load options
    "msgpack": ("m.msgpack", {}, {}),
    "ultralytics": ("m.pt", {"bn_eps": 1e-5}, {"bn_eps": 1e-5}),
    "erik": ("m.pth", {"layout": "erik"}, {}),
}


def tiny_weights(tmp_path, header: str, name: str = "in.weights"):
    major, minor, revision, seen, wide = HEADERS[header]
    data = header_bytes(major, minor, revision, seen, wide) + random_body("yolov3-tiny.cfg")
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("via", list(VIA))
@pytest.mark.parametrize("header", list(HEADERS))
def test_weights_through_every_format_and_back_is_byte_exact(tmp_path, header, via):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    path, data = tiny_weights(tmp_path, header)
    name, save_options, load_options = VIA[via]
    loaded = frontends.load_variables(graph, path)
    frontends.save_variables(graph, loaded.variables, tmp_path / name,
                             header=loaded.header, **save_options)
    middle = frontends.load_variables(graph, tmp_path / name, **load_options)
    assert frontends.darknet_header_of(middle.header) == DarknetHeader(*HEADERS[header][:4])
    frontends.save_variables(graph, middle.variables, tmp_path / "out.weights",
                             header=middle.header)
    assert (tmp_path / "out.weights").read_bytes() == data


@pytest.mark.parametrize("header", list(HEADERS))
def test_cli_convert_chain_keeps_the_header(tmp_path, header):
    cfg = str(cfg_path("yolov3-tiny.cfg"))
    path, data = tiny_weights(tmp_path, header)
    chain = ["in.weights", "a.msgpack", "b.pth", "c.pt", "d.msgpack", "out.weights"]
    for src, dst in zip(chain, chain[1:]):
        layout = ["--layout", "erik"] if dst.endswith(".pth") else []
        assert main(["convert", cfg, str(tmp_path / src), str(tmp_path / dst),
                     "--bn-eps", "1e-5", *layout]) == 0
    assert (tmp_path / "out.weights").read_bytes() == data


def test_without_a_header_the_default_is_written(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    variables = frontends.load_variables(graph, tiny_weights(tmp_path, "0.2.5-seen64")[0]
                                         ).variables
    frontends.save_variables(graph, variables, tmp_path / "m.msgpack")  # no header
    back = frontends.load_variables(graph, tmp_path / "m.msgpack")
    assert back.header is None
    frontends.save_variables(graph, back.variables, tmp_path / "out.weights")
    assert (tmp_path / "out.weights").read_bytes()[:20] == header_bytes(0, 2, 0, 0, True)


@pytest.mark.parametrize("stored,match", [
    ({"major": 0, "minor": 2, "revision": 5}, "expected four integers"),
    ((0, 2, 5, "7"), "expected four integers"),
    ((0, 2, 2**31, 7), "revision=2147483648: expected a signed 32-bit"),
    ((0, 1, 0, 2**31), "seen=2147483648: expected a signed 32-bit"),
    ((0, 2, 0, 2**63), "seen=9223372036854775808: expected a signed 64-bit"),
])
def test_a_stored_header_that_cannot_be_written_is_an_error(stored, match):
    with pytest.raises(WeightsError, match=match):
        DarknetHeader.from_stored(stored, "m.msgpack")
    with pytest.raises(CheckpointError, match=match):
        DarknetHeader.from_stored(stored, "m.pt", CheckpointError)


def test_malformed_header_in_a_msgpack_names_the_file(tmp_path):
    from flax import serialization

    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    path, _ = tiny_weights(tmp_path, "0.2.5-seen64")
    frontends.save_variables(graph, frontends.load_variables(graph, path).variables,
                             tmp_path / "m.msgpack", header=DarknetHeader(0, 2, 5, 7))
    tree = serialization.msgpack_restore((tmp_path / "m.msgpack").read_bytes())
    tree["darknet_header"] = {"major": 0, "minor": 2, "revision": 5, "seen": "many"}
    (tmp_path / "bad.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    with pytest.raises(WeightsError, match=r"bad\.msgpack: darknet_header .*expected four"):
        frontends.load_variables(graph, tmp_path / "bad.msgpack")


# -- partial files ---------------------------------------------------------------------

def test_library_refuses_partial_files_only_when_asked(tmp_path):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    path, data = tiny_weights(tmp_path, "0.2.5-seen64")
    (tmp_path / "head.weights").write_bytes(data[:20])
    assert frontends.load_variables(graph, tmp_path / "head.weights").loaded_convs == 0
    with pytest.raises(WeightsError) as info:
        frontends.load_variables(graph, tmp_path / "head.weights", allow_partial=False)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "head.weights"))
    assert "holds 0 of 13 (only the header) convs" in message
    assert "allow_partial=True" in message and "--" not in message
    whole = frontends.load_variables(graph, path, allow_partial=False)
    assert not whole.partial


@pytest.mark.parametrize("name,backbone", [
    ("darknet53.conv.74", True), ("yolov4-tiny.conv.29", True), ("tiny.weights", False),
    ("tiny.conv.weights", False), ("conv.74.weights", False), ("m.74", False)])
def test_backbone_names(name, backbone):
    assert frontends.is_backbone_name(name) == backbone


RUN_CFG = """[net]
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
filters=18
size=1
stride=1
activation=linear
[yolo]
mask=0,1,2
anchors=4,4, 8,8, 16,16
classes=1
num=3
"""


@pytest.fixture
def header_only(tmp_path):
    """A cfg of 2 convs and a .weights file holding only the header."""
    (tmp_path / "net.cfg").write_text(RUN_CFG)
    (tmp_path / "head.weights").write_bytes(header_bytes(0, 2, 5, 99, True))
    np.save(tmp_path / "x.npy", np.full((1, 3, 32, 32), 0.5, np.float32))
    return tmp_path


COMMANDS = {
    "run": lambda d: ["run", str(d / "net.cfg"), str(d / "head.weights"), "--input",
                      str(d / "x.npy"), "--out", str(d / "out.npz")],
    "convert": lambda d: ["convert", str(d / "net.cfg"), str(d / "head.weights"),
                          str(d / "out.msgpack")],
    # --threshold: freshly initialised γ are all 1, which a --percent prune refuses to rank
    "prune": lambda d: ["prune", str(d / "net.cfg"), str(d / "head.weights"),
                        "--threshold", "0.5", "--no-check", "--out", str(d / "pruned")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_header_only_weights_are_refused_unless_allow_partial(header_only, command,
                                                               capsys):
    argv = COMMANDS[command](header_only)
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{header_only / 'head.weights'}: holds 0 of 2 (only the header) convs" in err
    assert "pass --allow-partial" in err and "allow_partial" not in err
    assert not any(p.name.startswith("out") or p.name == "pruned"
                   for p in header_only.iterdir())
    assert main([*argv, "--allow-partial"]) == 0
    assert "0 of 2 convs" in " ".join(capsys.readouterr().out.split())
