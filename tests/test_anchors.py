"""`darkslim anchors`: Darknet's calc_anchors k-means (runtime.anchors) and the cfg it
writes, on the synthetic set and (when ../shared is present) the raccoon VOC set."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ir
from conftest import cfg_path
from runtime.anchors import (
    box_shapes,
    cfg_anchors,
    iou_wh,
    kmeans_anchors,
    mean_best_iou,
    with_anchors,
)

RACCOON = Path(__file__).resolve().parents[2] / "shared" / "data" / "raccoon"


def _cli(*argv: str) -> int:
    from darkslim.cli import main

    return main(list(argv))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from runtime.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("synth"), train=96, valid=4, size=128,
                       seed=0)


def _raccoon_data(root: Path) -> Path:
    """A Darknet dataset of the raccoon VOC set: the images linked, labels written
    from the XML (class cx cy w h, normalised)."""
    if not (RACCOON / "annotations").exists():
        pytest.skip(f"{RACCOON} absent: the raccoon checks need ../shared")
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    listed = []
    for xml in sorted((RACCOON / "annotations").glob("*.xml")):
        tree = ET.parse(xml).getroot()
        name = tree.findtext("filename")
        w, h = float(tree.findtext("size/width")), float(tree.findtext("size/height"))
        rows = []
        for obj in tree.iter("object"):
            box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax",
                                                                 "ymax")]
            x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
            rows.append(f"0 {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                        f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n")
        image = root / "images" / name
        image.symlink_to(RACCOON / "images" / name)
        (root / "labels" / f"{Path(name).stem}.txt").write_text("".join(rows))
        listed.append(f"images/{name}\n")
    (root / "train.txt").write_text("".join(listed))
    data = root / "raccoon.data"
    data.write_text("classes=1\ntrain=train.txt\n")
    return data


# --------------------------------------------------------------------------- k-means

def test_kmeans_finds_separated_clusters_exactly():
    wh = np.array([[10, 10]] * 5 + [[100, 50]] * 4 + [[30, 60]] * 3, np.float64)
    result = kmeans_anchors(wh, 3, seed=1)
    assert result.anchors == ((10, 10), (30, 60), (100, 50))  # sorted by area
    assert result.mean_iou == pytest.approx(1.0) and result.boxes == 12


def test_a_centre_moves_to_the_mean_of_its_boxes():
    """Darknet's kmeans_maximization averages (it does not take the median)."""
    wh = np.array([[10, 10], [12, 12], [20, 20]], np.float64)
    assert kmeans_anchors(wh, 1, restarts=1).anchors == ((14, 14),)


def test_iou_of_shapes():
    np.testing.assert_allclose(iou_wh([[2, 2]], [[1, 1], [2, 2], [4, 1]]),
                               [[0.25, 1.0, 2 / 6]])


def test_too_few_boxes_is_an_error():
    with pytest.raises(ValueError, match="2 boxes, expected at least k=3"):
        kmeans_anchors(np.ones((2, 2)), 3)


def test_synthetic_anchors_fit_better_than_the_cfgs_and_repeat(synth):
    from runtime.data import load_dataset

    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))  # COCO anchors for 416x416
    labels = [s.labels for s in load_dataset(synth.data).samples]
    wh = box_shapes(labels, graph.width, graph.height)
    result = kmeans_anchors(wh, 6, seed=3)
    own = mean_best_iou(wh, cfg_anchors(graph))
    assert result.mean_iou >= own
    assert result.mean_iou > 0.8 and len(result.anchors) == 6
    assert kmeans_anchors(wh, 6, seed=3) == result
    areas = [w * h for w, h in result.anchors]
    assert areas == sorted(areas)


# ------------------------------------------------------------------------ the new cfg

@given(st.lists(st.tuples(st.integers(1, 400), st.integers(1, 400)), min_size=6,
                max_size=6))
def test_masks_give_the_largest_anchors_to_the_coarsest_head(anchors):
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    out = with_anchors(graph, tuple(anchors))
    ir.verify(out)
    shapes = ir.verify(out)
    coarse, fine = sorted(out.yolo_indices(), key=lambda i: shapes[i].h)
    for index in out.yolo_indices():
        head = out.layers[index]
        assert head.num == 6 and len(head.anchors) == 6
        assert out.layers[index - 1].filters == len(head.mask) * (head.classes + 5)
    assert out.layers[coarse].mask == (3, 4, 5) and out.layers[fine].mask == (0, 1, 2)
    area = lambda a: a[0] * a[1]  # noqa: E731
    assert min(map(area, out.layers[coarse].head_anchors)) >= max(
        map(area, out.layers[fine].head_anchors))
    assert ir.parse_cfg(ir.write_cfg(out)) == out


