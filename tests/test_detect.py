"""``darkslim detect`` and `runtime.detect`: Darknet's ``detector test``, checked three ways.

- Darknet's own code, ported literally (``resize_image``, ``do_nms_sort``), against
  the vectorised functions, on random inputs.
- The exported ONNX ``--nms`` graph: the same boxes on the same input, for every head
  kind, on small networks with seeded weights (no files needed).
- Darknet itself: the boxes AlexeyAB Darknet printed for yolov3-tiny with the COCO
  weights on the five photos of ``../shared/data/photos``, recorded with the commit
  and command in ``tests/data/darknet_detect_yolov3_tiny.json`` (skipped without
  ``../shared``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ir
import runtime
from darkslim.cli import main
from darkslim.detections import DetectInputError, list_images, output_names, read_names
from darkslim.testing import random_variables
from runtime.detect import (
    NmsRule,
    Placement,
    darknet_letterbox,
    darknet_resize,
    detect_image,
    nms_rule,
    objectness_gate,
    prepare_image,
    select_detections,
    to_image_boxes,
)
from tests.conftest import cfg_path, write_network

ORACLE = Path(__file__).parent / "data" / "darknet_detect_yolov3_tiny.json"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
COCO = SHARED / "models" / "yolov3-tiny-coco"
PHOTOS = SHARED / "data" / "photos"
needs_shared = pytest.mark.skipif(
    not (COCO / "yolov3-tiny.weights").exists() or not PHOTOS.is_dir(),
    reason="../shared (yolov3-tiny COCO weights and photos) is not present")


def cli(*args) -> int:
    return main(["detect", *map(str, args)])


# --------------------------------------------------------- Darknet's code, ported


def darknet_resize_loops(im: np.ndarray, h: int, w: int) -> np.ndarray:
    """src/image.c resize_image, line by line, in float32 (HWC here, CHW there)."""
    f32 = np.float32
    ih, iw, c = im.shape
    if (ih, iw) == (h, w):
        return im.copy()
    part = np.zeros((ih, w, c), f32)
    resized = np.zeros((h, w, c), f32)
    w_scale = f32(iw - 1) / f32(w - 1)
    h_scale = f32(ih - 1) / f32(h - 1)
    for k in range(c):
        for r in range(ih):
            for col in range(w):
                if col == w - 1 or iw == 1:
                    val = im[r, iw - 1, k]
                else:
                    sx = f32(col) * w_scale
                    ix = int(sx)
                    dx = f32(sx - f32(ix))
                    val = (f32(1) - dx) * im[r, ix, k] + dx * im[r, ix + 1, k]
                part[r, col, k] = val
    for k in range(c):
        for r in range(h):
            sy = f32(r) * h_scale
            iy = int(sy)
            dy = f32(sy - f32(iy))
            for col in range(w):
                resized[r, col, k] = (f32(1) - dy) * part[iy, col, k]
            if r == h - 1 or ih == 1:
                continue
            for col in range(w):
                resized[r, col, k] += dy * part[iy + 1, col, k]
    return resized


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9), st.integers(2, 9),
       st.integers(0, 2**16))
def test_resize_is_darknets_resize_image(ih, iw, h, w, seed):
    image = np.random.default_rng(seed).random((ih, iw, 3), dtype=np.float32)
    assert np.allclose(darknet_resize(image, h, w), darknet_resize_loops(image, h, w),
                       atol=1e-6)


def test_letterbox_is_centred_on_gray_with_darknets_integer_sizes():
    image = np.random.default_rng(0).random((5, 11, 3), dtype=np.float32)
    boxed, (new_w, new_h) = darknet_letterbox(image, 8, 8)
    assert (new_w, new_h) == (8, 5 * 8 // 11)           # (im.h * w) / im.w, truncated
    top = (8 - new_h) // 2
    assert np.all(boxed[:top] == 0.5) and np.all(boxed[top + new_h:] == 0.5)
    assert np.array_equal(boxed[top:top + new_h], darknet_resize(image, new_h, 8))


@settings(max_examples=40, deadline=None)
@given(st.integers(20, 900), st.integers(20, 900), st.booleans(), st.integers(0, 2**16))
def test_boxes_map_back_to_the_image(w, h, letterbox, seed):
    """A box placed in the network input as Darknet places the image comes back."""
    net = 64
    new_w, new_h = (net, net) if not letterbox else (
        (net, h * net // w) if net / w < net / h else (w * net // h, net))
    p = Placement(image_w=w, image_h=h, net_w=net, net_h=net, new_w=new_w, new_h=new_h)
    rng = np.random.default_rng(seed)
    xyxy = np.sort(rng.random((5, 2, 2)) * [w, h], axis=1).reshape(5, 4)
    cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
    bw, bh = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    in_net = np.stack([cx / w * new_w + (net - new_w) / 2, cy / h * new_h + (net - new_h) / 2,
                       bw / w * new_w, bh / h * new_h], axis=1)
    assert np.allclose(to_image_boxes(in_net, p), xyxy, atol=1e-6)


def box_iou_c(a, b) -> float:
    """src/box.c box_iou on centre-form boxes."""
    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if w < 0 or h < 0 else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union


def do_nms_sort_loops(det: np.ndarray, thresh: float, nms: float):
    """get_yolo_detections' filter, then src/box.c do_nms_sort, literally."""
    dets = [{"box": row[:4], "prob": [row[4] * p if row[4] * p > thresh else 0.0
                                      for p in row[5:]], "index": i}
            for i, row in enumerate(det) if row[4] > thresh]
    classes = det.shape[1] - 5
    for k in range(classes):
        dets.sort(key=lambda d: -d["prob"][k])
        for i in range(len(dets)):
            if dets[i]["prob"][k] == 0:
                continue
            for j in range(i + 1, len(dets)):
                if box_iou_c(dets[i]["box"], dets[j]["box"]) > nms:
                    dets[j]["prob"][k] = 0.0
    return sorted((d["index"], k, d["prob"][k]) for d in dets for k in range(classes)
                  if d["prob"][k] > 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.sampled_from([0.1, 0.25, 0.5]),
       st.sampled_from([0.3, 0.45, 0.7]), st.integers(0, 2**16))
