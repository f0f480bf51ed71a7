"""IR: parse/write of the real cfgs, counts, and errors that name the line."""

from __future__ import annotations

import pytest

import ir
from tests.conftest import cfg_path

REAL = ["yolov3.cfg", "yolov3-tiny.cfg", "yolov3-spp.cfg", "yolov3-hand.cfg",
        "prune_yolov3-hand.cfg"]


@pytest.mark.parametrize("name", REAL)
def test_real_cfg_roundtrip(name):
    graph = ir.parse_cfg(cfg_path(name))
    again = ir.parse_cfg(ir.write_cfg(graph))
    assert again == graph
    assert hash(again) == hash(graph)
    assert ir.verify(again) == ir.verify(graph)


def test_yolov3_totals():
    graph = ir.parse_cfg(cfg_path("yolov3.cfg"))
    assert ir.count_params(graph) == 61_949_149
    assert round(ir.count_flops(graph) / 1e9, 2) == 65.86


def test_yolov3_tiny_params():
    assert ir.count_params(ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))) == 8_852_366


def test_relative_indices_become_absolute():
    graph = ir.parse_cfg(cfg_path("yolov3.cfg"))
    route = graph.layers[86]
    assert isinstance(route, ir.Route) and route.inputs == (85, 61)
    assert route.line == 632
    shortcut = graph.layers[4]
    assert isinstance(shortcut, ir.Shortcut) and shortcut.inputs == (3, 1)


def test_source_lines_do_not_affect_equality():
    a = ir.parse_cfg("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\n")
    b = ir.parse_cfg("[net]\nwidth=32\nheight=32\n\n\n# c\n[convolutional]\nfilters=4\n")
    assert a == b and a.layers[0].line != b.layers[0].line


def test_messy_formatting():
    text = ("  [net]\n width = 64 \nheight=64\n; comment\n[convolutional]\n"
            "filters = 8 # inline\nsize=3\npad=1\nfilters=16\nactivation = leaky\n")
    graph = ir.parse_cfg(text)
    conv = graph.layers[0]
    assert conv.filters == 8  # Darknet's option_find: the first value wins
    assert ("filters", "16") in conv.extra  # the repeat survives a round trip
    assert ir.parse_cfg(ir.write_cfg(graph)) == graph
    assert ir.verify(graph)[0] == ir.Shape(8, 64, 64)


def test_zoo_kinds_parse_get_darknets_shapes_and_round_trip():
    text = ("[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=8\nsize=3\n"
            "pad=1\nactivation=leaky\n[reorg]\nstride=2\n[dropout]\nprobability=.5\n"
            "[avgpool]\n[scale_channels]\nfrom=-3\n[sam]\nfrom=-4\n[reorg3d]\nstride=2\n"
            "[local_avgpool]\nsize=2\nstride=2\n[connected]\noutput=10\n[softmax]\n"
            "groups=1\n[cost]\ntype=sse\n[crnn]\noutput=4\n")
    graph = ir.parse_cfg(text)
    shapes = ir.verify(graph)
    assert shapes[1] == ir.Shape(32, 16, 16)
    assert shapes[3] == ir.Shape(32, 1, 1)
    assert shapes[4] == shapes[5] == ir.Shape(32, 16, 16)
    assert graph.layers[4].inputs == (3, 1) and graph.layers[5].inputs == (4, 1)
    assert shapes[6] == ir.Shape(128, 8, 8) and shapes[7] == ir.Shape(128, 4, 4)
    assert shapes[8] == shapes[9] == shapes[10] == ir.Shape(10, 1, 1)
    assert [type(layer).__name__ for layer in graph.layers] == [
        "Conv", "Reorg", "Dropout", "AvgPool", "ScaleChannels", "Sam", "Reorg3d",
        "LocalAvgPool", "Connected", "Softmax", "Cost", "Section"]
    assert ir.count_params(graph) == 8 * 3 * 9 + 8 + 128 * 16 * 10 + 10
    assert ir.parse_cfg(ir.write_cfg(graph)) == graph
    assert ir.unsupported_reason(graph.layers[-1]) == ""  # [crnn]: kept, never executed


