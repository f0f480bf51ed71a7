"""The reference for `benchmarks/prune.py`: the seed's pruning job, seed-style, in torch.

This follows the way of working of the seed (Lam1360/YOLOv3-model-pruning, explained in
``../shared/seed/yolov3-network-slimming-walkthrough.txt``) and is written for this
benchmark, not copied: a Darknet model as a torch ``nn.ModuleList`` of
``Sequential(Conv2d, BatchNorm2d, activation)``; ``.weights`` loaded with ``np.fromfile``
and ``.data.copy_``; the γ gathered, sorted, ``thre = sorted[int(n * percent)]``, masks
``|γ| >= thre``; ``prune_model_keep_size`` on a ``deepcopy`` of the model (γ and β of
dropped channels zeroed, ``act(β)`` folded into the consumers' running mean or conv
bias); a fresh compact model built from the rewritten module defs, its weights
copied as ``.clone()`` slices of the keep-size model; ``.weights`` written with
``tofile``.

Where the seed hard-codes yolov3 layer indices (``ignore_idx.add(84)``, ``if idx == 79``,
``get_input_mask``'s route cases), this reads the topology from darkslim's graph IR,
so it does the same job darkslim does in ``regular`` mode: the prunable convs are the
BN convs that feed no ``[shortcut]`` and no ``[yolo]``, and dropped channels are folded
into every conv that reads them through ``[route]``/``[upsample]``/``[maxpool]``.

    python benchmarks/reference/seed_prune_torch.py CFG WEIGHTS --percent P --out DIR

writes ``DIR/pruned.cfg``, ``DIR/pruned.weights`` and ``DIR/report.json`` (prunable
layers, threshold, filters per conv, seconds per phase). Benchmark code: torch is
imported here on purpose (the seed pays for it), never in darkslim's library.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from copy import deepcopy
from pathlib import Path

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402  (parsing and topology only)

ACTS = {
    "leaky": lambda x: F.leaky_relu(x, 0.1),
    "linear": lambda x: x,
    "relu": F.relu,
    "logistic": torch.sigmoid,
    "swish": lambda x: x * torch.sigmoid(x),
    "mish": lambda x: x * torch.tanh(F.softplus(x)),
}


def module_defs_of(graph: ir.Graph) -> list[dict]:
    """The seed's ``module_defs`` (one dict per section), from the IR's layers."""
    defs = []
    for layer in graph.layers:
        if isinstance(layer, ir.Conv):
            defs.append({"type": "convolutional", "batch_normalize": layer.batch_normalize,
                         "filters": layer.filters, "size": layer.size,
                         "stride": layer.stride, "pad": layer.pad_pixels,
                         "groups": layer.groups, "activation": layer.activation.value})
        elif isinstance(layer, ir.Route):
            defs.append({"type": "route", "layers": list(layer.inputs),
                         "groups": layer.groups, "group_id": layer.group_id})
        elif isinstance(layer, ir.Shortcut):
            defs.append({"type": "shortcut", "from": list(layer.inputs)})
        else:
            defs.append({"type": layer.kind})
    return defs


def create_modules(module_defs: list[dict], channels: int) -> nn.ModuleList:
    """The seed's ``create_modules``, reduced to what a prune touches."""
    output_filters = [channels]
    module_list = nn.ModuleList()
    for i, mdef in enumerate(module_defs):
        modules = nn.Sequential()
        filters = output_filters[-1]
        if mdef["type"] == "convolutional":
            bn = mdef["batch_normalize"]
            filters = mdef["filters"]
            modules.add_module(f"conv_{i}", nn.Conv2d(
                output_filters[-1], filters, mdef["size"], mdef["stride"], mdef["pad"],
                groups=mdef["groups"], bias=not bn))
            if bn:
                modules.add_module(f"batch_norm_{i}", nn.BatchNorm2d(filters, momentum=0.1,
                                                                      eps=1e-5))
            if mdef["activation"] == "leaky":
                modules.add_module(f"leaky_{i}", nn.LeakyReLU(0.1))
        elif mdef["type"] == "route":
            filters = sum(output_filters[1:][j] for j in mdef["layers"]) // mdef["groups"]
        elif mdef["type"] == "shortcut":
            filters = output_filters[1:][i - 1]
        module_list.append(modules)
        output_filters.append(filters)
    return module_list