def test_selection_is_darknets_do_nms_sort(boxes, classes, thresh, nms, seed):
    rng = np.random.default_rng(seed)
    centres = rng.random((boxes, 2)) * 50          # crowded: NMS has work to do
    sizes = 5 + rng.random((boxes, 2)) * 30
    det = np.concatenate([centres, sizes, rng.random((boxes, 1 + classes))], axis=1)
    ours = sorted(select_detections(det, thresh=thresh, nms=nms))
    expected = do_nms_sort_loops(det, thresh, nms)
    assert [(i, k) for i, k, _ in ours] == [(i, k) for i, k, _ in expected]
    assert np.allclose([s for *_, s in ours], [s for *_, s in expected])


def test_a_box_is_reported_once_per_class_above_the_threshold():
    det = np.array([[10, 10, 4, 4, 0.9, 0.8, 0.5, 0.2]])
    got = select_detections(det, thresh=0.25, nms=0.45)
    assert [(i, k) for i, k, _ in got] == [(0, 0), (0, 1)]
    assert np.allclose([s for *_, s in got], [0.72, 0.45])


def test_region_and_detection_heads_score_boxes_of_low_objectness():
    """Only [yolo]/[Gaussian_yolo] skip boxes of objectness <= thresh first; a box
    with objectness 0.2 and class 'probability' 2 (YOLOv1 without softmax) scores 0.4."""
    det = np.array([[10, 10, 4, 4, 0.2, 2.0]])
    assert select_detections(det, gated=np.array([True])) == []
    assert [(i, k) for i, k, _ in select_detections(det, gated=np.array([False]))] == [
        (0, 0)]