def test_tiny_maxpool_padding():
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    shapes = ir.verify(graph)
    pool = graph.layers[11]
    assert isinstance(pool, ir.MaxPool) and pool.size == 2 and pool.stride == 1
    assert pool.pad_total == 1 and shapes[11] == shapes[10]


BAD = [
    ("[net]\nwidth=32\n[convolutinal]\nfilters=3\n", 3, "Darknet has no [convolutinal]"),
    ("[net]\nwidth=32\n[convolutional]\nfilters=abc\n", 4, "filters=abc: expected an integer"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=3\n[route]\nlayers=3\n", 7,
     "layer 3 is not before this layer (1)"),
    ("[convolutional]\nfilters=3\n", 1, "missing [net]"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\n[convolutional]\n"
     "filters=4\nstride=2\n[route]\nlayers=-1,-2\n", 9, "spatial sizes differ"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\nactivation=tanhh\n", 6,
     "activation=tanhh: not supported"),
    ("[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=20\n[yolo]\nmask=0\n"
     "anchors=1,2\nclasses=2\nnum=1\n", 6, "expected 1 anchors x (2 classes + 5) = 7"),
]


@pytest.mark.parametrize("text,line,reason", BAD)
def test_bad_cfg_names_file_line_and_reason(text, line, reason):
    with pytest.raises(ir.CfgError) as info:
        ir.verify(ir.parse_cfg(text))
    message = str(info.value)
    assert message.startswith(f"<text>:{line}:"), message
    assert reason in message


def test_bad_cfg_file_names_path(tmp_path):
    path = tmp_path / "broken.cfg"
    path.write_text("[net]\nwidth=32\nheight=32\n\n[shortcut]\nfrom=-3\n")
    with pytest.raises(ir.CfgError, match=r"broken.cfg:6: \[shortcut\] from=-3"):
        ir.parse_cfg(path)


def test_missing_file():
    with pytest.raises(ir.CfgError, match="nope.cfg: cannot read cfg"):
        ir.parse_cfg("nope.cfg")


@pytest.mark.parametrize("options,reason", [
    ("stride=0", ":7: [reorg] stride=0: expected a positive integer"),
    ("stride=1.5", ":7: [reorg] stride=1.5: expected an integer"),
    ("stride=2\nreverse=1", ":6: [reorg] (layer 1) stride=2 reverse=1 does not fit the "
     "1x32x32 input"),
])
def test_reorg_options_are_checked(options, reason):
    # found by the fuzz (tests/test_fuzz.py): these were ValueError / ZeroDivisionError
    text = f"[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\n[reorg]\n{options}\n"
    with pytest.raises(ir.CfgError) as info:
        ir.verify(ir.parse_cfg(text))
    assert str(info.value).startswith("<text>:")
    assert reason in str(info.value)


def test_a_binary_file_is_not_a_cfg(tmp_path):
    path = tmp_path / "tiny.cfg"
    path.write_bytes(b"\x00\x00\x00\x00\x02\x00\x00\x00\xa5")
    with pytest.raises(ir.CfgError, match=r"tiny\.cfg: a binary file \(a NUL byte at offset "
                                          r"0\): expected a Darknet cfg"):
        ir.parse_cfg(path)
    path.write_bytes(b"# caf\xe9 (Latin-1)\n[net]\nwidth=8\n")  # text, not UTF-8: read
    assert ir.parse_cfg(path).width == 8


def test_an_odd_anchor_count_reads_as_darknet_does():
    # parse_yolo reads up to num pairs into calloc'd biases: a missing comma (as in
    # cspx-p7-mish_hp.cfg) leaves the last height 0; surplus values are ignored.
    head = "[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=14\n[yolo]\nmask=0,1\nclasses=2\n"
    graph = ir.parse_cfg(head + "num=2\nanchors=10,13, 16 30\n")
    assert graph.layers[1].anchors == ((10.0, 13.0), (1630.0, 0.0))
    graph = ir.parse_cfg(head + "num=2\nanchors=10,13,16,30,33\n")
    assert graph.layers[1].anchors == ((10.0, 13.0), (16.0, 30.0))
    assert ir.parse_cfg(ir.write_cfg(graph)) == graph
