"""COCO ``instances_*.json`` annotations, and the way back (`to_coco`).

COCO boxes are ``[x, y, w, h]`` in the continuous pixel coordinates of
`frontends.annotations.model` (``x`` the left edge), so they are read unchanged.
Classes are the ``categories`` in the order of their ids (label ``i`` is the ``i``-th
smallest id; the ids are kept in `Annotations.category_ids`). Crowd regions
(``iscrowd: 1``) are left out (and counted) unless ``keep_crowd``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frontends.annotations.errors import AnnotationError, Problem
from frontends.annotations.images import image_size
from frontends.annotations.model import Annotations, Box, LabeledImage, check_box


def default_image_dirs(json_path: Path) -> tuple[Path, ...]:
    """Where the images of ``annotations/instances_val2017.json`` usually are: a folder
    named like the json's split (``val2017``) beside the json, beside its folder, or in
    ``images/`` beside its folder (ultralytics' COCO layout)."""
    split = json_path.stem.split("_", 1)[1] if "_" in json_path.stem else json_path.stem
    return (json_path.parent / split, json_path.parent.parent / split,
            json_path.parent.parent / "images" / split)


def read_coco(json_path: str | os.PathLike[str], *, images: str | os.PathLike[str] | None = None,
              keep_crowd: bool = False, skip_bad: bool = False,
              clip: bool = False) -> Annotations:
    """A COCO detection json as an annotation set.

    Args:
        images: the folder of the ``file_name``s (default: the first of
            `default_image_dirs` that exists).
        skip_bad: leave out each image with a bad entry or annotation (and each
            annotation of an unknown image) and list it in `Annotations.problems`.
        clip: cut boxes partly outside their image to it (each listed).

    Raises:
        AnnotationError: naming the json and the entry (``images[3]``,
            ``annotations[17]``): unreadable JSON, a missing or ill-typed field, a
            category or image id given twice, two images with the same file name,
            an annotation of an unknown image or category (a class not in the
            names), a box outside its image or of zero area, a missing or unreadable
            image or one whose size disagrees with the json.
    """
    path = Path(json_path)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise AnnotationError(f"cannot read JSON: {exc}", path=path) from None
    if not isinstance(data, dict):
        raise AnnotationError(f"top level is {type(data).__name__}: expected an object "
                              "with images, annotations and categories", path=path)
    entries = {key: _list(data, key, path) for key in ("images", "annotations",
                                                       "categories")}
    names, ids = _categories(entries["categories"], path)
    if images is not None and not Path(images).is_dir():
        raise AnnotationError(f"--images {images}: not a folder: expected the folder of "
                              "the images' file_name", path=path)
    folder = Path(images) if images is not None else next(
        (d for d in default_image_dirs(path) if d.is_dir()), None)
    if folder is None:
        raise AnnotationError("no image folder found (looked in " + ", ".join(
            str(d) for d in default_image_dirs(path)) + "): pass --images DIR", path=path)

    problems: list[Problem] = []
    bad: dict[int, None] = {}

    def fail(error: AnnotationError, image_id: int | None, entry: str) -> None:
        """Raise, or (skip_bad) list the error and leave out the image it concerns
        (or, when it concerns no image, the annotation)."""
        if not skip_bad:
            raise error
        if image_id is not None:
            bad[image_id] = None
        problems.append(Problem.of(error, f"{entry} left out" if image_id is None
                                   else "image left out"))

    infos: dict[int, tuple[str, int, int, str]] = {}
    by_name: dict[str, str] = {}
    for i, entry in enumerate(entries["images"]):
        where = f"images[{i}]"
        try:
            if not isinstance(entry, dict):
                raise AnnotationError(f"{type(entry).__name__}: expected an object",
                                      path=path, where=where)
            image_id = _int(entry, "id", path, where)
            if image_id in infos:
                raise AnnotationError(f"id {image_id} given twice: expected unique ids",
                                      path=path, where=where)
            name = entry.get("file_name")
            if not isinstance(name, str) or not name:
                raise AnnotationError(f"file_name {name!r}: expected a file name",
                                      path=path, where=where)
            if name in by_name:
                raise AnnotationError(f"file_name {name}: two images with the same name "
                                      f"(also {by_name[name]}): expected distinct names",
                                      path=path, where=where)
            width, height = (_int(entry, k, path, where, positive=True)
                             for k in ("width", "height"))
        except AnnotationError as exc:
            # Every image of an id that is bad somewhere is left out (both entries
            # of a repeated id); an entry without a usable id is left out on its own.
            known = entry.get("id") if isinstance(entry, dict) else None
            fail(exc, known if _is_int(known) else None, "image entry")
            continue
        infos[image_id] = (name, width, height, where)
        by_name[name] = where

    boxes: dict[int, list[Box]] = {k: [] for k in infos}
    clipped: dict[int, list[Problem]] = {}
    crowd = 0
    for i, entry in enumerate(entries["annotations"]):
        where = f"annotations[{i}]"
        given = entry.get("image_id") if isinstance(entry, dict) else None
        owner = given if _is_int(given) and given in infos else None
        if _is_int(given) and given in bad:
            continue  # its image is left out and listed already
        try:
            if not isinstance(entry, dict):
                raise AnnotationError(f"{type(entry).__name__}: expected an object",
                                      path=path, where=where)
            if owner is None:
                raise AnnotationError(f"image_id {given!r} is not the id of an entry "
                                      "of images", path=path, where=where)
            category = entry.get("category_id")
            if not _is_int(category) or category not in ids:
                raise AnnotationError(f"category_id {category!r} is not a category id: "
                                      f"expected one of {sorted(ids)}", path=path,
                                      where=where)
            if entry.get("iscrowd", 0) not in (0, 1, False, True):
                raise AnnotationError(f"iscrowd {entry.get('iscrowd')!r}: expected 0 or 1",
                                      path=path, where=where)
            if entry.get("iscrowd", 0) and not keep_crowd:
                crowd += 1
                continue
            bbox = entry.get("bbox")
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(_is_number(v) for v in bbox)):
                raise AnnotationError(f"bbox {bbox!r}: expected [x, y, width, height] "
                                      "(4 finite numbers)", path=path, where=where)
            x, y, w, h = (float(v) for v in bbox)
            _, width, height, _ = infos[owner]
            box, problem = check_box(
                Box(names[ids[category]], x, y, x + w, y + h,
                    where=f"{where} bbox [{', '.join(f'{v:g}' for v in bbox)}]"),
                width, height, path=str(path), clip=clip)
        except AnnotationError as exc:
            fail(exc, owner, "annotation")
            continue
        boxes[owner].append(box)
        if problem is not None:
            clipped.setdefault(owner, []).append(problem)

    found = []
    for image_id, (name, width, height, where) in infos.items():
        if image_id in bad:
            continue
        try:
            size = image_size(folder / name, source=path, where=f"{where} file_name")
            if size != (width, height):
                raise AnnotationError(
                    f"width x height {width}x{height} but the image {name} is "
                    f"{size[0]}x{size[1]} (as OpenCV reads it): expected the same",
                    path=path, where=where)
        except AnnotationError as exc:
            fail(exc, image_id, "image")
            continue
        problems += clipped.get(image_id, [])
        found.append(LabeledImage(path=folder / name, name=name, width=width,
                                  height=height, boxes=tuple(boxes[image_id]),
                                  source=str(path), image_id=image_id))
    return Annotations(images=tuple(found), names=names, problems=tuple(problems),
                       left_out=(("crowd regions (iscrowd=1)", crowd),) if crowd else (),
                       category_ids=tuple(sorted(ids)))