def test_nms_kind_comes_from_the_last_head():
    text = cfg_path("kinds-csp-newcoords.cfg").read_text()
    assert nms_rule(ir.parse_cfg(text)) == NmsRule()
    last = text.rindex("[yolo]")
    greedy = text[:last] + "[yolo]\nnms_kind=greedynms\nbeta_nms=0.6\n" + text[last + 7:]
    assert nms_rule(ir.parse_cfg(greedy)).kind == "greedynms"
    # DIoU suppresses less than IoU: two boxes whose IoU is just over the threshold
    # but whose centres are apart both survive greedynms.
    det = np.array([[10, 10, 10, 10, 0.9, 0.9], [13, 10, 10, 10, 0.9, 0.8]])
    assert len(select_detections(det, nms=0.45)) == 1
    assert len(select_detections(det, nms=0.45, rule=NmsRule(kind="greedynms"))) == 2


# -------------------------------------------------- the exported ONNX --nms graph


def onnx_detections(graph, variables, x, placement, conf, iou):
    """(class, score, x1 y1 x2 y2 in image pixels) for every row the ONNX
    NonMaxSuppression graph selects on the network input ``x`` (HWC)."""
    from export import ExportOptions, export_onnx
    from export.runtimes import run_onnxruntime

    model = export_onnx(graph, variables, ExportOptions(
        nms=True, score_threshold=conf, iou_threshold=iou, max_per_class=100_000))
    out = run_onnxruntime(model, x[None].transpose(0, 3, 1, 2))
    det = out["detections"][0]
    rows = []
    for _, c, i in out["selected_indices"]:
        score = det[i, 4] * (det[i, 5 + c] if det.shape[1] > 5 else 1.0)
        rows.append((int(c), float(score), to_image_boxes(det[i:i + 1, :4], placement)[0]))
    return rows


def assert_same_boxes(ours, theirs, px: float = 1.0, score: float = 1e-3) -> None:
    """Every box of one list has its twin (same class, corners within ``px``, score
    within ``score``) in the other, one to one."""
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    left = list(theirs)
    for c, s, box in ours:
        twins = [k for k, (c2, s2, b2) in enumerate(left)
                 if c2 == c and abs(s2 - s) <= score and np.abs(np.subtract(b2, box)).max() <= px]
        assert twins, f"class {c} score {s:.4f} box {np.round(box, 1)}: no twin in {left}"
        left.pop(twins[0])


def narrow_real(name: str, size: int, narrow: int):
    graph = ir.narrow(ir.with_input_size(ir.parse_cfg(cfg_path(name)), size), narrow,
                      min_filters=2)
    return graph, random_variables(graph, seed=5)


YOLOV1 = ("[net]\nwidth=28\nheight=14\nchannels=3\n[connected]\noutput=52\n"
          "activation=linear\n[detection]\nclasses=3\ncoords=4\nnum=2\nside=2\n"
          "softmax=1\nsqrt=1\n")

SMALL = {
    "yolo": lambda: narrow_real("yolov3-tiny.cfg", 96, 4),
    "yolo-new_coords": lambda: (ir.parse_cfg(cfg_path("kinds-csp-newcoords.cfg")), None),
    "Gaussian_yolo": lambda: (ir.parse_cfg(cfg_path("kinds-gaussian.cfg")), None),
    "region": lambda: (ir.parse_cfg(cfg_path("kinds-yolov2.cfg")), None),
    "detection": lambda: (ir.parse_cfg(YOLOV1), None),
}


def photo(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth random RGB uint8 'photo' (blobs), so boxes vary across the image."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 5, 3)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(
        np.uint8)


@pytest.mark.parametrize("kind", SMALL)
@pytest.mark.parametrize("letterbox", [False, True], ids=["resize", "letterbox"])
def test_boxes_equal_the_onnx_nms_graphs(kind, letterbox):
    graph, variables = SMALL[kind]()
    variables = variables or random_variables(graph, seed=7)
    image = photo(1, 45, 70)
    # Thresholds under the seeded networks' top scores (Gaussian scores carry
    # (1 - mean σ) too; region's softmax spreads over the classes).
    conf, iou = {"Gaussian_yolo": 0.15, "region": 0.2}.get(kind, 0.3), 0.45
    found, x, placement = detect_image(graph, variables, image, letterbox=letterbox,
                                       thresh=conf, nms=iou)
    ours = [(d.class_id, d.score, (d.x1, d.y1, d.x2, d.y2)) for d in found]
    assert ours, "the seeded network should detect something at this threshold"
    assert_same_boxes(ours, onnx_detections(graph, variables, x, placement, conf, iou))


