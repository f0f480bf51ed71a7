"""Objectness diagnostics (issue 21), per [yolo] head on a split (eval-mode BN, no
augmentation): positives (best anchor), BCE and logit-gradient sums of positives vs
negatives, objectness at positive / ignored / on-object / off-object slots, and the max
objectness per image. Usage::

    PYTHONPATH=. python docs/objectness/diagnose.py DATA.data MODEL.cfg {train,valid} W...
"""

import sys

import jax.numpy as jnp
import numpy as np

import ir
from frontends import load_variables
from runtime.data import iterate_batches, load_dataset, read_data_config
from runtime.loss import _wh_iou, box_iou_xywh, yolo_loss
from runtime.model import forward


def bce(q, tt):
    return -(tt * np.log(np.clip(q, 1e-7, 1)) + (1 - tt) * np.log(np.clip(1 - q, 1e-7, 1)))


data, cfg, split = sys.argv[1], sys.argv[2], sys.argv[3]
graph = ir.parse_cfg(cfg)
ds = load_dataset(read_data_config(data), split)
hw = (graph.height, graph.width)
for wpath in sys.argv[4:]:
    var = load_variables(graph, wpath).variables
    acc = {}
    top_hit = 0
    nimg = 0
    losses = []
    for batch in iterate_batches(ds, hw, 16, shuffle=False, drop_last=False):
        out = forward(graph, var, jnp.asarray(batch.images))
        t = jnp.asarray(batch.targets)
        losses.append([float(v) for v in yolo_loss(graph, out.heads, t, hw)])
        best_per_img = np.full(len(batch.images), -1.0)
        best_hit = np.zeros(len(batch.images), bool)
        for head, li in zip(out.heads, graph.yolo_indices()):
            layer = graph.layers[li]
            n, h, w, c = head.shape
            A = len(layer.mask)
            p = np.asarray(head.reshape(n, h, w, A, -1), np.float32)
            obj = 1 / (1 + np.exp(-p[..., 4]))
            all_anchors = np.asarray(layer.anchors, np.float32)
            valid = batch.targets[..., 0] >= 0
            twh = batch.targets[..., 3:5] * np.array([hw[1], hw[0]])
            best = np.asarray(jnp.argmax(_wh_iou(jnp.asarray(twh), jnp.asarray(all_anchors)), -1))
            tobj = np.zeros((n, h, w, A))
            for i in range(n):
                for m in np.nonzero(valid[i])[0]:
                    if best[i, m] in layer.mask:
                        a = list(layer.mask).index(best[i, m])
                        gi = min(int(batch.targets[i, m, 1] * w), w - 1)
                        gj = min(int(batch.targets[i, m, 2] * h), h - 1)
                        tobj[i, gj, gi, a] = 1
            # ignore mask as loss.py
            anchors = all_anchors[list(layer.mask)] / np.array([hw[1] / w, hw[0] / h])
            xy = 1 / (1 + np.exp(-p[..., :2]))
            pwh = np.minimum(np.exp(p[..., 2:4]), 1e3) * anchors
            gx = np.arange(w)[None, None, :, None]
            gy = np.arange(h)[None, :, None, None]
            boxes = np.stack([xy[..., 0] + gx, xy[..., 1] + gy, pwh[..., 0], pwh[..., 1]], -1)
            tb = batch.targets[..., 1:5] * np.array([w, h, w, h])
            ov = np.asarray(
                box_iou_xywh(
                    jnp.asarray(boxes)[:, :, :, :, None, :], jnp.asarray(tb)[:, None, None, None]
                )
            )
            ov = np.where(valid[:, None, None, None, :], ov, 0).max(-1)
            pos = tobj > 0
            neg = (~pos) & (ov <= float(layer.option("ignore_thresh", "0.7")))
            ign = (~pos) & ~neg
            d = acc.setdefault(
                h,
                dict(
                    cells=0,
                    pos=0,
                    ign=0,
                    bce_pos=0.0,
                    bce_neg=0.0,
                    g_pos=0.0,
                    g_neg=0.0,
                    obj_pos=[],
                    max_obj=[],
                    obj_ign=[],
                ),
            )
            d["cells"] += pos.size
            d["pos"] += int(pos.sum())
            d["ign"] += int(ign.sum())
            d["bce_pos"] += float(bce(obj, 1)[pos].sum())
            d["bce_neg"] += float(bce(obj, 0)[neg].sum())
            d["g_pos"] += float((1 - obj)[pos].sum())
            d["g_neg"] += float(obj[neg].sum())
            d["obj_pos"] += obj[pos].tolist()
            d["max_obj"] += obj.reshape(n, -1).max(1).tolist()
            d["obj_ign"] += obj[ign].tolist()
            cx = (gx + 0.5) / w
            cy = (gy + 0.5) / h  # cell centres, normalised
            inside = np.zeros((n, h, w, 1), bool)
            for i in range(n):
                for m in np.nonzero(valid[i])[0]:
                    _, bx, by, bw, bh = batch.targets[i, m]
                    inside[i] |= ((np.abs(cx - bx) < bw / 2) & (np.abs(cy - by) < bh / 2))[0]
            inside = np.broadcast_to(inside, obj.shape)
            d.setdefault("in_sum", 0.0)
            d.setdefault("in_cells", 0)
            d.setdefault("out_obj", [])
            d["in_sum"] += float(obj[inside].sum())
            d["in_cells"] += int(inside.sum())
            d["out_obj"] += obj[~inside].tolist()[::50]
            flat = obj.reshape(n, -1)
            am = flat.argmax(1)
            for i in range(n):
                if flat[i, am[i]] > best_per_img[i]:
                    best_per_img[i] = flat[i, am[i]]
                    best_hit[i] = (pos | ign).reshape(n, -1)[i, am[i]]
        top_hit += int(best_hit.sum())
        nimg += len(batch.images)
    print(
        f"== {wpath}  ({split}, {nimg} images)  loss total/box/obj/cls per batch16 = "
        + " ".join(f"{v:.3f}" for v in np.mean(losses, 0))
    )
    print(f"   top-obj cell of the image is a positive/ignored (on-object) cell: {top_hit}/{nimg}")
    for h, d in sorted(acc.items()):
        nan = float("nan")
        pos_med = np.median(d["obj_pos"]) if d["obj_pos"] else nan
        ign_med = np.median(d["obj_ign"]) if d["obj_ign"] else nan
        share = d["bce_pos"] / (d["bce_pos"] + d["bce_neg"] + 1e-9)
        print(f"   head {h}x{h}: cells {d['cells']}, positives {d['pos']} "
              f"({d['pos'] / nimg:.2f}/img, rate {d['pos'] / d['cells']:.2e}), "
              f"ignored {d['ign']}"
              f" | BCE sum pos {d['bce_pos']:.1f} neg {d['bce_neg']:.1f} (pos share {share:.2f})"
              f" | logit-grad sum pos {d['g_pos']:.1f} neg {d['g_neg']:.1f}"
              f" | obj@pos median {pos_med:.4f} max {max(d['obj_pos'], default=nan):.4f}"
              f" | obj@ignored median {ign_med:.4f}"
              f" | on-object slots {d['in_cells'] / nimg:.0f}/img, sum obj on-object / "
              f"positives {d['in_sum'] / max(d['pos'], 1):.2f}, obj off-object median "
              f"{np.median(d['out_obj']):.5f}"
              f" | max obj per img median {np.median(d['max_obj']):.4f} "
              f"max {np.max(d['max_obj']):.4f}")
