"""`darkslim data import` and `frontends.annotations`: the raccoon set end to end, the
round trips (VOC -> Darknet, COCO -> Darknet -> COCO), the split and each bad input."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import frontends.annotations as fa
from darkslim.cli import main
from runtime.dataset import label_path, load_dataset, read_labels
from tests.annotation_sets import coco_dict, voc_xml, write_coco, write_image, write_voc, write_yolo

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "raccoon"


def import_(fmt: str, src, out, *extra: str) -> int:
    return main(["data", "import", fmt, str(src), "--out", str(out), *extra])


def write(annotations: fa.Annotations, out: Path, fraction: float = 0.0, **kw):
    split = fa.split_by_fraction(annotations.images, fraction, 0)
    return fa.write_darknet_dataset(out, split, annotations, label_path=label_path, **kw)


# ------------------------------------------------------------------------ raccoon set

@pytest.mark.skipif(not RACCOON.is_dir(), reason="../shared/data/raccoon is absent "
                    "(the real VOC set lives outside the repository)")
def test_raccoon_imports_with_its_own_split(tmp_path, capsys):
    out = tmp_path / "raccoon"
    csvs = RACCOON / "data"
    assert import_("voc", RACCOON, out, "--split", str(csvs / "train_labels.csv"),
                   str(csvs / "test_labels.csv")) == 0
    printed = capsys.readouterr().out
    assert "160 train, 40 valid" in printed
    data = out / "raccoon.data"
    train, valid = load_dataset(data, "train"), load_dataset(data, "valid")
    assert (len(train), len(valid)) == (160, 40)
    assert sum(len(s.labels) for s in train.samples) == 173
    assert sum(len(s.labels) for s in valid.samples) == 44
    assert train.names == ("raccoon",) and not train.skipped and not valid.skipped
    # The labels are voc_label.py's, computed here from the XML on their own.
    for sample in train.samples + valid.samples:
        root = ET.parse(RACCOON / "annotations" / (sample.image.stem + ".xml")).getroot()
        w, h = (int(root.findtext(f"size/{k}")) for k in ("width", "height"))
        expected = []
        for obj in root.iter("object"):
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{k}"))
                              for k in ("xmin", "ymin", "xmax", "ymax"))
            expected.append((0, ((x0 + x1) / 2 - 1) / w, ((y0 + y1) / 2 - 1) / h,
                             (x1 - x0) / w, (y1 - y0) / h))
        np.testing.assert_allclose(sample.labels, np.array(expected, np.float32),
                                   atol=1e-6)
        # linked, not re-encoded
        original = RACCOON / "images" / sample.image.name
        assert sample.image.read_bytes() == original.read_bytes()
    report = json.loads((out / "import_report.json").read_text())
    assert report["train"]["boxes"] == {"raccoon": 173} and report["problems"] == []


# ---------------------------------------------------------------------------- VOC

def test_voc_reads_boxes_as_voc_label_py(tmp_path):
    write_voc(tmp_path, {"a.jpg": ((100, 50), [("cat", (1, 1, 100, 50)),
                                               ("dog", (11, 21, 30, 40))])})
    ann = fa.read_voc(tmp_path)
    (image,) = ann.images
    assert ann.names == ("cat", "dog") and (image.width, image.height) == (100, 50)
    assert image.boxes == (fa.Box("cat", 0, 0, 99, 49), fa.Box("dog", 10, 20, 29, 39))
    written = write(ann, tmp_path / "out")
    labels = read_labels(label_path(written.root / "images" / "a.jpg"), 2)
    np.testing.assert_allclose(labels[1], [1, 19.5 / 100, 29.5 / 50, 19 / 100, 19 / 50],
                               atol=1e-7)


def test_voc_finds_images_in_jpegimages_or_images_dir(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "000005.xml").write_text(
        voc_xml("000005.jpg", (40, 30), [("car", (2, 2, 20, 20))]))
    write_image(tmp_path / "JPEGImages" / "000005.jpg", 40, 30)
    assert fa.read_voc(tmp_path).images[0].path == tmp_path / "JPEGImages" / "000005.jpg"
    elsewhere = tmp_path / "pics"
    write_image(elsewhere / "000005.jpg", 40, 30)
    assert fa.read_voc(tmp_path / "Annotations", images=elsewhere).images[0].path \
        == elsewhere / "000005.jpg"


def test_voc_difficult_objects_are_left_out_and_counted(tmp_path):
    (tmp_path / "a.xml").write_text(voc_xml("a.png", (40, 30), [
        ("car", (2, 2, 20, 20)), ("car", (3, 3, 9, 9))], difficult=(1,)))
    write_image(tmp_path / "a.png", 40, 30)
    ann = fa.read_voc(tmp_path)
    assert len(ann.images[0].boxes) == 1 and ann.left_out == (("difficult objects", 1),)
    assert len(fa.read_voc(tmp_path, keep_difficult=True).images[0].boxes) == 2


def test_voc_without_size_reads_it_from_the_image(tmp_path):
    write_voc(tmp_path, {"a.png": ((64, 48), [("x", (1, 1, 64, 48))])}, sized=False)
    ann = fa.read_voc(tmp_path)
    assert (ann.images[0].width, ann.images[0].height) == (64, 48)
    assert ann.notes == (("sizes read from the image (no <size> in the XML)", 1),)


@st.composite
def voc_images(draw):
    width, height = draw(st.integers(2, 400)), draw(st.integers(2, 400))
    boxes = []
    for _ in range(draw(st.integers(0, 4))):
        x0 = draw(st.integers(1, width - 1))
        y0 = draw(st.integers(1, height - 1))
        boxes.append(("a", (x0, y0, draw(st.integers(x0 + 1, width)),
                            draw(st.integers(y0 + 1, height)))))
    return (width, height), boxes


@settings(max_examples=25, deadline=None)
@given(voc_images())
def test_voc_to_darknet_round_trip_within_half_a_pixel(tmp_path_factory, image):
    (width, height), boxes = image
    root = tmp_path_factory.mktemp("voc")
    write_voc(root / "src", {"x.png": ((width, height), boxes)})
    ann = fa.read_voc(root / "src")
    names = ann.names or ("a",)
    written = write(fa.Annotations(images=ann.images, names=names), root / "out")
    labels = read_labels(label_path(written.root / "images" / "x.png"), len(names))
    assert len(labels) == len(boxes)
    for (_cls, cx, cy, w, h), (_, (x0, y0, x1, y1)) in zip(labels, boxes):
        # voc_label.py inverted: xmin = (cx - w/2) * W + 1, xmax = (cx + w/2) * W + 1
        back = ((cx - w / 2) * width + 1, (cy - h / 2) * height + 1,
                (cx + w / 2) * width + 1, (cy + h / 2) * height + 1)
        assert np.allclose(back, (x0, y0, x1, y1), atol=0.5), (back, (x0, y0, x1, y1))


# ---------------------------------------------------------------------------- COCO

@st.composite
def coco_sets(draw):
    n_cat = draw(st.integers(1, 4))
    cat_ids = draw(st.lists(st.integers(1, 90), min_size=n_cat, max_size=n_cat,
                            unique=True))
    n_img = draw(st.integers(1, 3))
    image_ids = draw(st.lists(st.integers(0, 10**6), min_size=n_img, max_size=n_img,
                              unique=True))
    images, annotations = [], []
    for k, image_id in enumerate(image_ids):
        w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
        images.append((image_id, f"{k:06d}.png", w, h))
        for _ in range(draw(st.integers(0, 3))):
            x = draw(st.floats(0, w - 0.01))
            y = draw(st.floats(0, h - 0.01))
            bw = draw(st.floats(0.01, max(0.01, w - x)))
            bh = draw(st.floats(0.01, max(0.01, h - y)))
            if x + bw <= w and y + bh <= h:
                annotations.append((image_id, draw(st.sampled_from(cat_ids)),
                                    [x, y, bw, bh]))
    return coco_dict(images, annotations, [(c, f"c{c}") for c in cat_ids])


@settings(max_examples=25, deadline=None)
@given(coco_sets())
def test_coco_to_darknet_to_coco_round_trip(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("coco")
    ann = fa.read_coco(write_coco(root / "src", data))
    written = write(ann, root / "out")
    report = json.loads(written.report.read_text())
    dataset = load_dataset(written.data, "train")
    entries = {e["name"]: e for e in report["images"]}
    samples = [(s.image.name, entries[s.image.name]["width"],
                entries[s.image.name]["height"], s.labels) for s in dataset.samples]
    back = fa.to_coco(samples, dataset.names,
                      image_ids=[entries[s.image.name]["image_id"]
                                 for s in dataset.samples],
                      category_ids=report["category_ids"])
    assert sorted(back["categories"], key=lambda c: c["id"]) == \
        sorted(data["categories"], key=lambda c: c["id"])
    assert sorted(back["images"], key=lambda i: i["id"]) == \
        sorted(data["images"], key=lambda i: i["id"])

    # Each original box has its own exported box within half a pixel (nearest first).
    left = [(a["image_id"], a["category_id"], np.array(a["bbox"]))
            for a in back["annotations"]]
    assert len(left) == len(data["annotations"])
    for a in data["annotations"]:
        candidates = [k for k, (i, c, _) in enumerate(left)
                      if (i, c) == (a["image_id"], a["category_id"])]
        assert candidates, a
        k = min(candidates, key=lambda k: np.abs(left[k][2] - a["bbox"]).max())
        assert np.abs(left[k][2] - a["bbox"]).max() <= 0.5, (left[k], a)
        del left[k]


def test_coco_classes_follow_the_category_ids_and_crowds_are_counted(tmp_path):
    data = coco_dict([(7, "a.png", 50, 40)],
                     [(7, 18, [1, 2, 10, 10]), (7, 3, [0, 0, 50, 40])],
                     [(18, "dog"), (3, "car")])
    data["annotations"].append({"id": 9, "image_id": 7, "category_id": 3,
                                "bbox": [0, 0, 5, 5], "iscrowd": 1})
    ann = fa.read_coco(write_coco(tmp_path, data))
    assert ann.names == ("car", "dog") and ann.category_ids == (3, 18)
    assert ann.images[0].image_id == 7 and len(ann.images[0].boxes) == 2
    assert ann.left_out == (("crowd regions (iscrowd=1)", 1),)
    picked = fa.select_classes(ann, ("dog",))
    assert picked.names == ("dog",) and picked.category_ids == (18,)
    assert [b.name for b in picked.images[0].boxes] == ["dog"]
    assert ("boxes of classes not picked: car", 1) in picked.left_out


# ---------------------------------------------------------------------------- YOLO

def test_yolo_set_keeps_its_split_and_label_layout(tmp_path, capsys):
    src = write_yolo(tmp_path / "src", ["a", "b"], {
        "train": {"x.jpg": ((64, 32), "1 0.5 0.5 0.25 0.5\n0 0.1 0.1 0.2 0.2\n"),
                  "y.jpg": ((64, 32), None)},
        "val": {"x.jpg": ((40, 40), "0 0.5 0.5 1 1\n"),
                "z.jpg": ((40, 40), "0 0.1 0.1 0.2 0.1 0.2 0.2\n")}})
    out = tmp_path / "out"
    assert import_("yolo", src, out, "--name", "mine") == 0
    train, valid = load_dataset(out / "mine.data", "train"), \
        load_dataset(out / "mine.data", "valid")
    assert sorted(s.image.relative_to(out).as_posix() for s in train.samples) == \
        ["images/train/x.jpg", "images/train/y.jpg"]
    assert len(valid) == 2 and train.names == ("a", "b")
    x = next(s for s in train.samples if s.image.name == "x.jpg")
    np.testing.assert_allclose(x.labels, [[1, 0.5, 0.5, 0.25, 0.5], [0, 0.1, 0.1, 0.2, 0.2]],
                               atol=1e-6)
    z = next(s for s in valid.samples if s.image.name == "z.jpg")  # a polygon's box
    np.testing.assert_allclose(z.labels, [[0, 0.15, 0.15, 0.1, 0.1]], atol=1e-6)
    printed = capsys.readouterr().out
    assert "1 images without a label file" in printed and "1 polygons" in printed


# --------------------------------------------------------------------------- split

def _images(n: int) -> tuple[fa.LabeledImage, ...]:
    return tuple(fa.LabeledImage(path=Path(f"{i}.jpg"), name=f"{i:03d}.jpg", width=1,
                                 height=1, boxes=(), source="s") for i in range(n))


def test_fraction_split_is_seeded_and_complete():
    images = _images(50)
    a, b = fa.split_by_fraction(images, 0.2, 3), fa.split_by_fraction(images[::-1], 0.2, 3)
    assert a == b and len(a.valid) == 10 and len(a.train) == 40
    assert {im.name for im in a.train + a.valid} == {im.name for im in images}
    assert fa.split_by_fraction(images, 0.2, 4).valid != a.valid


def test_list_split_matches_names_paths_and_ids(tmp_path):
    images = _images(4)
    (tmp_path / "t.txt").write_text("/data/JPEGImages/000.jpg\n001\n")
    (tmp_path / "v.csv").write_text("filename,class\n002.jpg,a\n002.jpg,b\n")
    split = fa.split_by_lists(images, tmp_path / "t.txt", tmp_path / "v.csv")
    assert [im.name for im in split.train] == ["000.jpg", "001.jpg"]
    assert [im.name for im in split.valid] == ["002.jpg"]
    assert [im.name for im in split.unlisted] == ["003.jpg"]


def test_list_split_errors_name_the_list_and_line(tmp_path):
    images = _images(3)
    (tmp_path / "t.txt").write_text("000.jpg\n001.jpg\n")
    (tmp_path / "v.txt").write_text("002.jpg\n001.jpg\n")
    with pytest.raises(fa.AnnotationError) as info:
        fa.split_by_lists(images, tmp_path / "t.txt", tmp_path / "v.txt")
    assert info.value.path == str(tmp_path / "v.txt") and info.value.where == "line 2"
    assert "in both lists" in info.value.reason
    (tmp_path / "v.txt").write_text("002.jpg\nnope.jpg\n")
    with pytest.raises(fa.AnnotationError, match="nope.jpg: no imported image") as info:
        fa.split_by_lists(images, tmp_path / "t.txt", tmp_path / "v.txt")
    assert info.value.where == "line 2"
    lenient = fa.split_by_lists(images, tmp_path / "t.txt", tmp_path / "v.txt",
                                lenient=True)
    assert lenient.unmatched == (f"{tmp_path / 'v.txt'}:2: nope.jpg",)


# ------------------------------------------------------------------- writing the set

def test_output_is_atomic_and_existing_folders_are_kept(tmp_path, capsys):
    write_voc(tmp_path / "src", {"a.png": ((10, 10), [("x", (1, 1, 5, 5))]),
                                 "b.png": ((10, 10), [("x", (1, 1, 50, 5))])})
    out = tmp_path / "out"
    assert import_("voc", tmp_path / "src", out) == 2  # the CLI's user error
    assert "b.xml: object 1 <bndbox>" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no output, no temp folder
    out.mkdir()
    (out / "keep").write_text("")
    assert import_("voc", tmp_path / "src", out, "--skip-bad") == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert import_("voc", tmp_path / "src", out, "--skip-bad", "--force") == 0
    assert not (out / "keep").exists() and (out / "src.data").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_images_with_one_label_file_are_refused(tmp_path):
    write_image(tmp_path / "a" / "x.png", 8, 8)
    write_image(tmp_path / "b" / "x.jpg", 8, 8)
    images = tuple(fa.LabeledImage(path=p, name=p.name, width=8, height=8, boxes=(),
                                   source=str(p)) for p in (tmp_path / "a" / "x.png",
                                                            tmp_path / "b" / "x.jpg"))
    with pytest.raises(fa.AnnotationError, match="two images with the same name"):
        fa.write_darknet_dataset(tmp_path / "out", fa.Split(images, ()),
                                 fa.Annotations(images, ("a",)), label_path=label_path)


@pytest.mark.parametrize("link", ["hard", "sym", "copy"])
def test_images_are_linked_or_copied_byte_for_byte(tmp_path, link):
    write_voc(tmp_path / "src", {"a.jpg": ((30, 20), [("x", (1, 1, 5, 5))])})
    written = write(fa.read_voc(tmp_path / "src"), tmp_path / "out", link=link)
    target, source = written.root / "images" / "a.jpg", tmp_path / "src" / "images" / "a.jpg"
    assert target.read_bytes() == source.read_bytes() and written.linked == link
    assert target.is_symlink() == (link == "sym")
    assert (os.stat(target).st_ino == os.stat(source).st_ino) == (link != "copy")


# ------------------------------------------------------------------------ bad inputs

def _raises(fn, *args, **kwargs) -> fa.AnnotationError:
    with pytest.raises(fa.AnnotationError) as info:
        fn(*args, **kwargs)
    return info.value


BAD_VOC = {
    # name: (xml text, image (name, size) or None, expected where, words of the reason)
    "box outside": (voc_xml("a.png", (20, 10), [("x", (1, 1, 25, 5))]),
                    ("a.png", (20, 10)), "object 1 <bndbox>", "outside the 20x10 image"),
    "zero area": (voc_xml("a.png", (20, 10), [("x", (3, 1, 3, 5))]),
                  ("a.png", (20, 10)), "object 1 <bndbox>", "zero area"),
    "missing image": (voc_xml("a.png", (20, 10), []), None, "<filename>",
                      "image a.png not found"),
    "size disagrees": (voc_xml("a.png", (20, 10), []), ("a.png", (10, 20)), "<size>",
                       "size 20x10 but the image a.png is 10x20"),
    "no size, image unreadable": (voc_xml("a.png", None, []), ("a.png", None),
                                  "<filename>", "is unreadable"),
    "bad number": (voc_xml("a.png", (20, 10), [("x", (1, 1, 5, 5))]).replace(
        "<xmax>5<", "<xmax>five<"), ("a.png", (20, 10)), "object 1 <bndbox>",
        "<xmax>five</xmax>: expected a number"),
    "not XML": ("<annotation><filename>a.png", ("a.png", (20, 10)), "",
                "not well-formed XML"),
}


@pytest.mark.parametrize("case", sorted(BAD_VOC))
def test_bad_voc_input_names_file_element_and_reason(tmp_path, case):
    text, image, where, reason = BAD_VOC[case]
    (tmp_path / "a.xml").write_text(text)
    if image is not None:
        name, size = image
        if size is None:
            (tmp_path / name).write_bytes(b"not an image")
        else:
            write_image(tmp_path / name, *size)
    error = _raises(fa.read_voc, tmp_path)
    assert error.path == str(tmp_path / "a.xml")
    assert error.where.startswith(where) and reason in error.reason, str(error)
    # --skip-bad: the same case is listed, and the good image still imported
    write_voc(tmp_path / "good", {"g.png": ((8, 8), [("x", (1, 1, 4, 4))])})
    ann = fa.read_voc(tmp_path, skip_bad=True)
    assert [im.name for im in ann.images] == ["g.png"]
    (problem,) = ann.problems
    assert (problem.path, problem.action) == (str(tmp_path / "a.xml"), "image left out")
    assert reason in problem.reason


def test_two_voc_files_naming_one_image_are_refused(tmp_path):
    write_voc(tmp_path, {"a.png": ((8, 8), [])})
    (tmp_path / "annotations" / "copy.xml").write_text(voc_xml("a.png", (8, 8), []))
    error = _raises(fa.read_voc, tmp_path)
    assert error.path == str(tmp_path / "annotations" / "copy.xml")
    assert "two images with the same name" in error.reason


def test_voc_box_clipped_only_when_asked_and_then_listed(tmp_path):
    write_voc(tmp_path, {"a.png": ((20, 10), [("x", (5, 1, 25, 5))])})
    ann = fa.read_voc(tmp_path, clip=True)
    assert ann.images[0].boxes == (fa.Box("x", 4, 0, 20, 4),)
    (problem,) = ann.problems
    assert problem.action == "box clipped to (4, 0, 20, 4)" and "outside" in problem.reason


def test_a_picked_class_the_set_lacks_is_an_error(tmp_path):
    write_voc(tmp_path, {"a.png": ((20, 10), [("cat", (1, 1, 5, 5))])})
    with pytest.raises(fa.AnnotationError, match="--classes dgo: dgo not a class"):
        fa.select_classes(fa.read_voc(tmp_path), ("dgo",))


def _coco_case(tmp_path, case):
    good = coco_dict([(1, "a.png", 20, 10), (2, "b.png", 20, 10)],
                     [(1, 1, [1, 1, 5, 5]), (2, 1, [0, 0, 20, 10])], [(1, "x")])
    sizes = None
    where, reason = "", ""
    if case == "box outside":
        good["annotations"][1]["bbox"] = [10, 0, 15, 5]
        where, reason = "annotations[1]", "outside the 20x10 image"
    elif case == "zero area":
        good["annotations"][1]["bbox"] = [10, 0, 0, 5]
        where, reason = "annotations[1]", "zero area"
    elif case == "class not in names":
        good["annotations"][1]["category_id"] = 5
        where, reason = "annotations[1]", "category_id 5 is not a category id"
    elif case == "unknown image":
        good["annotations"][1]["image_id"] = 9
        where, reason = "annotations[1]", "image_id 9 is not the id"
    elif case == "image size disagrees":
        sizes = {"b.png": (10, 10)}
        where, reason = "images[1]", "20x10 but the image b.png is 10x10"
    elif case == "same file name":
        good["images"][1]["file_name"] = "a.png"
        where, reason = "images[1]", "two images with the same name"
    elif case == "bad bbox":
        good["annotations"][1]["bbox"] = [1, 2, "3"]
        where, reason = "annotations[1]", "expected [x, y, width, height]"
    path = write_coco(tmp_path, good, sizes=sizes)
    return path, where, reason


@pytest.mark.parametrize("case", ["box outside", "zero area", "class not in names",
                                  "unknown image", "image size disagrees",
                                  "same file name", "bad bbox"])
def test_bad_coco_input_names_file_index_and_reason(tmp_path, case):
    path, where, reason = _coco_case(tmp_path, case)
    error = _raises(fa.read_coco, path)
    assert error.path == str(path) and error.where.startswith(where), str(error)
    assert reason in error.reason, str(error)
    ann = fa.read_coco(path, skip_bad=True)
    assert ann.problems and reason in ann.problems[0].reason
    # the other image is kept; an annotation of no image is left out on its own
    assert len(ann.images) == (2 if case == "unknown image" else 1)
    assert ann.problems[0].action == ("annotation left out" if case == "unknown image"
                                      else "image left out")


@pytest.mark.parametrize("case", ["missing", "unreadable"])
def test_coco_image_missing_or_unreadable(tmp_path, case):
    path = write_coco(tmp_path, coco_dict([(1, "a.png", 20, 10)], [], [(1, "x")]))
    if case == "missing":
        (tmp_path / "val2017" / "a.png").unlink()
    else:
        (tmp_path / "val2017" / "a.png").write_bytes(b"\x89PNG broken")
    error = _raises(fa.read_coco, path)
    assert error.path == str(path) and error.where == "images[0] file_name"
    assert ("not found" if case == "missing" else "unreadable") in error.reason


YOLO_BAD = {
    "class not in names": ("2 0.5 0.5 0.2 0.2\n", "line 1", "class 2 is not in the names"),
    "box outside": ("0 0.9 0.5 0.4 0.2\n", "line 1", "outside the 20x10 image"),
    "zero area": ("0 0.5 0.5 0 0.2\n", "line 1", "zero area"),
    "not numbers": ("0 0.5 x 0.2 0.2\n", "line 1", "expected numbers"),
    "four fields": ("\n\n0 0.5 0.5 0.2\n", "line 3", "4 fields"),
}


@pytest.mark.parametrize("case", sorted(YOLO_BAD))
def test_bad_yolo_label_names_file_line_and_reason(tmp_path, case):
    text, where, reason = YOLO_BAD[case]
    src = write_yolo(tmp_path, ["a", "b"], {"train": {"x.png": ((20, 10), text),
                                                      "y.png": ((20, 10), "")}})
    error = _raises(fa.read_yolo, src)
    assert error.path == str(tmp_path / "labels" / "train" / "x.txt")
    assert error.where.startswith(where) and reason in error.reason, str(error)
    ann = fa.read_yolo(src, skip_bad=True)
    assert [im.name for im in ann.images] == ["train/y.png"] and len(ann.problems) == 1


def test_yolo_missing_unreadable_and_repeated_images(tmp_path):
    src = write_yolo(tmp_path, ["a"], {"train": {"x.png": ((20, 10), "")}})
    (tmp_path / "images" / "train" / "x.png").write_bytes(b"junk")
    error = _raises(fa.read_yolo, src)
    assert error.path == str(tmp_path / "labels" / "train" / "x.txt")
    assert "unreadable" in error.reason
    write_image(tmp_path / "images" / "train" / "x.png", 20, 10)
    (tmp_path / "list.txt").write_text("images/train/x.png\nimages/train/gone.png\n")
    src.write_text("path: .\ntrain: list.txt\nnames: [a]\n")
    assert "gone.png not found" in _raises(fa.read_yolo, src).reason
    (tmp_path / "list.txt").write_text("images/train/x.png\n")
    src.write_text("path: .\ntrain: list.txt\nval: list.txt\nnames: [a]\n")
    assert "two images with the same name" in _raises(fa.read_yolo, src).reason


@pytest.mark.parametrize("text, reason", [
    ("train: [\n", "cannot read YAML"), ("- a\n", "expected a mapping"),
    ("train: images\nnames: [a, b]\nnc: 3\n", "nc 3 but 2 names"),
    ("train: nowhere\nnames: [a]\n", "does not exist"),
    ("train: .\nnames: 5\n", "expected a list of class names")])
def test_bad_data_yaml_is_named(tmp_path, text, reason):
    (tmp_path / "data.yaml").write_text(text)
    error = _raises(fa.read_yolo, tmp_path)
    assert error.path == str(tmp_path / "data.yaml") and reason in error.reason


def test_skip_bad_lists_every_case_in_the_report_and_summary(tmp_path, capsys):
    write_voc(tmp_path / "src", {"a.png": ((20, 10), [("x", (1, 1, 5, 5))]),
                                 "b.png": ((20, 10), [("x", (1, 1, 50, 5))]),
                                 "c.png": ((20, 10), [("x", (2, 2, 2, 5))])})
    out = tmp_path / "out"
    assert import_("voc", tmp_path / "src", out, "--skip-bad",
                   "--valid-fraction", "0") == 0
    printed = capsys.readouterr().out
    assert "2 bad inputs: 2 images left out" in printed
    report = json.loads((out / "import_report.json").read_text())
    assert [(Path(p["file"]).name, p["action"]) for p in report["problems"]] == \
        [("b.xml", "image left out"), ("c.xml", "image left out")]
    assert report["train"]["images"] == 1


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import frontends.annotations.darknet as writer

    write_voc(tmp_path / "src", {"a.png": ((10, 10), []), "b.png": ((10, 10), [])})
    ann = fa.read_voc(tmp_path / "src")
    calls = []

    def place(source, target, link):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return "copy"

    monkeypatch.setattr(writer, "_place", place)
    with pytest.raises(OSError, match="No space left"):
        write(ann, tmp_path / "out")
    assert len(calls) == 2 and sorted(os.listdir(tmp_path)) == ["src"]


def test_image_size_is_the_one_opencv_sees_with_exif_orientation(tmp_path):
    import cv2
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": OpenCV turns it on reading
    Image.new("RGB", (40, 20)).save(tmp_path / "turned.jpg", exif=exif)
    assert cv2.imread(str(tmp_path / "turned.jpg")).shape[:2] == (40, 20)
    assert fa.image_size(tmp_path / "turned.jpg", source="s") == (20, 40)
    with pytest.raises(fa.AnnotationError, match="extension '.gif'"):
        fa.image_size(tmp_path / "x.gif", source="s")


def test_an_output_folder_inside_an_images_folder_is_refused(tmp_path):
    write_voc(tmp_path / "src", {"a.png": ((10, 10), [])})
    with pytest.raises(fa.AnnotationError, match="outside .* images/ folder"):
        write(fa.read_voc(tmp_path / "src"), tmp_path / "images" / "out")
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())


@pytest.mark.slow
@pytest.mark.skipif(not RACCOON.is_dir(), reason="../shared/data/raccoon is absent")
def test_darkslim_eval_reads_the_imported_raccoon_set(tmp_path, capsys):
    """The imported set through ``darkslim eval`` (a one-class network of random
    weights: the numbers are not the point, the 40 images and 44 truths are)."""
    import frontends
    import ir
    from darkslim.commands.synth import synth_cfg_path
    from darkslim.testing import random_variables
    from runtime.synth import adapt_cfg

    csvs = RACCOON / "data"
    assert import_("voc", RACCOON, tmp_path / "set", "--split",
                   str(csvs / "train_labels.csv"), str(csvs / "test_labels.csv")) == 0
    graph = adapt_cfg(ir.parse_cfg(synth_cfg_path()), classes=1, size=128)
    (tmp_path / "m.cfg").write_text(ir.write_cfg(graph))
    frontends.save_variables(graph, random_variables(graph, seed=0), tmp_path / "m.weights")
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "set" / "raccoon.data"), str(tmp_path / "m.cfg"),
                 str(tmp_path / "m.weights"), "--no-coco", "--json",
                 str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert "on 40 valid images" in capsys.readouterr().out
    assert result["images"] == 40
    assert [(c["name"], c["truths"]) for c in result["classes"]] == [("raccoon", 44)]


def test_a_zero_size_is_no_size_and_a_missing_images_folder_is_named(tmp_path):
    (tmp_path / "a.xml").write_text(voc_xml("a.png", (0, 0), [("x", (1, 1, 4, 4))]))
    write_image(tmp_path / "a.png", 12, 8)
    ann = fa.read_voc(tmp_path)
    assert (ann.images[0].width, ann.images[0].height) == (12, 8) and ann.notes
    error = _raises(fa.read_voc, tmp_path, images=tmp_path / "nowhere")
    assert error.path == str(tmp_path) and "not a folder" in error.reason


def test_a_yolo_set_without_val_gets_a_seeded_split(tmp_path, capsys):
    src = write_yolo(tmp_path / "src", ["a"], {"train": {
        f"{i}.png": ((8, 8), "0 0.5 0.5 0.5 0.5\n") for i in range(10)}})
    assert import_("yolo", src, tmp_path / "out") == 0
    assert "8 train, 2 valid (--valid-fraction 0.2 --seed 0)" in capsys.readouterr().out


def test_classes_pick_and_order_the_labels(tmp_path, capsys):
    write_voc(tmp_path / "src", {"a.png": ((20, 10), [("cat", (1, 1, 5, 5)),
                                                      ("dog", (2, 2, 6, 6)),
                                                      ("eel", (3, 3, 7, 7))])})
    out = tmp_path / "out"
    assert import_("voc", tmp_path / "src", out, "--classes", "eel,cat",
                   "--valid-fraction", "0") == 0
    assert (out / "src.names").read_text() == "eel\ncat\n"
    (sample,) = load_dataset(out / "src.data").samples
    assert sample.labels[:, 0].tolist() == [1, 0]  # cat is 1, eel 0; dog left out
    assert "left out: 1 boxes of classes not picked: dog" in capsys.readouterr().out