def test_gate_covers_every_decoded_box():
    graph, variables = SMALL["yolo"]()
    out = runtime.forward(graph, variables, np.zeros((1, 96, 96, 3), np.float32))
    assert objectness_gate(graph).shape == (out.detections.shape[1],)


def test_cli_writes_drawn_images_and_json_equal_to_onnx(tmp_path):
    graph, variables = SMALL["yolo"]()
    cfg, weights = write_network(tmp_path, "tiny", graph, variables)
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {"a.jpg": (50, 80), "b.png": (90, 60)}
    for k, (name, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(photos / name), cv2.cvtColor(photo(k, h, w), cv2.COLOR_RGB2BGR))
    (photos / "notes.txt").write_text("not an image, not listed")
    names = tmp_path / "tiny.names"
    names.write_text("".join(f"thing{k}\n" for k in range(80)))
    out = tmp_path / "out"
    assert cli(cfg, weights, photos, "--out", out, "--conf", "0.3") == 0
    record = json.loads((out / "detections.json").read_text())
    assert record["settings"]["names"] == str(names)      # found beside the cfg
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png", "detections.json"]
    for name, (h, w) in sizes.items():
        drawn = cv2.imread(str(out / name))
        assert drawn.shape == (h, w, 3)
        image = runtime.load_image(photos / name)
        x, placement = prepare_image(image, graph.height, graph.width, letterbox=False)
        theirs = onnx_detections(graph, variables, x, placement, 0.3, 0.45)
        rows = [r for r in record["detections"] if Path(r["image"]).name == name]
        assert all(r["name"] == f"thing{r['class']}" for r in rows)
        ours = [(r["class"], r["score"], (r["x1"], r["y1"], r["x2"], r["y2"])) for r in rows]
        assert ours
        assert_same_boxes(ours, theirs)
        if name == "a.jpg":  # drawing changed the pixels inside the image
            source = cv2.imread(str(photos / name)).astype(int)
            assert np.abs(drawn.astype(int) - source).max() > 100


# -------------------------------------------------------------------- bad input


def test_bad_inputs_are_typed_errors_naming_the_file(tmp_path, capsys):
    graph, variables = SMALL["yolo"]()
    cfg, weights = write_network(tmp_path, "tiny", graph, variables)
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, expected in [
        ((fake,), "fake.jpg: cannot decode image"),
        ((tmp_path / "missing.jpg",), "missing.jpg: no such image file or folder"),
        ((empty,), "empty: no images in this folder"),
    ]:
        assert cli(cfg, weights, *args, "--out", tmp_path / "o") == 2
        assert expected in capsys.readouterr().err.replace("\n", "")
    with pytest.raises(runtime.ImageError, match="fake.jpg"):
        runtime.load_image(fake)
    with pytest.raises(DetectInputError, match="empty: no images"):
        list_images([empty])
    short = tmp_path / "short.names"
    short.write_text("a\nb\n")
    with pytest.raises(DetectInputError, match=r"short.names: 2 class names: expected 80"):
        read_names(short, 80)
    assert cli(cfg, weights, fake, "--out", tmp_path / "o", "--conf", "1.5") == 2
    assert "--conf 1.5" in capsys.readouterr().err
    assert cli(cfg, weights, fake, "--out", tmp_path / "o", "--size", "100") == 2
    assert "--size 100: the network does not fit" in capsys.readouterr().err.replace(
        "\n", "")


def test_output_names_stay_distinct():
    got = output_names([Path("a/x.jpg"), Path("b/x.jpg"), Path("c/x.JPG"), Path("y.tiff")])
    assert got == ["x.jpg", "x_2.jpg", "x_3.jpg", "y.png"]


