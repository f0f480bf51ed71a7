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
                       layer_refs,
)
from ir.resize import narrow, with_input_size
from ir.rules import Refusal, RuleTable, check_table
from ir.shapes import Shape, input_shape, total_stride, verify
from ir.variables import Variables, check_variables, expected_shapes, init_variables, layer_key

__all__ = [
    "AvgPool", "Connected", "Cost", "Crop", "Detection", "Dropout", "GaussianYolo", "LocalAvgPool",
    "Region",
    "Reorg", "Reorg3d", "Sam", "ScaleChannels", "Softmax",
    "Activation", "CfgError", "Conv", "KINDS", "KindSpec", "Graph", "Layer", "LayerCost",
    "MaxPool", "Refusal", "Route", "RuleTable", "Section", "Shape", "Shortcut", "Upsample",
    "Variables", "Yolo", "check_variables",
    "consumers", "count_flops", "count_params", "expected_shapes", "init_variables",
    "input_shape", "layer_costs", "layer_inputs", "layer_key", "layer_refs", "narrow", "parse_cfg",
    "check_table", "spec_of", "total_stride", "unsupported_reason", "variables_owner", "verify",
    "with_input_size", "write_cfg",
]
