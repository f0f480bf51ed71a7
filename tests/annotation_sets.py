"""Small VOC, COCO and YOLO annotation sets written to a folder, for the importer tests
(tests/test_data_import.py, tests/test_fuzz_annotations.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_image(path: Path, width: int, height: int) -> Path:
    """A black PNG/JPEG of ``width`` x ``height`` (the suffix picks the codec)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix or ".png", np.zeros((height, width, 3), np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def voc_xml(filename: str | None, size: tuple[int, int] | None,
            objects: list[tuple[str, tuple[float, float, float, float]]],
            difficult: tuple[int, ...] = ()) -> str:
    """A VOC annotation; ``objects`` are ``(name, (xmin, ymin, xmax, ymax))`` 1-based."""
    parts = ["<annotation>", "<folder>images</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for i, (name, (x0, y0, x1, y1)) in enumerate(objects):
        parts.append(f"<object><name>{name}</name><difficult>{int(i in difficult)}"
                     f"</difficult><bndbox><xmin>{x0:g}</xmin><ymin>{y0:g}</ymin>"
                     f"<xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox></object>")
    return "\n".join(parts + ["</annotation>"])


def write_voc(root: Path, images: dict[str, tuple[tuple[int, int], list]],
              *, sized: bool = True) -> Path:
    """``root/annotations/*.xml`` + ``root/images/*`` (the raccoon layout)."""
    for name, (size, objects) in images.items():
        write_image(root / "images" / name, *size)
        xml = root / "annotations" / (Path(name).stem + ".xml")
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(voc_xml(name, size if sized else None, objects))
    return root


def write_coco(root: Path, data: dict, split: str = "val2017",
               sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """``root/annotations/instances_<split>.json`` and its images in ``root/<split>/``
    (sizes from ``data["images"]`` unless ``sizes`` overrides one)."""
    for entry in data.get("images", []):
        if isinstance(entry, dict) and isinstance(entry.get("file_name"), str):
            size = (sizes or {}).get(entry["file_name"], (entry["width"], entry["height"]))
            write_image(root / split / entry["file_name"], *size)
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_dict(images: list[tuple[int, str, int, int]],
              annotations: list[tuple[int, int, list[float]]],
              categories: list[tuple[int, str]]) -> dict:
    """``images`` (id, file_name, w, h); ``annotations`` (image_id, category_id, bbox)."""
    return {"images": [{"id": i, "file_name": f, "width": w, "height": h}
                       for i, f, w, h in images],
            "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b,
                             "area": b[2] * b[3], "iscrowd": 0}
                            for k, (i, c, b) in enumerate(annotations)],
            "categories": [{"id": i, "name": n} for i, n in categories]}


def write_yolo(root: Path, names: list[str],
               splits: dict[str, dict[str, tuple[tuple[int, int], str | None]]]) -> Path:
    """``root/data.yaml`` + ``images/<split>/`` + ``labels/<split>/``; each image is
    ``(size, label text or None for no label file)``."""
    for split, images in splits.items():
        for name, (size, text) in images.items():
            write_image(root / "images" / split / name, *size)
            if text is not None:
                label = root / "labels" / split / (Path(name).stem + ".txt")
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(text)
    lines = ["path: ."] + [f"{'val' if s == 'val' else s}: images/{s}" for s in splits]
    lines += [f"nc: {len(names)}", "names:"] + [f"  {i}: {n}" for i, n in enumerate(names)]
    (root / "data.yaml").write_text("\n".join(lines) + "\n")
    return root / "data.yaml"