# ------------------------------------------------------------------ Darknet itself


def darknet_rows(rows):
    return [(r["class_id"], r["prob"], (r["left_x"], r["top_y"], r["left_x"] + r["width"],
                                        r["top_y"] + r["height"])) for r in rows]


@needs_shared
@pytest.mark.parametrize("mode", ["resize", "letter_box"])
def test_yolov3_tiny_coco_equals_darknet(tmp_path, mode):
    """Same classes per photo, each box within 2 px of Darknet's printed one, score
    within 0.01 (resize; 0.02 with letter_box, where the photos' JPEG decoding --
    Darknet's stb_image vs OpenCV's libjpeg -- moves a score by up to 0.011; the
    PNG test below shows the rest is exact)."""
    oracle = json.loads(ORACLE.read_text())
    extra = ["--letterbox"] if mode == "letter_box" else []
    out = tmp_path / "out"
    assert cli(COCO / "yolov3-tiny.cfg", COCO / "yolov3-tiny.weights", PHOTOS, "--out", out,
               "--names", COCO / "coco.names", *extra) == 0
    record = json.loads((out / "detections.json").read_text())
    for name, rows in oracle[mode].items():
        ours = [(r["class"], r["score"], (r["x1"], r["y1"], r["x2"], r["y2"]))
                for r in record["detections"] if Path(r["image"]).name == name]
        assert sorted({c for c, _, _ in ours}) == sorted({r["class_id"] for r in rows}), name
        assert_same_boxes(ours, darknet_rows(rows), px=2.0,
                          score=0.01 if mode == "resize" else 0.02)


@needs_shared
@pytest.mark.parametrize("mode", ["resize_png", "letter_box_png"])
def test_yolov3_tiny_coco_equals_darknet_on_the_same_pixels(tmp_path, mode):
    """On PNG copies of the photos (OpenCV's decoded pixels, which Darknet then read
    too), Darknet's scores are matched to 1e-4 and its relative boxes to 0.05 px."""
    oracle = json.loads(ORACLE.read_text())
    cfg, weights = COCO / "yolov3-tiny.cfg", COCO / "yolov3-tiny.weights"
    graph = ir.parse_cfg(cfg)
    import frontends

    variables = frontends.load_variables(graph, weights).variables
    for name, rows in oracle[mode].items():
        bgr = cv2.imread(str(PHOTOS / name))
        if hashlib.sha256(bgr.tobytes()).hexdigest() != oracle["png_pixels"][name]:
            pytest.skip(f"{name}: this OpenCV decodes the photo differently from the one "
                        "the PNG oracle was recorded with")
        png = tmp_path / (Path(name).stem + ".png")
        cv2.imwrite(str(png), bgr)
        found, _, p = detect_image(graph, variables, runtime.load_image(png),
                                   letterbox=mode == "letter_box_png")
        ours = [(d.class_id, d.score, (d.x1, d.y1, d.x2, d.y2)) for d in found]
        scale = np.array([p.image_w, p.image_h] * 2)
        theirs = [(r["class_id"], r["prob"], (np.array(r["relative"][:2] * 2) + np.array(
            r["relative"][2:] * 2) * [-0.5, -0.5, 0.5, 0.5]) * scale) for r in rows]
        assert_same_boxes(ours, theirs, px=0.05, score=1e-4)


@needs_shared
def test_yolov3_tiny_coco_equals_the_onnx_nms_graph():
    import frontends

    cfg, weights = COCO / "yolov3-tiny.cfg", COCO / "yolov3-tiny.weights"
    graph = ir.parse_cfg(cfg)
    variables = frontends.load_variables(graph, weights).variables
    for name in ("dog.jpg", "horses.jpg"):
        found, x, placement = detect_image(graph, variables,
                                           runtime.load_image(PHOTOS / name))
        ours = [(d.class_id, d.score, (d.x1, d.y1, d.x2, d.y2)) for d in found]
        assert_same_boxes(ours, onnx_detections(graph, variables, x, placement, 0.25, 0.45))
