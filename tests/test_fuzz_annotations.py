"""In-process fuzz of the annotation importers (`frontends.annotations`): VOC XML, COCO
JSON, and ultralytics data.yaml + label files.

Whatever the bytes, only `AnnotationError` (a ValueError naming the file) may escape.
Inputs are random bytes, truncations and byte edits of valid files, and random JSON/YAML
structures built from the formats' own keys. ``DARKSLIM_FUZZ_EXAMPLES`` (200 here)
examples per importer run with the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import frontends.annotations as fa
from tests.annotation_sets import coco_dict, voc_xml, write_coco, write_image, write_yolo
from tests.test_fuzz import mutated_bytes  # byte flips, inserts, cuts, truncation

EXAMPLES = int(os.environ.get("DARKSLIM_FUZZ_EXAMPLES", "200"))


def fuzz(examples: int = EXAMPLES):
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def only_typed_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except fa.AnnotationError as exc:
        assert str(exc).startswith(exc.path), str(exc)
        return None


def inputs(base: bytes):
    return st.one_of(st.binary(max_size=200), mutated_bytes(base))


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="darkslim-fuzz-ann-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------- VOC

VOC = voc_xml("a.png", (20, 10), [("x", (1, 1, 5, 5)), ("y", (2, 3, 20, 10))]).encode()


@fuzz()
@given(data=inputs(VOC), sized_image=st.booleans())
def test_voc_importer_raises_only_typed_errors(scratch, data, sized_image):
    root = scratch / "voc"
    if not (root / "a.png").exists():
        write_image(root / "a.png", 20, 10)
    (root / "a.xml").write_bytes(data)
    ann = only_typed_errors(fa.read_voc, root)
    if ann is not None:  # what reads is inside its image
        for im in ann.images:
            assert all(0 <= b.x0 < b.x1 <= im.width and 0 <= b.y0 < b.y1 <= im.height
                       for b in im.boxes)


# --------------------------------------------------------------------------------- COCO

COCO = coco_dict([(1, "a.png", 20, 10)], [(1, 3, [1, 1, 5, 5]), (1, 4, [0, 0, 20, 10])],
                 [(3, "x"), (4, "y")])
KEYS = ["images", "annotations", "categories", "id", "image_id", "category_id", "bbox",
        "file_name", "width", "height", "name", "iscrowd"]
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.sampled_from(
        [0.5, -1.5, 1e308, float("nan")]), st.sampled_from(["a.png", "", "x", "b.png"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=20)


@st.composite
def coco_structures(draw) -> bytes:
    data = json.loads(json.dumps(COCO))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["images", "annotations", "categories", None]))
        if section is None:
            data[draw(st.sampled_from(KEYS))] = draw(VALUES)
        elif data.get(section) and isinstance(data[section], list):
            entry = draw(st.integers(0, len(data[section]) - 1))
            if isinstance(data[section][entry], dict):
                data[section][entry][draw(st.sampled_from(KEYS))] = draw(VALUES)
            else:
                data[section][entry] = draw(VALUES)
        else:
            data[section] = draw(VALUES)
    return json.dumps(data, allow_nan=True).encode()


@fuzz()
@given(data=st.one_of(inputs(json.dumps(COCO).encode()), coco_structures()))
def test_coco_importer_raises_only_typed_errors(scratch, data):
    path = scratch / "coco" / "annotations" / "instances_val2017.json"
    if not path.exists():
        write_coco(scratch / "coco", COCO)
    path.write_bytes(data)
    only_typed_errors(fa.read_coco, path)


# --------------------------------------------------------------------------------- YOLO

YAML = b"path: .\ntrain: images/train\nval: images/val\nnc: 2\nnames:\n  0: a\n  1: b\n"
LABEL = b"0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.2\n"


@fuzz()
@given(which=st.sampled_from(["yaml", "label"]), yaml=inputs(YAML), label=inputs(LABEL))
def test_yolo_importer_raises_only_typed_errors(scratch, which, yaml, label):
    root = scratch / "yolo"
    if not (root / "data.yaml").exists():
        write_yolo(root, ["a", "b"], {"train": {"x.png": ((20, 10), "")},
                                      "val": {"y.png": ((20, 10), "")}})
    (root / "data.yaml").write_bytes(yaml if which == "yaml" else YAML)
    (root / "labels" / "train" / "x.txt").write_bytes(label if which == "label" else LABEL)
    ann = only_typed_errors(fa.read_yolo, root)
    if ann is not None:
        for im in ann.images:
            assert all(0 <= b.x0 < b.x1 <= im.width and 0 <= b.y0 < b.y1 <= im.height
                       for b in im.boxes)