class Darknet(nn.Module):
    def __init__(self, module_defs: list[dict], channels: int):
        super().__init__()
        self.module_defs = module_defs
        self.channels = channels
        self.module_list = create_modules(module_defs, channels)
        self.header_info = np.array([0, 2, 0, 0, 0], dtype=np.int32)

    def load_darknet_weights(self, path: str) -> None:
        with open(path, "rb") as f:
            self.header_info = np.fromfile(f, dtype=np.int32, count=5)
            weights = np.fromfile(f, dtype=np.float32)
        ptr = 0
        for mdef, module in zip(self.module_defs, self.module_list):
            if mdef["type"] != "convolutional":
                continue
            conv = module[0]
            if mdef["batch_normalize"]:
                bn = module[1]
                n = bn.bias.numel()
                for t in (bn.bias, bn.weight, bn.running_mean, bn.running_var):
                    t.data.copy_(torch.from_numpy(weights[ptr:ptr + n]).view_as(t))
                    ptr += n
            else:
                n = conv.bias.numel()
                b = torch.from_numpy(weights[ptr:ptr + n]).view_as(conv.bias)
                conv.bias.data.copy_(b)
                ptr += n
            n = conv.weight.numel()
            w = torch.from_numpy(weights[ptr:ptr + n]).view_as(conv.weight)
            conv.weight.data.copy_(w)
            ptr += n
        assert ptr == len(weights), f"{path}: {len(weights) - ptr} floats left over"

    def save_darknet_weights(self, path: str) -> None:
        with open(path, "wb") as fp:
            self.header_info.tofile(fp)
            for mdef, module in zip(self.module_defs, self.module_list):
                if mdef["type"] != "convolutional":
                    continue
                conv = module[0]
                if mdef["batch_normalize"]:
                    bn = module[1]
                    for t in (bn.bias, bn.weight, bn.running_mean, bn.running_var):
                        t.data.cpu().numpy().tofile(fp)
                else:
                    conv.bias.data.cpu().numpy().tofile(fp)
                conv.weight.data.cpu().numpy().tofile(fp)


def parse_module_defs(graph: ir.Graph, module_defs: list[dict]):
    """CBL_idx, Conv_idx, prune_idx: the seed's rule (no BN-conv that feeds a shortcut),
    plus the convs feeding a ``[yolo]``, found in the graph instead of hard-coded."""
    cbl_idx = [i for i, d in enumerate(module_defs)
               if d["type"] == "convolutional" and d["batch_normalize"]]
    conv_idx = [i for i, d in enumerate(module_defs)
                if d["type"] == "convolutional" and not d["batch_normalize"]]
    sources = tensor_sources(graph)
    ignore_idx = set()
    for i, d in enumerate(module_defs):
        if d["type"] == "shortcut":
            for j in d["from"]:
                ignore_idx.update(s for s, _, _ in sources[j])
        elif d["type"] == "yolo":
            ignore_idx.update(s for s, _, _ in sources[i - 1])
    prune_idx = [i for i in cbl_idx if i not in ignore_idx]
    return cbl_idx, conv_idx, prune_idx