def to_coco(samples: Iterable[tuple[str, int, int, np.ndarray]], names: Sequence[str], *,
            image_ids: Sequence[int] | None = None,
            category_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """A COCO detection dict of Darknet labels (the exporter).

    Args:
        samples: ``(file_name, width, height, labels)`` per image, ``labels`` a
            ``(k, 5)`` array of ``class cx cy w h`` normalised (as
            ``runtime.dataset.read_labels`` returns).
        names: the class names; category ``i`` gets ``category_ids[i]`` (default
            ``i + 1``).
        image_ids: the id of each image (default ``1, 2, ...``; an import's
            ``import_report.json`` keeps the COCO ids it read).

    Returns:
        ``{"images", "annotations", "categories"}``; boxes ``[x, y, w, h]`` in pixels,
        ``area = w * h``, ``iscrowd = 0``, annotation ids ``1, 2, ...``.
    """
    cat_ids = list(category_ids) if category_ids is not None else \
        list(range(1, len(names) + 1))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for n, (name, width, height, labels) in enumerate(samples):
        image_id = int(image_ids[n]) if image_ids is not None else n + 1
        images.append({"id": image_id, "file_name": name, "width": int(width),
                       "height": int(height)})
        for cls, cx, cy, w, h in np.asarray(labels, np.float64).reshape(-1, 5):
            bw, bh = w * width, h * height
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": cat_ids[int(cls)],
                "bbox": [cx * width - bw / 2, cy * height - bh / 2, bw, bh],
                "area": bw * bh, "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in zip(cat_ids, names)]}


def _list(data: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise AnnotationError(f"{key} is {type(value).__name__}: expected a list",
                              path=path, where=key)
    return value


def _categories(entries: list[Any], path: Path) -> tuple[tuple[str, ...], dict[int, int]]:
    """The names in id order and each id's label index."""
    found: dict[int, str] = {}
    for i, entry in enumerate(entries):
        where = f"categories[{i}]"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{type(entry).__name__}: expected an object",
                                  path=path, where=where)
        cat_id = _int(entry, "id", path, where)
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or "\n" in name:
            raise AnnotationError(f"name {name!r}: expected a one-line class name",
                                  path=path, where=where)
        if cat_id in found or name in found.values():
            raise AnnotationError(f"id {cat_id} name {name!r}: given twice: expected "
                                  "unique ids and names", path=path, where=where)
        found[cat_id] = name
    if not found:
        raise AnnotationError("no categories: expected at least one", path=path,
                              where="categories")
    order = sorted(found)
    return tuple(found[i] for i in order), {cat_id: k for k, cat_id in enumerate(order)}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _int(entry: dict[str, Any], key: str, path: Path, where: str, positive: bool = False) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or (positive and value < 1):
        expected = "a positive integer" if positive else "an integer"
        raise AnnotationError(f"{key} {value!r}: expected {expected}", path=path,
                              where=where)
    return value
