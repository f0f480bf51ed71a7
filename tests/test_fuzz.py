"""In-process fuzz of the readers: `ir.parse_cfg` (and `ir.verify` of what parses) and
the weights readers (``.weights``, ``.msgpack``, torch ``.pt``).

Whatever the bytes, only darkslim's typed errors may escape: `ir.CfgError`,
`frontends.WeightsError`, `frontends.CheckpointError` (each a ValueError naming the file
and what was expected). Inputs are random token soups, mutations of real files (byte
flips, truncations, insertions, deleted or rewritten lines) and random structures in
each container format (msgpack trees, pickled dicts of tensors).

``FUZZ_EXAMPLES`` (500) examples per target run with the suite; the ``slow`` variants
run 10,000 each (``make test-slow``, or ``pytest -m slow tests/test_fuzz.py``).

(Over 400 lines: one input strategy per format, each kept beside the target it feeds.)
"""

from __future__ import annotations

import functools
import io
import os
import string
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import frontends
import ir
from tests.conftest import cfg_path

TYPED = (ir.CfgError, frontends.WeightsError, frontends.CheckpointError)
FUZZ_EXAMPLES = int(os.environ.get("DARKSLIM_FUZZ_EXAMPLES", "500"))
SLOW_EXAMPLES = 10_000

SMALL_CFG = """[net]
width=16
height=16
channels=3
[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=4
size=1
activation=leaky
[shortcut]
from=-2
[route]
layers=-1,0
[convolutional]
filters=12
size=1
activation=linear
[yolo]
mask=0,1
anchors=2,3, 4,5
classes=1
num=2
"""
GRAPH = ir.parse_cfg(SMALL_CFG)


def fuzz(examples: int):
    """The settings of one fuzz target (the profile's derandomisation is kept)."""
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def only_typed_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except TYPED as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return None


# -- strategies ------------------------------------------------------------------------

SECTIONS = ["net", "network", "convolutional", "conv", "shortcut", "route", "upsample",
            "maxpool", "max", "yolo", "sam", "reorg", "avgpool", "connected", "dropout",
            "scale_channels", "local", "", "Net", "CONVOLUTIONAL", "[", "weird"]
KEYS = ["batch_normalize", "filters", "size", "stride", "pad", "padding", "groups",
        "activation", "from", "layers", "mask", "anchors", "classes", "num", "width",
        "height", "channels", "group_id", "weights_type", "dilation", "jitter",
        "stride_x", "stride_y", "antialiasing", "reverse", "", "Filters", "x y"]
VALUES = ["0", "1", "2", "3", "4", "-1", "-2", "-3", "-100", "100", "65536", "2147483648",
          "99999999999999999999", "1.5", "-0.5", "nan", "inf", "-inf", "1e309", "", "a",
          "0x10", "1,", ",", "1,2", "-1,-3", "-1,0", "0,1,2", "10,13, 16,30", "1,2,3",
          "leaky", "linear", "mish", "swish", "logistic", "relu", "tanh", "LEAKY", "=",
          "1=2", "#", "[x]", "é", "\t1", " 2 "]


@st.composite
def token_cfgs(draw) -> str:
    """Lines of sections and key=value pairs drawn from Darknet's vocabulary."""
    lines = []
    if draw(st.booleans()):
        lines.append("[net]")
        lines += [f"{k}={draw(st.sampled_from(['8', '16', '3', '0', '-8', '7']))}"
                  for k in ("width", "height", "channels") if draw(st.booleans())]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind < 3:
            lines.append(f"[{draw(st.sampled_from(SECTIONS))}]")
        elif kind < 8:
            lines.append(f"{draw(st.sampled_from(KEYS))}={draw(st.sampled_from(VALUES))}")
        elif kind == 8:
            lines.append(draw(st.sampled_from(["#", ";c", "", " ", "x", "[net", "]",
                                               "key = 1 # comment", "\x0b", "\u2028"])))
        else:
            lines.append(draw(st.text(string.printable, max_size=12)))
    return draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)


def real_cfg_lines() -> list[str]:
    return SMALL_CFG.splitlines() + cfg_path("yolov3-tiny.cfg").read_text().splitlines()[:60]