def tensor_sources(graph: ir.Graph) -> list[list[tuple[int, int, int]]]:
    """Per layer output, ``(producer, start, stop)`` channel ranges it concatenates;
    the producer is a conv or shortcut index (-1: the image). The seed's
    ``get_input_mask`` cases, from the graph's edges."""
    shapes = ir.verify(graph)
    out: list[list[tuple[int, int, int]]] = []

    def of(j):
        return [(-1, 0, graph.channels)] if j < 0 else out[j]

    for i, layer in enumerate(graph.layers):
        if isinstance(layer, (ir.Conv, ir.Shortcut)):
            src = [(i, 0, shapes[i].c)]
        elif isinstance(layer, ir.Route):
            src = []
            for j in layer.inputs:
                c = shapes[j].c if j >= 0 else graph.channels
                step = c // layer.groups
                lo, hi = layer.group_id * step, (layer.group_id + 1) * step
                pos = 0
                for s, a, b in of(j):
                    x, y = max(lo, pos), min(hi, pos + b - a)
                    if x < y:
                        src.append((s, a + x - pos, a + y - pos))
                    pos += b - a
        else:
            src = list(of(i - 1))
        out.append(src)
    return out


def get_input_mask(sources, idx, masks, channels):
    """The seed's ``get_input_mask``: which input channels of conv ``idx`` survive."""
    if idx == 0:
        return np.ones(channels)
    return np.concatenate([masks[s][a:b] if s in masks else np.ones(b - a)
                           for s, a, b in sources[idx - 1]])


def gather_bn_weights(module_list, prune_idx):
    size_list = [module_list[idx][1].weight.data.shape[0] for idx in prune_idx]
    bn_weights = torch.zeros(sum(size_list))
    index = 0
    for idx, size in zip(prune_idx, size_list):
        bn_weights[index:index + size] = module_list[idx][1].weight.data.abs().clone()
        index += size
    return bn_weights


def obtain_bn_mask(bn_module, thre):
    return bn_module.weight.data.abs().ge(thre).float()


def obtain_filters_mask(model, thre, cbl_idx, prune_idx):
    num_filters, filters_mask = [], []
    for idx in cbl_idx:
        bn_module = model.module_list[idx][1]
        if idx in prune_idx:
            mask = obtain_bn_mask(bn_module, thre).cpu().numpy()
            if int(mask.sum()) == 0:
                raise RuntimeError(f"layer {idx}: channels would be all pruned")
        else:
            mask = np.ones(bn_module.weight.data.shape)
        num_filters.append(int(mask.sum()))
        filters_mask.append(mask.copy())
    return num_filters, filters_mask


def consumers_of(graph, sources, idx):
    """``(conv j, offset, start, stop)``: conv ``idx``'s channels ``start:stop`` are
    input channels ``offset:offset + stop - start`` of conv ``j`` (the seed's
    ``next_idx_list``, for any topology)."""
    found = []
    for j, layer in enumerate(graph.layers):
        if isinstance(layer, ir.Conv) and j > 0:
            pos = 0
            for s, a, b in sources[j - 1]:
                if s == idx:
                    found.append((j, pos, a, b))
                pos += b - a
    return found


def prune_model_keep_size(model, graph, prune_idx, cbl_idx, cblidx2mask):
    pruned_model = deepcopy(model)
    sources = tensor_sources(graph)
    for idx in prune_idx:
        mask = torch.from_numpy(cblidx2mask[idx]).float()
        bn_module = pruned_model.module_list[idx][1]
        bn_module.weight.data.mul_(mask)
        act = ACTS[model.module_defs[idx]["activation"]]
        activation = act(bn_module.bias.data) * (1 - mask)
        for next_idx, pos, a, b in consumers_of(graph, sources, idx):
            next_conv = pruned_model.module_list[next_idx][0]
            conv_sum = next_conv.weight.data[:, pos:pos + b - a].sum(dim=(2, 3))
            offset = conv_sum.matmul(activation[a:b].reshape(-1, 1)).reshape(-1)
            if next_idx in cbl_idx:
                pruned_model.module_list[next_idx][1].running_mean.data.sub_(offset)
            else:
                next_conv.bias.data.add_(offset)
        bn_module.bias.data.mul_(mask)
    return pruned_model


