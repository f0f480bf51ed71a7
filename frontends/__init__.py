"""Frontends: the weight formats people already have, in and out of the variables pytree.

- Darknet ``.weights`` (`frontends.darknet`), byte-exact round trip, partial backbones
  (``darknet53.conv.74``: a numeric suffix also means Darknet);
- torch ``.pt``/``.pth`` checkpoints of the ultralytics and eriklindernoren projects
  (`frontends.torch_ckpt`; torch is imported only when one is read or written);
- Flax ``.msgpack`` (`frontends.msgpack`);
- weights of another cfg as the start of yours (`frontends.transfer`: load what
  matches, re-initialise the heads) and Darknet's ``partial`` (`write_partial`).

>>> save_variables(graph, variables, "yolov3.weights", header=DarknetHeader(0, 2, 5, 64))
()
>>> lw = load_variables(graph, "yolov3.weights")
>>> lw.header, lw.loaded_convs == lw.total_convs
(DarknetHeader(major=0, minor=2, revision=5, seen=64), True)
>>> warnings = save_variables(graph, lw.variables, "yolov3.pt", layout="erik",
...                           header=lw.header)  # the header travels with the weights
>>> load_variables(graph, "yolov3.pt").header.darknet_header
DarknetHeader(major=0, minor=2, revision=5, seen=64)
"""

from __future__ import annotations

from frontends._atomic import atomic_path, write_atomic
from frontends.darknet import (
    PARTIAL_HEADER,
    DarknetHeader,
    read_darknet,
    write_darknet,
    write_partial,
)
from frontends.errors import CheckpointError, WeightsError
from frontends.files import (
    FORMATS,
    darknet_header_of,
    format_of,
    is_backbone_name,
    load_variables,
    save_variables,
)
from frontends.msgpack import read_msgpack, write_msgpack
from frontends.torch_ckpt import (
    DEFAULT_BN_EPS,
    LAYOUTS,
    CheckpointMeta,
    read_torch,
    state_dict_from_variables,
    write_torch,
)
from frontends.transfer import (
    LayerChange,
    Transfer,
    TransferReport,
    retarget_heads,
    transfer_variables,
)
from frontends.variables import (
    RUNTIME_BN_EPS,
    LoadedWeights,
    Variables,
    check_variables,
    default_variables,
    expected_shapes,
)

__all__ = [
    "atomic_path", "write_atomic", "DEFAULT_BN_EPS", "FORMATS", "LAYOUTS", "RUNTIME_BN_EPS",
    "CheckpointError",
    "CheckpointMeta", "DarknetHeader", "LoadedWeights", "Variables", "WeightsError",
    "check_variables", "darknet_header_of", "default_variables", "expected_shapes",
    "format_of", "is_backbone_name",
    "load_variables", "read_darknet", "read_msgpack", "read_torch", "save_variables",
    "state_dict_from_variables", "write_darknet", "write_msgpack", "write_partial",
    "write_torch", "PARTIAL_HEADER", "LayerChange", "Transfer", "TransferReport",
    "retarget_heads", "transfer_variables",
]