@st.composite
def mutated_cfgs(draw) -> str:
    """A real cfg with lines deleted, duplicated, moved or given other values."""
    lines = list(draw(st.sampled_from([SMALL_CFG.splitlines(),
                                       cfg_path("yolov3-tiny.cfg").read_text()
                                       .splitlines()])))
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif op == 2 and "=" in lines[i]:
            lines[i] = f"{lines[i].split('=')[0]}={draw(st.sampled_from(VALUES))}"
        elif op == 3:
            lines.insert(i, f"{draw(st.sampled_from(KEYS))}={draw(st.sampled_from(VALUES))}")
        else:
            lines.insert(i, f"[{draw(st.sampled_from(SECTIONS))}]")
    return "\n".join(lines)


@st.composite
def mutated_bytes(draw, base: bytes) -> bytes:
    """``base`` with a few bytes flipped, inserted or deleted, or truncated."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[i:i + draw(st.integers(1, 16))]
        elif op == 3:
            del data[i:]
        elif op == 4 and len(data) >= 16:  # a random header: version, seen
            data[:12] = np.array(draw(st.lists(st.sampled_from(
                [0, 1, 2, 5, 9, 10, 999, 1000, -1, 2**31 - 1, -2**31]), min_size=3,
                max_size=3)), "<i4").tobytes()
    return bytes(data)


@functools.cache
def _scratch() -> Path:
    """One temporary folder for the whole run (removed at exit)."""
    folder = tempfile.TemporaryDirectory(prefix="darkslim-fuzz-")
    _FOLDERS.append(folder)
    return Path(folder.name)


_FOLDERS: list[tempfile.TemporaryDirectory] = []


def write(name: str, data: bytes) -> Path:
    path = _scratch() / name
    path.write_bytes(data)
    return path


# -- parse_cfg ---------------------------------------------------------------------------

def check_cfg_text(text: str) -> None:
    graph = only_typed_errors(ir.parse_cfg, text)
    if graph is None:
        return
    again = ir.parse_cfg(ir.write_cfg(graph))  # what parses writes back and re-parses
    assert again == graph
    only_typed_errors(ir.verify, graph)


CFG_INPUTS = st.one_of(token_cfgs(), mutated_cfgs(),
                       st.text(max_size=200).map(lambda t: "[net]\n" + t))


def _test_parse_cfg(text):
    check_cfg_text(text)


def _test_parse_cfg_file(data):
    path = write("m.cfg", data)
    graph = only_typed_errors(ir.parse_cfg, path)
    if graph is not None:
        only_typed_errors(ir.verify, graph)


CFG_FILES = st.one_of(st.binary(max_size=300), mutated_bytes(SMALL_CFG.encode()),
                      st.just(np.zeros(20, np.uint8).tobytes()))

test_parse_cfg = fuzz(FUZZ_EXAMPLES)(given(CFG_INPUTS)(_test_parse_cfg))
test_parse_cfg_slow = pytest.mark.slow(fuzz(SLOW_EXAMPLES)(given(CFG_INPUTS)(
    _test_parse_cfg)))
test_parse_cfg_file = fuzz(FUZZ_EXAMPLES // 5)(given(data=CFG_FILES)(_test_parse_cfg_file))
test_parse_cfg_file_slow = pytest.mark.slow(fuzz(SLOW_EXAMPLES // 5)(given(
    data=CFG_FILES)(_test_parse_cfg_file)))


# -- .weights ----------------------------------------------------------------------------

def _weights_bytes(graph: ir.Graph, header: tuple[int, int, int, int]) -> bytes:
    buf = io.BytesIO()
    tmp = frontends.DarknetHeader(*header).to_bytes()
    shapes = frontends.expected_shapes(graph)
    n = sum(int(np.prod(s)) for layer in shapes["params"].values()
            for module in layer.values() for s in module.values())
    n += sum(int(np.prod(s)) for layer in shapes["batch_stats"].values()
             for module in layer.values() for s in module.values())
    buf.write(tmp + np.random.default_rng(0).random(n, dtype=np.float32).tobytes())
    return buf.getvalue()


WEIGHTS = _weights_bytes(GRAPH, (0, 2, 5, 77))
WEIGHTS_INPUTS = st.one_of(mutated_bytes(WEIGHTS), st.binary(max_size=64),
                           mutated_bytes(WEIGHTS[:16]))


def _test_read_weights(data, name):
    path = write(name, data)
    loaded = only_typed_errors(frontends.load_variables, GRAPH, path, allow_partial=False)
    if loaded is not None:  # what reads writes back to the same bytes (a backbone:
        # its bytes, then the rest of the network)
        frontends.save_variables(GRAPH, loaded.variables, path.with_suffix(".out"),
                                 format="darknet", header=loaded.header)
        out = path.with_suffix(".out").read_bytes()
        assert out.startswith(data) and (loaded.partial or out == data)


NAMES = st.sampled_from(["m.weights", "m.conv.2"])
test_read_weights = fuzz(FUZZ_EXAMPLES)(given(data=WEIGHTS_INPUTS, name=NAMES)(
    _test_read_weights))
test_read_weights_slow = pytest.mark.slow(fuzz(SLOW_EXAMPLES)(given(
    data=WEIGHTS_INPUTS, name=NAMES)(_test_read_weights)))


@st.composite
def fuzzed_program_bytes(draw):
    """A cfg that parses and verifies, and bytes to read as its weights."""
    text = draw(st.one_of(token_cfgs(), mutated_cfgs()))
    try:
        graph = ir.parse_cfg(text)
        ir.verify(graph)
    except ir.CfgError:
        graph = GRAPH
    sizes = frontends.expected_shapes(graph)["params"]
    # keep default initialisation of what a file lacks affordable
    if sum(int(np.prod(s)) for p in sizes.values() for m in p.values()
           for s in m.values()) > 2_000_000:
        graph = GRAPH
    return graph, draw(st.binary(max_size=400))


def _test_read_weights_for_fuzzed_cfgs(program):
    graph, data = program
    path = write("m.weights", data)
    only_typed_errors(frontends.load_variables, graph, path)


test_read_weights_for_fuzzed_cfgs = fuzz(FUZZ_EXAMPLES // 2)(given(
    program=fuzzed_program_bytes())(_test_read_weights_for_fuzzed_cfgs))
test_read_weights_for_fuzzed_cfgs_slow = pytest.mark.slow(fuzz(SLOW_EXAMPLES)(given(
    program=fuzzed_program_bytes())(_test_read_weights_for_fuzzed_cfgs)))


# -- .msgpack ----------------------------------------------------------------------------

@functools.cache
def _msgpack_bytes() -> bytes:
    from flax import serialization

    variables = frontends.load_variables(GRAPH, _file(WEIGHTS, "w.weights")).variables
    tree = {**variables, "darknet_header": {"major": 0, "minor": 2, "revision": 5,
                                            "seen": 77}}
    return serialization.to_bytes(tree)


def _file(data: bytes, name: str) -> Path:
    return write(f"base-{name}", data)


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                   st.floats(allow_nan=True), st.text(max_size=5), st.binary(max_size=8))


@st.composite
def msgpack_trees(draw) -> bytes:
    """Random msgpack trees shaped like variables, with ndarray ext values."""
    import msgpack
    from flax import serialization

    def array():
        shape = draw(st.lists(st.integers(0, 4), max_size=4))
        dtype = draw(st.sampled_from(["float32", "float64", "int8", "bool", "complex64",
                                      "float16", "<U1", "object", "V3", "bogus"]))
        size = draw(st.integers(0, 64))
        payload = (tuple(shape), dtype, draw(st.binary(min_size=size, max_size=size)))
        return msgpack.ExtType(draw(st.sampled_from([1, 2, 3, 4])),
                               msgpack.packb(payload, use_bin_type=True))

    def node(depth):
        kind = draw(st.integers(0, 4 if depth < 4 else 1))
        if kind == 0:
            return draw(LEAVES)
        if kind == 1:
            return array()
        if kind == 2:
            return [node(depth + 1) for _ in range(draw(st.integers(0, 2)))]
        keys = draw(st.lists(st.sampled_from(["params", "batch_stats", "layer_0",
                                              "layer_1", "layer_4", "conv", "bn",
                                              "kernel", "bias", "scale", "mean", "var",
                                              "darknet_header", "major", "seen", "0"]),
                             max_size=4, unique=True))
        return {k: node(depth + 1) for k in keys}

    tree = node(0)
    if draw(st.booleans()):
        tree = {"params": tree, "batch_stats": {}}
    return serialization.msgpack_serialize(tree) if draw(st.booleans()) else \
        msgpack.packb(tree, use_bin_type=True, default=repr)


@st.composite
def msgpack_inputs(draw) -> bytes:
    return draw(st.one_of(mutated_bytes(_msgpack_bytes()), msgpack_trees(),
                          st.binary(max_size=64)))


def _test_read_msgpack(data):
    path = write("m.msgpack", data)
    only_typed_errors(frontends.load_variables, GRAPH, path)


test_read_msgpack = fuzz(FUZZ_EXAMPLES)(given(data=msgpack_inputs())(_test_read_msgpack))
test_read_msgpack_slow = pytest.mark.slow(fuzz(SLOW_EXAMPLES)(given(
    data=msgpack_inputs())(_test_read_msgpack)))


# -- torch -------------------------------------------------------------------------------

@functools.cache
def _torch_bytes(layout: str) -> bytes:
    loaded = frontends.load_variables(GRAPH, _file(WEIGHTS, "w.weights"))
    path = _file(b"", f"m.{'pt' if layout == 'ultralytics' else 'pth'}")
    frontends.save_variables(GRAPH, loaded.variables, path, layout=layout, bn_eps=1e-5,
                             header=loaded.header)
    return path.read_bytes()


TORCH_KEYS = [f"module_list.{i}.{m}.{p}" for i in (0, 1, 4)
              for m in ("Conv2d", "BatchNorm2d", f"conv_{i}", f"batch_norm_{i}")
              for p in ("weight", "bias", "running_mean", "running_var",
                        "num_batches_tracked")] + [
    "module_list.5.yolo_5.anchors", "module_list.5.yolo_5.anchor_grid", "model",
    "state_dict", "epoch", "darknet_header", "module.module_list.0.Conv2d.weight", "x"]


@st.composite
def torch_objects(draw) -> bytes:
    """Pickled dicts of tensors of random shapes and dtypes, and other values."""
    import torch

    def tensor():
        shape = draw(st.sampled_from([(), (0,), (4,), (12,), (2, 2), (1, 2, 1, 1, 2),
                                      (4, 3, 3, 3), (4, 4, 1, 1), (12, 8, 1, 1),
                                      (3, 3, 3, 4)]))
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16,
                                      torch.bfloat16, torch.int64, torch.bool,
                                      torch.complex64, torch.uint8]))
        return torch.zeros(shape, dtype=dtype)

    def value(depth):
        kind = draw(st.integers(0, 5 if depth < 2 else 2))
        if kind <= 1:
            return tensor()
        if kind == 2:
            return draw(st.one_of(st.none(), st.integers(-2**70, 2**70), st.text(max_size=3),
                                  st.tuples(*[st.integers(-2**70, 2**70)] * 4),
                                  st.lists(st.integers(0, 3), max_size=5)))
        return mapping(depth + 1)

    def mapping(depth):
        keys = draw(st.lists(st.sampled_from(TORCH_KEYS), max_size=8, unique=True))
        out = OrderedDict((k, value(depth)) for k in keys)
        if draw(st.booleans()):
            out._metadata = {"darknet_header": draw(st.one_of(
                st.none(), st.integers(), st.dictionaries(
                    st.sampled_from(["major", "minor", "revision", "seen", "x"]),
                    st.integers(-2**70, 2**70), max_size=5)))}
        return out

    buf = io.BytesIO()
    torch.save(mapping(0) if draw(st.integers(0, 5)) else value(2), buf)
    return buf.getvalue()


@st.composite
def torch_inputs(draw) -> bytes:
    return draw(st.one_of(mutated_bytes(_torch_bytes(draw(st.sampled_from(
        ["ultralytics", "erik"])))), torch_objects(), st.binary(max_size=64)))


def _test_read_torch(data, layout):
    path = write("m.pt", data)
    loaded = only_typed_errors(frontends.load_variables, GRAPH, path, layout=layout)
    if loaded is not None:
        frontends.check_variables(GRAPH, loaded.variables, str(path))


LAYOUT = st.sampled_from([None, "ultralytics", "erik"])
test_read_torch = fuzz(FUZZ_EXAMPLES)(given(data=torch_inputs(), layout=LAYOUT)(
    _test_read_torch))
test_read_torch_slow = pytest.mark.slow(fuzz(SLOW_EXAMPLES)(given(
    data=torch_inputs(), layout=LAYOUT)(_test_read_torch)))