def init_weights_from_loose_model(compact_model, loose_model, graph, cbl_idx, conv_idx,
                                  cblidx2mask):
    sources = tensor_sources(graph)
    for idx in cbl_idx:
        compact_cbl = compact_model.module_list[idx]
        loose_cbl = loose_model.module_list[idx]
        out_channel_idx = np.argwhere(cblidx2mask[idx])[:, 0].tolist()
        compact_bn, loose_bn = compact_cbl[1], loose_cbl[1]
        compact_bn.weight.data = loose_bn.weight.data[out_channel_idx].clone()
        compact_bn.bias.data = loose_bn.bias.data[out_channel_idx].clone()
        compact_bn.running_mean.data = loose_bn.running_mean.data[out_channel_idx].clone()
        compact_bn.running_var.data = loose_bn.running_var.data[out_channel_idx].clone()
        input_mask = get_input_mask(sources, idx, cblidx2mask, graph.channels)
        in_channel_idx = np.argwhere(input_mask)[:, 0].tolist()
        tmp = loose_cbl[0].weight.data[:, in_channel_idx, :, :].clone()
        compact_cbl[0].weight.data = tmp[out_channel_idx, :, :, :].clone()
    for idx in conv_idx:
        compact_conv = compact_model.module_list[idx][0]
        loose_conv = loose_model.module_list[idx][0]
        input_mask = get_input_mask(sources, idx, cblidx2mask, graph.channels)
        in_channel_idx = np.argwhere(input_mask)[:, 0].tolist()
        compact_conv.weight.data = loose_conv.weight.data[:, in_channel_idx, :, :].clone()
        compact_conv.bias.data = loose_conv.bias.data.clone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cfg")
    parser.add_argument("weights")
    parser.add_argument("--percent", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    times = {"import torch": time.perf_counter() - T0}
    t = time.perf_counter()

    def phase(name):
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    graph = ir.parse_cfg(args.cfg)
    grouped = [i for i in graph.conv_indices() if graph.layers[i].groups > 1]
    if grouped:  # the seed slices kernels as (out, in): grouped convs need more
        raise SystemExit(f"{args.cfg}: grouped convs {grouped}: the seed-style "
                         "reference handles groups=1 only")
    module_defs = module_defs_of(graph)
    model = Darknet(module_defs, graph.channels)
    model.load_darknet_weights(args.weights)
    phase("build model + load weights")

    cbl_idx, conv_idx, prune_idx = parse_module_defs(graph, model.module_defs)
    bn_weights = gather_bn_weights(model.module_list, prune_idx)
    sorted_bn = torch.sort(bn_weights)[0]
    thre = sorted_bn[int(len(sorted_bn) * args.percent)]
    num_filters, filters_mask = obtain_filters_mask(model, thre, cbl_idx, prune_idx)
    cblidx2mask = {idx: mask for idx, mask in zip(cbl_idx, filters_mask)}
    phase("threshold + masks")

    pruned_model = prune_model_keep_size(model, graph, prune_idx, cbl_idx, cblidx2mask)
    phase("keep-size (deepcopy + fold)")

    compact_module_defs = deepcopy(model.module_defs)
    for idx, num in zip(cbl_idx, num_filters):
        compact_module_defs[idx]["filters"] = num
    compact_model = Darknet(compact_module_defs, graph.channels)
    compact_model.header_info = model.header_info
    init_weights_from_loose_model(compact_model, pruned_model, graph, cbl_idx, conv_idx,
                                  cblidx2mask)
    phase("compact model + copy weights")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    compact_graph = graph.replace_layers({
        idx: dataclasses.replace(graph.layers[idx], filters=num)
        for idx, num in zip(cbl_idx, num_filters)})
    (out / "pruned.cfg").write_text(ir.write_cfg(compact_graph))
    compact_model.save_darknet_weights(str(out / "pruned.weights"))
    phase("write cfg + weights")
    (out / "report.json").write_text(json.dumps({
        "prunable_layers": prune_idx, "threshold": float(thre),
        "layers": {str(i): int(n) for i, n in zip(cbl_idx, num_filters)},
        "seconds": times}, indent=2) + "\n")


if __name__ == "__main__":
    main()
