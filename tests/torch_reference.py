"""A plain torch Darknet that executes a cfg the way the torch YOLO projects do.

For tests only. It builds ``module_list``, one ``nn.Sequential`` per cfg section, with
either project's module names, so their checkpoints load with
``load_state_dict(strict=True)``:

- ``layout="ultralytics"``: ``Conv2d``, ``BatchNorm2d`` (eps 1e-4), ``activation``;
- ``layout="erik"``: ``conv_{i}``, ``batch_norm_{i}`` (eps 1e-5), ``leaky_{i}``, and
  ``yolo_{i}`` with ``anchors``/``anchor_grid`` buffers when ``anchor_buffers``.

Like both projects, a size-2 stride-1 ``[maxpool]`` is zero-padded on the right and
bottom (``darknet_maxpool=True`` pads with -inf instead, as Darknet does). The forward
returns the raw maps feeding each ``[yolo]`` (NCHW) and the decoded detections
``(N, boxes, 5 + classes)``: xy = (sigmoid · s − (s − 1)/2 + grid) · stride,
wh = exp · anchor, sigmoid objectness and classes, boxes ordered anchor, y, x.

`Darknet.from_variables` loads a Flax variables pytree by plain transposes, written
here independently of `frontends`, so tests can run converted variables in torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ir
from ir import layer_key

ACTIVATIONS = {
    ir.Activation.LEAKY: lambda: nn.LeakyReLU(0.1),
    ir.Activation.RELU: nn.ReLU,
    ir.Activation.LOGISTIC: nn.Sigmoid,
    ir.Activation.MISH: nn.Mish,
    ir.Activation.SWISH: nn.SiLU,
}
DEFAULT_EPS = {"ultralytics": 1e-4, "erik": 1e-5}


class YOLOLayer(nn.Module):
    def __init__(self, layer: ir.Yolo, buffers: bool) -> None:
        super().__init__()
        self.na = len(layer.mask)
        self.no = layer.classes + 5
        self.scale_x_y = layer.scale_x_y
        anchors = torch.tensor(layer.head_anchors, dtype=torch.float32)
        if buffers:
            self.register_buffer("anchors", anchors)
            self.register_buffer("anchor_grid", anchors.clone().view(1, -1, 1, 1, 2))
        else:
            self.anchor_list = anchors  # a plain attribute: not in the state_dict

    def forward(self, x: torch.Tensor, img_size: int) -> torch.Tensor:
        bs, _, ny, nx = x.shape
        stride = img_size / ny
        p = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2)
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).to(x.dtype)
        anchors = self.anchors if hasattr(self, "anchors") else self.anchor_list
        s = self.scale_x_y
        xy = (torch.sigmoid(p[..., :2]) * s - (s - 1) / 2 + grid) * stride
        wh = torch.exp(p[..., 2:4]) * anchors.view(1, self.na, 1, 1, 2)
        rest = torch.sigmoid(p[..., 4:])
        return torch.cat((xy, wh, rest), -1).reshape(bs, -1, self.no)


class DarknetMaxPool(nn.Module):
    """Darknet's maxpool: pad with -inf, left/top (pad // 2), right/bottom the rest."""

    def __init__(self, layer: ir.MaxPool) -> None:
        super().__init__()
        self.size, self.stride, self.pad = layer.size, layer.stride, layer.pad_total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo = self.pad // 2
        x = F.pad(x, (lo, self.pad - lo, lo, self.pad - lo), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


class Darknet(nn.Module):
    def __init__(self, cfg, layout: str = "ultralytics", bn_eps: float | None = None,
                 anchor_buffers: bool = False, darknet_maxpool: bool = False) -> None:
        super().__init__()
        self.graph = cfg if isinstance(cfg, ir.Graph) else ir.parse_cfg(cfg)
        self.layout = layout
        eps = DEFAULT_EPS[layout] if bn_eps is None else bn_eps
        shapes = ir.verify(self.graph)
        self.module_list = nn.ModuleList()
        ultra = layout == "ultralytics"
        for i, layer in enumerate(self.graph.layers):
            seq = nn.Sequential()
            cin = shapes[i - 1].c if i else self.graph.channels
            if isinstance(layer, ir.Conv):
                bn = layer.batch_normalize
                seq.add_module("Conv2d" if ultra else f"conv_{i}", nn.Conv2d(
                    cin, layer.filters, layer.size, layer.stride,
                    padding=layer.pad_pixels, groups=layer.groups, bias=not bn))
                if bn:
                    seq.add_module("BatchNorm2d" if ultra else f"batch_norm_{i}",
                                   nn.BatchNorm2d(layer.filters, eps=eps, momentum=0.03))
                if layer.activation in ACTIVATIONS:
                    name = "activation" if ultra else f"{layer.activation.value}_{i}"
                    seq.add_module(name, ACTIVATIONS[layer.activation]())
            elif isinstance(layer, ir.MaxPool):
                if darknet_maxpool:
                    seq.add_module("MaxPool2d" if ultra else f"maxpool_{i}",
                                   DarknetMaxPool(layer))
                else:
                    if layer.size == 2 and layer.stride == 1:
                        seq.add_module("ZeroPad2d" if ultra else f"_debug_padding_{i}",
                                       nn.ZeroPad2d((0, 1, 0, 1)))
                    seq.add_module("MaxPool2d" if ultra else f"maxpool_{i}", nn.MaxPool2d(
                        layer.size, layer.stride, padding=(layer.size - 1) // 2))
            elif isinstance(layer, ir.Upsample):
                seq.add_module("Upsample" if ultra else f"upsample_{i}",
                               nn.Upsample(scale_factor=layer.stride, mode="nearest"))
            elif isinstance(layer, ir.Yolo):
                seq.add_module("yolo" if ultra else f"yolo_{i}",
                               YOLOLayer(layer, buffers=anchor_buffers and not ultra))
            elif not isinstance(layer, (ir.Route, ir.Shortcut)):
                raise NotImplementedError(f"[{layer.kind}] at line {layer.line}")
            self.module_list.append(seq)

    def forward(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        img_size = x.shape[-1]
        outs: list[torch.Tensor] = []
        heads, dets = [], []
        for i, (layer, module) in enumerate(zip(self.graph.layers, self.module_list)):
            if isinstance(layer, ir.Route):
                parts = []
                for j in layer.inputs:
                    c = outs[j].shape[1] // layer.groups
                    parts.append(outs[j][:, layer.group_id * c:(layer.group_id + 1) * c])
                x = torch.cat(parts, 1)
            elif isinstance(layer, ir.Shortcut):
                x = outs[i - 1]
                for j in layer.inputs[1:]:
                    y = outs[j]
                    c = min(x.shape[1], y.shape[1])  # Darknet adds the common channels
                    x = torch.cat((x[:, :c] + y[:, :c], x[:, c:]), 1)
                if layer.activation in ACTIVATIONS:
                    x = ACTIVATIONS[layer.activation]()(x)
            elif isinstance(layer, ir.Yolo):
                heads.append(x)
                dets.append(module[0](x, img_size))
            else:
                x = module(x)
            outs.append(x)
        return tuple(heads), torch.cat(dets, 1)

    def conv_modules(self, index: int) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
        seq = self.module_list[index]
        conv = next(m for m in seq if isinstance(m, nn.Conv2d))
        bn = next((m for m in seq if isinstance(m, nn.BatchNorm2d)), None)
        return conv, bn

    @classmethod
    def from_variables(cls, cfg, variables: dict, bn_eps: float = 1e-5,
                       **kwargs) -> "Darknet":
        """A module in eval mode computing what Flax ``variables`` compute with
        ``bn_eps`` (HWIO kernels transposed to OIHW here, by hand)."""
        model = cls(cfg, bn_eps=bn_eps, **kwargs)
        with torch.no_grad():
            for i in model.graph.conv_indices():
                conv, bn = model.conv_modules(i)
                p = variables["params"][layer_key(i)]
                kernel = torch.from_numpy(np.array(p["conv"]["kernel"], np.float32))
                conv.weight.copy_(kernel.permute(3, 2, 0, 1))
                if bn is None:
                    conv.bias.copy_(torch.from_numpy(np.array(p["conv"]["bias"])))
                else:
                    s = variables["batch_stats"][layer_key(i)]["bn"]
                    bn.weight.copy_(torch.from_numpy(np.array(p["bn"]["scale"])))
                    bn.bias.copy_(torch.from_numpy(np.array(p["bn"]["bias"])))
                    bn.running_mean.copy_(torch.from_numpy(np.array(s["mean"])))
                    bn.running_var.copy_(torch.from_numpy(np.array(s["var"])))
        return model.eval()

    def randomize(self, seed: int = 0, small_var: float = 0.25, size: int = 128
                  ) -> "Darknet":
        """Random weights and calibrated BN statistics, in place (test setup); eval mode.

        Kernels are He-normal; each BN's running mean/var are set to the statistics of
        its input on a random batch, and each conv without BN is scaled to unit output
        std, so heads stay O(1) (and decoded boxes finite) through deep networks.
        A ``small_var`` fraction of each BN's channels have their conv filters scaled
        by 1e-2, so their running variances lie near 2e-4, where eps 1e-4 vs 1e-5 moves
        the output far beyond float32 rounding.
        """
        g = torch.Generator().manual_seed(seed)
        hooks = []
        with torch.no_grad():
            for i in self.graph.conv_indices():
                conv, bn = self.conv_modules(i)
                fan_in = conv.weight[0].numel()
                weight = torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
                if conv.bias is not None:
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
                if bn is not None:
                    n = bn.num_features
                    small = torch.rand(n, generator=g) < small_var
                    weight[small] *= 1e-2
                    bn.weight.copy_(0.5 + torch.rand(n, generator=g))
                    bn.bias.copy_(torch.randn(n, generator=g) * 0.1)
                    bn.num_batches_tracked.fill_(1000)
                    hooks.append(bn.register_forward_pre_hook(_calibrate))
                else:
                    hooks.append(conv.register_forward_hook(_unit_scale))
                conv.weight.copy_(weight)
            self.eval()
            x = torch.rand((2, self.graph.channels, size, size), generator=g)
            self(x)
        for hook in hooks:
            hook.remove()
        return self


def _calibrate(bn: nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
    x = inputs[0]
    bn.running_mean.copy_(x.mean((0, 2, 3)))
    # At least 2e-4: darkslim's eps conversion for ultralytics (eps 1e-4) shifts the
    # variances by 9e-5, which must stay exact; eps still matters at this size.
    bn.running_var.copy_(x.var((0, 2, 3)).clamp(min=2e-4))


def _unit_scale(conv: nn.Conv2d, inputs, output: torch.Tensor) -> torch.Tensor:
    scale = output.std()
    conv.weight.div_(scale)
    conv.bias.div_(scale)
    return output / scale
