"""Darknet datasets (runtime.data) and the synthetic generator (runtime.synth)."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import ir
from darkslim.commands.synth import synth_cfg_path
from runtime.data import (
    NO_AUGMENT,
    Augment,
    DataError,
    Prefetch,
    iterate_batches,
    label_path,
    load_dataset,
    prepare_sample,
    read_data_config,
    read_labels,
)
from runtime.synth import adapt_cfg, kmeans_anchors, sample, write_synth


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return write_synth(root, train=12, valid=4, size=64, seed=3,
                       cfg=ir.parse_cfg(synth_cfg_path()))


# --------------------------------------------------------------------- synthetic set

def test_synth_writes_a_darknet_dataset(synth):
    config = read_data_config(synth.data)
    assert config.classes == 3 and config.names == ("circle", "square", "triangle")
    train = load_dataset(config, "train")
    valid = load_dataset(config, "valid")
    assert len(train) == 12 and len(valid) == 4 and not train.skipped
    for s in train.samples:
        assert s.labels.shape[1] == 5 and len(s.labels) >= 1
        assert cv2.imread(str(s.image)).shape == (64, 64, 3)
    graph = ir.parse_cfg(synth.cfg)
    shapes = ir.verify(graph)
    assert (graph.width, graph.height) == (64, 64)
    for i in graph.yolo_indices():
        assert graph.layers[i].classes == 3 and shapes[i].c == 3 * 8
        assert graph.layers[i].anchors == tuple((float(w), float(h))
                                                for w, h in synth.anchors)


def test_synth_is_seeded():
    img_a, lab_a = sample(7, "train", 5)
    img_b, lab_b = sample(7, "train", 5)
    img_c, _ = sample(7, "valid", 5)
    assert np.array_equal(img_a, img_b) and np.array_equal(lab_a, lab_b)
    assert not np.array_equal(img_a, img_c)


@pytest.mark.parametrize("seed", range(6))
def test_synth_boxes_are_tight_around_the_drawn_shapes(seed):
    # Redraw a sample and diff it against its own background: the changed pixels lie
    # inside the label boxes grown by the anti-aliased edge (< 2 px), and every box
    # edge has changed pixels within 2 px of it.
    from runtime import synth as synth_module
    rng = np.random.default_rng(seed)
    state = rng.bit_generator.state
    background = synth_module._background(np.random.default_rng(seed), 128)
    rng.bit_generator.state = state
    image, labels = synth_module.render_sample(rng)
    changed = np.abs(image.astype(int) - background.astype(int)).sum(-1) > 0
    grown = np.zeros_like(changed)
    for _, cx, cy, w, h in labels:
        x1, y1, x2, y2 = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * 128
        grown[max(0, int(y1 - 2)):int(y2 + 2) + 1, max(0, int(x1 - 2)):int(x2 + 2) + 1] = 1
        ys, xs = np.nonzero(changed[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))])
        assert xs.min() <= 2 and xs.max() >= np.ceil(x2) - int(x1) - 3
        assert ys.min() <= 2 and ys.max() >= np.ceil(y2) - int(y1) - 3
    assert changed.any() and not (changed & ~grown).any()


def test_kmeans_anchors_find_clusters():
    wh = np.concatenate([np.full((20, 2), 10.0), np.full((20, 2), 40.0),
                         np.tile([20.0, 60.0], (20, 1))])
    assert kmeans_anchors(wh, 3) == ((10, 10), (20, 60), (40, 40))  # by area
    with pytest.raises(ValueError, match="at least 3"):
        kmeans_anchors(wh[:2], 3)


def test_adapt_cfg_retargets_heads(shared_cfg):
    graph = adapt_cfg(ir.parse_cfg(shared_cfg("yolov3-tiny.cfg")), classes=2, size=96)
    shapes = ir.verify(graph)
    assert graph.width == 96 and shapes[graph.yolo_indices()[0]].c == 3 * 7


# ------------------------------------------------------------------------- parsing

def test_paths_resolve_beside_the_data_file_then_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.names").write_text("hand\n")
    (tmp_path / "list.txt").write_text("")
    data = tmp_path / "sub" / "x.data"
    data.write_text("classes= 1\ntrain = list.txt\nnames=a.names\n")
    monkeypatch.chdir(tmp_path)  # list.txt is found in cwd, a.names beside x.data
    config = read_data_config(data)
    assert config.train == tmp_path / "list.txt" and config.names == ("hand",)
    assert config.valid is None
    with pytest.raises(DataError, match=r"x.data: no valid= entry"):
        load_dataset(config, "valid")


def test_data_file_errors_name_the_line(tmp_path):
    data = tmp_path / "bad.data"
    data.write_text("classes=2\n\ntrain=missing.txt\n")
    with pytest.raises(DataError, match=r"bad.data:3: train=missing.txt: file not found"):
        read_data_config(data)
    data.write_text("# comment\nclasses=zero\n")
    with pytest.raises(DataError, match=r"bad.data:2: classes=zero: expected a positive"):
        read_data_config(data)
    data.write_text("train=x\n")
    with pytest.raises(DataError, match=r"bad.data: missing classes="):
        read_data_config(data)


def test_label_path_rule():
    sep = os.sep
    assert label_path(f"{sep}d{sep}images{sep}train{sep}a.jpg") == \
        Path(f"{sep}d{sep}labels{sep}train{sep}a.txt")
    assert label_path(f"{sep}voc{sep}JPEGImages{sep}b.PNG") == \
        Path(f"{sep}voc{sep}labels{sep}b.txt")
    assert label_path("images/c.png") == Path("labels/c.txt")


def _dataset(tmp_path: Path, labels: dict[str, str], listed: list[str]) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "labels").mkdir(exist_ok=True)
    for name, text in labels.items():
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"),
                    np.zeros((20, 30, 3), np.uint8))
        (tmp_path / "labels" / f"{name}.txt").write_text(text)
    (tmp_path / "train.txt").write_text("".join(f"{p}\n" for p in listed))
    data = tmp_path / "d.data"
    data.write_text("classes=2\ntrain=train.txt\n")
    return data


def test_missing_image_names_list_file_and_line(tmp_path):
    data = _dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"},
                    ["images/a.png", "", "images/gone.png"])
    with pytest.raises(DataError, match=r"train.txt:3: image not found: images/gone.png"):
        load_dataset(data)


@pytest.mark.parametrize("text, line, message", [
    ("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n", 2, r"class 2 out of range: expected 0 "
     r"<= class < classes=2"),
    ("1 0.5 1.5 0.2 0.2\n", 1, r"cy=1.5 out of range: expected \[0, 1\]"),
    ("\n1 0.5 0.5 0 0.2\n", 2, r"w=0 out of range: expected \(0, 1\]"),
    ("1 0.5 0.5 0.2\n", 1, r".*expected 5 fields"),
    ("one 0.5 0.5 0.2 0.2\n", 1, r".*expected numbers"),
    ("-1 0.5 0.5 0.2 0.2\n", 1, r"class -1 out of range"),
])
def test_bad_labels_name_file_and_line(tmp_path, text, line, message):
    data = _dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": text},
                    ["images/a.png", "images/b.png"])
    expected = re.escape(f"{tmp_path / 'labels' / 'b.txt'}:{line}: ") + message
    with pytest.raises(DataError, match=expected):
        load_dataset(data)
    skipping = load_dataset(data, skip_bad=True)
    assert len(skipping) == 1 and len(skipping.skipped) == 1
    assert f"b.txt:{line}:" in skipping.skipped[0]


def test_missing_label_file_is_an_empty_image(tmp_path):
    assert read_labels(tmp_path / "none.txt", 3).shape == (0, 5)


def test_corrupt_image_is_a_data_error(tmp_path):
    data = _dataset(tmp_path, {"a": ""}, ["images/a.png"])
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    dataset = load_dataset(data)
    with pytest.raises(DataError, match=r"a.png: cannot read image"):
        next(iterate_batches(dataset, (32, 32), 1))


# ------------------------------------------------------------------------ batching

def test_letterbox_maps_boxes_onto_the_object():
    # A white 20x10 rectangle at x 40..60, y 10..20 of a 100x50 image.
    image = np.zeros((50, 100, 3), np.uint8)
    image[10:20, 40:60] = 255
    labels = np.array([[1, 0.5, 0.3, 0.2, 0.2]], np.float32)
    out, boxes, (scale, pad_x, pad_y) = prepare_sample(image, labels, (64, 64))
    assert (scale, pad_x, pad_y) == (0.64, 0, 16)
    _, cx, cy, w, h = boxes[0] * [1, 64, 64, 64, 64]
    assert (cx, cy, w, h) == pytest.approx((32, 16 + 15 * 0.64, 12.8, 6.4), abs=1e-4)
    white = np.argwhere(out[..., 0] > 0.9)
    assert white[:, 1].min() >= cx - w / 2 - 1 and white[:, 1].max() <= cx + w / 2 + 1
    assert white[:, 0].min() >= cy - h / 2 - 1 and white[:, 0].max() <= cy + h / 2 + 1
    assert out[0, 0, 0] == pytest.approx(0.5)  # letterbox padding is 0.5 grey


def test_augmentation_keeps_boxes_on_the_object():
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:24, 30:50] = 255
    labels = np.array([[0, 40 / 64, 16 / 64, 20 / 64, 16 / 64]], np.float32)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        aug = Augment(flip=0.5, hue=0, saturation=0, value=0, scale=0.3, translate=0.1)
        out, boxes, _ = prepare_sample(image, labels, (64, 64), aug, rng)
        white = np.argwhere(out[..., 0] > 0.9)
        if not len(boxes):
            continue
        _, cx, cy, w, h = boxes[0] * [1, 64, 64, 64, 64]
        assert white[:, 1].min() >= cx - w / 2 - 1.5 and white[:, 1].max() <= cx + w / 2 + 1
        assert white[:, 0].min() >= cy - h / 2 - 1.5 and white[:, 0].max() <= cy + h / 2 + 1


def test_batches_are_seeded_and_padded(synth):
    dataset = load_dataset(synth.data)
    aug = Augment()
    first = list(iterate_batches(dataset, (64, 64), 5, seed=1, epoch=2, augment=aug))
    again = list(iterate_batches(dataset, (64, 64), 5, seed=1, epoch=2, augment=aug))
    other = list(iterate_batches(dataset, (64, 64), 5, seed=1, epoch=3, augment=aug))
    assert len(first) == 2  # 12 images, drop_last
    assert all(np.array_equal(a.images, b.images) and np.array_equal(a.targets, b.targets)
               for a, b in zip(first, again))
    assert not np.array_equal(first[0].indices, other[0].indices)
    b = first[0]
    assert b.images.shape == (5, 64, 64, 3) and b.images.dtype == np.float32
    assert b.targets.shape == (5, 8, 5)
    real = b.targets[..., 0] >= 0
    counts = [len(dataset.samples[i].labels) for i in b.indices]
    # augmentation may only drop boxes (per image; 8 is the padded maximum), and the
    # batch keeps some
    assert (real.sum(1) <= np.minimum(counts, 8)).all() and real.any()
    assert (b.targets[~real] == -1).all()
    plain = list(iterate_batches(dataset, (64, 64), 5, shuffle=False, drop_last=False,
                                 augment=NO_AUGMENT))
    assert [len(p.indices) for p in plain] == [5, 5, 2]
    assert np.array_equal(plain[0].targets[0, :len(dataset.samples[0].labels)],
                          dataset.samples[0].labels)


def test_prefetch_keeps_order_and_reraises():
    with Prefetch(iter(range(50)), depth=3) as it:
        assert list(it) == list(range(50))

    def broken():
        yield 1
        raise DataError("boom", path="x.txt", line=4)

    it = Prefetch(broken())
    assert next(it) == 1
    with pytest.raises(DataError, match="x.txt:4: boom"):
        next(it)


def test_prefetch_close_stops_the_producer():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = Prefetch(endless(), depth=2)
    assert next(it) == 0
    it.close()
    count = len(produced)
    assert count <= 5  # only ever `depth` (+ one in hand) ahead
    assert not any(t.name == "darkslim-prefetch" and t.is_alive()
                   for t in threading.enumerate())


def test_synth_command(tmp_path, capsys):
    from darkslim.cli import main

    assert main(["synth", str(tmp_path / "s"), "--train", "3", "--valid", "2",
                 "--size", "64", "--seed", "1"]) == 0
    for name in ("synth.data", "synth.names", "train.txt", "valid.txt", "model.cfg",
                 "images/train/000002.png", "labels/valid/000001.txt"):
        assert (tmp_path / "s" / name).exists(), name
    assert ir.parse_cfg(tmp_path / "s" / "model.cfg").width == 64
    assert main(["synth", str(tmp_path / "t"), "--size", "50"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
