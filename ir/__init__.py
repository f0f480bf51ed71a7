"""darkslim's intermediate representation of Darknet networks (numpy-free, jax-free).

`ir.variables` owns the variables layout; its initialisers import numpy when called.
"""

from ir.activations import Activation
from ir.cfg import parse_cfg, write_cfg
from ir.cost import LayerCost, count_flops, count_params, layer_costs
from ir.errors import CfgError
from ir.kinds import KINDS, KindSpec, spec_of, unsupported_reason
from ir.kinds.base import variables_owner
from ir.layers import (
    AvgPool,
    Connected,
    Conv,
    Cost,
    Crop,
    Detection,
    Dropout,
    GaussianYolo,
    Graph,
    Layer,
    LocalAvgPool,
    MaxPool,
    Region,
    Reorg,
    Reorg3d,
    Route,
    Sam,
    ScaleChannels,
    Section,
    Shortcut,
    Softmax,
    Upsample,
    Yolo,
    consumers,
    layer_inputs,
)
from ir.resize import narrow, with_input_size
from ir.shapes import Shape, input_shape, verify
from ir.variables import Variables, check_variables, expected_shapes, init_variables, layer_key

__all__ = [
    "AvgPool", "Connected", "Cost", "Crop", "Detection", "Dropout", "GaussianYolo", "LocalAvgPool",
    "Region",
    "Reorg", "Reorg3d", "Sam", "ScaleChannels", "Softmax",
    "Activation", "CfgError", "Conv", "KINDS", "KindSpec", "Graph", "Layer", "LayerCost",
    "MaxPool", "Route", "Section", "Shape", "Shortcut", "Upsample", "Variables", "Yolo",
    "check_variables",
    "consumers", "count_flops", "count_params", "expected_shapes", "init_variables",
    "input_shape", "layer_costs", "layer_inputs", "layer_key", "narrow", "parse_cfg",
    "spec_of", "unsupported_reason", "variables_owner", "verify",
    "with_input_size", "write_cfg",
]
