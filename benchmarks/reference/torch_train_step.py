"""The reference for `benchmarks/train.py`: one YOLOv3 training step in torch eager.

What the torch YOLO projects run per batch (ultralytics/yolov3's ``compute_loss``,
the seed's ``updateBN`` sparsity, SGD), written for this benchmark: the network is
`tests.torch_reference.Darknet` (train mode: batch statistics), the loss is
ultralytics' v3 recipe vectorised the way that code is (a Python loop over the three
heads, tensor ops inside): targets matched to the best of all anchors, GIoU box loss,
BCE objectness over every cell (ignore threshold left out, as ultralytics does), BCE
class loss at the assigned cells, the same gains and head balance as
`runtime.loss.LossConfig`. After ``backward()`` the sparsity subgradient
``s·sign(γ)`` is added to the prunable γ's ``.grad`` (the seed's ``updateBN``), then
``SGD(momentum=0.9, weight_decay=5e-4).step()``.

Benchmark code: torch is imported here on purpose, never in darkslim's library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ir
from tests.torch_reference import Darknet

BALANCE = {8: 4.0, 16: 1.0, 32: 0.4}
GAINS = {"box": 0.05, "obj": 1.0, "cls": 0.5}


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of ``cx cy w h`` boxes, row by row."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter + 1e-9
    hull = (torch.max(a2, b2) - torch.min(a1, b1)).prod(1) + 1e-9
    iou = inter / union
    return iou - (hull - union) / hull


def _wh_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    inter = torch.min(wh[:, None], anchors[None]).prod(2)
    return inter / (wh.prod(1)[:, None] + anchors.prod(1)[None] - inter)


def compute_loss(graph: ir.Graph, heads, targets: torch.Tensor, size: int) -> torch.Tensor:
    """``targets``: ``(T, 6)`` rows ``image class cx cy w h`` (normalised)."""
    yolos = graph.yolo_indices()
    anchors_px = torch.tensor(graph.layers[yolos[0]].anchors, dtype=torch.float32)
    best = _wh_iou(targets[:, 4:6] * size, anchors_px).argmax(1)
    box = obj = cls = torch.zeros(())
    for head, index in zip(heads, yolos):
        layer = graph.layers[index]
        n, c, h, w = head.shape
        na = len(layer.mask)
        p = head.view(n, na, c // na, h, w).permute(0, 1, 3, 4, 2)
        mask = torch.tensor(layer.mask)
        hit = (best[:, None] == mask[None]).nonzero()        # (k, 2): target, local anchor
        t, a = hit[:, 0], hit[:, 1]
        img = targets[t, 0].long()
        gxy = targets[t, 2:4] * torch.tensor([w, h])
        gwh = targets[t, 4:6] * torch.tensor([w, h])
        gi, gj = gxy[:, 0].long().clamp(0, w - 1), gxy[:, 1].long().clamp(0, h - 1)
        tobj = torch.zeros(p.shape[:4])
        if len(t):
            ps = p[img, a, gj, gi]
            anchor = anchors_px[mask[a]] / (size / w)
            pbox = torch.cat([torch.sigmoid(ps[:, :2]) + torch.stack([gi, gj], 1),
                              torch.exp(ps[:, 2:4]).clamp(max=1e3) * anchor], 1)
            box = box + (1 - _giou(pbox, torch.cat([gxy, gwh], 1))).mean()
            tobj[img, a, gj, gi] = 1.0
            onehot = F.one_hot(targets[t, 1].long(), c // na - 5).float()
            cls = cls + F.binary_cross_entropy_with_logits(ps[:, 5:], onehot)
        obj = obj + BALANCE.get(size // h, 1.0) * F.binary_cross_entropy_with_logits(
            p[..., 4], tobj)
    batch = heads[0].shape[0]
    return (box * GAINS["box"] + obj * GAINS["obj"] + cls * GAINS["cls"]) * batch


class TorchTrainStep:
    """``step(images NCHW, targets (T, 6))``: forward, loss, backward, sparsity, SGD."""

    def __init__(self, graph: ir.Graph, prunable: tuple[int, ...], sparsity: float,
                 lr: float = 1e-3) -> None:
        self.graph = graph
        self.model = Darknet(graph, darknet_maxpool=True).train()
        self.gammas = [self.model.conv_modules(i)[1].weight for i in prunable]
        self.sparsity = sparsity
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9,
                                         weight_decay=5e-4)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        heads, _ = self.model(images)
        loss = compute_loss(self.graph, heads, targets, images.shape[-1])
        loss.backward()
        with torch.no_grad():  # the seed's updateBN: the L1 subgradient on γ
            for gamma in self.gammas:
                gamma.grad.add_(self.sparsity * torch.sign(gamma))
        self.optimizer.step()
        return float(loss.detach())


def as_rows(targets) -> torch.Tensor:
    """darkslim's padded ``(N, M, 5)`` targets as ultralytics' ``(T, 6)`` rows."""
    t = torch.as_tensor(targets)
    n, m, _ = t.shape
    image = torch.arange(n, dtype=t.dtype)[:, None, None].expand(n, m, 1)
    rows = torch.cat([image, t], 2).reshape(-1, 6)
    return rows[rows[:, 1] >= 0]