def test_iou_thresh_is_written_once_and_survives_the_cfg_round_trip():
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    once = with_anchors(graph, ((10, 14),) * 6, iou_thresh=0.5)
    twice = with_anchors(once, ((10, 14),) * 6, iou_thresh=0.213)
    for index in twice.yolo_indices():
        keys = [k for k, _ in twice.layers[index].extra]
        assert keys.count("iou_thresh") == 1
        head = ir.parse_cfg(ir.write_cfg(twice)).layers[index]
        assert float(head.option("iou_thresh", "1")) == pytest.approx(0.213)
    assert with_anchors(graph, ((10, 14),) * 6).layers[graph.yolo_indices()[0]].option(
        "iou_thresh", "none") == "none"


def test_other_anchor_counts_are_shared_evenly_or_refused():
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    four = with_anchors(graph, ((1, 1), (2, 2), (3, 3), (4, 4)))
    assert [four.layers[i].mask for i in four.yolo_indices()] == [(2, 3), (0, 1)]
    assert [four.layers[i - 1].filters for i in four.yolo_indices()] == [170, 170]
    with pytest.raises(ValueError, match="5 anchors for 2 \\[yolo\\] heads"):
        with_anchors(graph, ((1, 1),) * 5)


# ------------------------------------------------------------------------------- CLI

def _run_anchors(data: Path, tmp_path: Path, seed: int = 0) -> dict:
    out, report = tmp_path / f"new{seed}.cfg", tmp_path / f"anchors{seed}.json"
    assert _cli("anchors", str(data), "--num", "6", "--size", "416", "416", "--cfg",
                str(cfg_path("yolov3-tiny.cfg")), "--write", str(out), "--json",
                str(report), "--seed", str(seed)) == 0
    return json.loads(report.read_text())


def _check_written(path: Path, anchors, data: Path) -> None:
    from runtime import forward, init_variables
    from runtime.data import read_data_config

    graph = ir.parse_cfg(path)
    assert sorted(cfg_anchors(graph)) == sorted((float(w), float(h)) for w, h in anchors)
    classes = read_data_config(data).classes  # the cfg is made to train on this data
    for index in graph.yolo_indices():
        head = graph.layers[index]
        assert isinstance(head, ir.Yolo) and head.classes == classes
        assert head.option("iou_thresh", "1") == "0.213"  # multi-anchor positives
        assert graph.layers[index - 1].filters == len(head.mask) * (classes + 5)
    small = ir.with_input_size(graph, 64)
    out = forward(small, init_variables(small, 0), np.zeros((1, 64, 64, 3), np.float32))
    assert out.detections.shape[0] == 1 and np.isfinite(np.asarray(out.detections)).all()


def test_anchors_command_on_the_synthetic_set(synth, tmp_path, capsys):
    report = _run_anchors(synth.data, tmp_path)
    assert report["mean_iou"] >= report["cfg_mean_iou"]
    assert report["boxes"] > 96 and len(report["anchors"]) == 6
    assert _run_anchors(synth.data, tmp_path)["anchors"] == report["anchors"]
    text = capsys.readouterr().out
    assert "anchors = " + ", ".join(f"{w},{h}" for w, h in report["anchors"]) in text
    assert "mask=3,4,5" in text
    _check_written(tmp_path / "new0.cfg", report["anchors"], synth.data)


def test_anchors_command_on_the_raccoon_set(tmp_path):
    data = _raccoon_data(tmp_path / "raccoon")
    report = _run_anchors(data, tmp_path)
    assert report["boxes"] >= 200
    assert report["mean_iou"] >= report["cfg_mean_iou"]
    assert _run_anchors(data, tmp_path)["anchors"] == report["anchors"]
    _check_written(tmp_path / "new0.cfg", report["anchors"], data)


def test_write_needs_a_cfg(synth, tmp_path, capsys):
    assert _cli("anchors", str(synth.data), "--size", "64", "64", "--write",
                str(tmp_path / "x.cfg")) == 2
    assert "needs --cfg" in capsys.readouterr().err
    assert not (tmp_path / "x.cfg").exists()
