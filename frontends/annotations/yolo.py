"""ultralytics YOLO datasets: ``data.yaml`` + ``images/`` + ``labels/``.

::

    data.yaml:  path: .   train: images/train   val: images/val   names: {0: a, 1: b}
    images/train/x.jpg    labels/train/x.txt   ("class cx cy w h" normalised per line)

``train``/``val`` may each be a folder of images (searched recursively), a ``.txt``
list of image paths, or a list of either; ``path`` (default: the yaml's folder) is the
root they are relative to. An image's label file is ultralytics' rule: the last
``/images/`` of its path becomes ``/labels/``, the extension ``.txt``; a missing label
file is an image without objects (counted in `Annotations.notes`). A polygon line
(``class x1 y1 x2 y2 ...``, ultralytics' segment labels) becomes its bounding box
(counted). Boxes are returned in pixels of the image, whose size is read from its
header; a coordinate within 1e-6 of the image border (normalised) is put on it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from frontends.annotations.errors import AnnotationError, Problem
from frontends.annotations.images import IMAGE_EXTENSIONS, image_size
from frontends.annotations.model import Annotations, Box, LabeledImage, check_box

_SPLITS = (("train", "train"), ("val", "valid"))


def read_yolo(src: str | os.PathLike[str], *, skip_bad: bool = False,
              clip: bool = False) -> Annotations:
    """An ultralytics dataset (its ``data.yaml``, or the folder holding it).

    The images keep the source's split (`LabeledImage.split`: ``train``, or
    ``valid`` for ``val``); ``test`` is not read. Each image's ``name`` is its path
    after the last ``images/`` folder (``train/x.jpg``).

    Args:
        skip_bad: leave out each image with a bad label file and list it in
            `Annotations.problems`, instead of raising.
        clip: cut boxes partly outside the image to it (each listed).

    Raises:
        AnnotationError: naming the file (and line): unreadable YAML, missing or
            ill-typed ``names``/``train``, ``nc`` that disagrees with ``names``, a
            split path that does not exist, a label line that is not 5 numbers (or a
            polygon), a class not in the names, a box outside its image or of zero
            area, a missing or unreadable image, two images with the same name.
    """
    import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the lint pins

    src = Path(src)
    path = src / "data.yaml" if src.is_dir() else src
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as exc:
        raise AnnotationError(f"cannot read YAML: {exc}", path=path) from None
    if not isinstance(config, dict):
        raise AnnotationError(f"top level is {type(config).__name__}: expected a mapping "
                              "with train, val and names", path=path)
    names = _names(config, path)
    root = _root(config, path)
    found, problems = [], []
    seen: dict[str, str] = {}
    background = segments = 0
    for key, split in _SPLITS:
        for image_path in _split_images(config, key, root, path):
            label = _label_path(image_path)
            name = _name(image_path, root)
            try:
                if name in seen:
                    raise AnnotationError(
                        f"image {image_path}: two images with the same name {name} (also "
                        f"in {seen[name]}): expected each image in one split",
                        path=label, where="")
                width, height = image_size(image_path, source=label)
                boxes, n_segments, clipped = _read_label(label, names, width, height, clip)
            except AnnotationError as exc:
                if not skip_bad:
                    raise
                problems.append(Problem.of(exc, "image left out"))
                continue
            seen[name] = key
            background += boxes is None
            segments += n_segments
            problems += clipped
            found.append(LabeledImage(path=image_path, name=name, width=width,
                                      height=height, boxes=tuple(boxes or ()),
                                      source=str(label), split=split))
    notes = tuple((what, n) for what, n in (
        ("images without a label file (no objects)", background),
        ("polygons (segment labels) read as their bounding box", segments)) if n)
    return Annotations(images=tuple(found), names=names, problems=tuple(problems),
                       notes=notes)


def _names(config: dict[str, Any], path: Path) -> tuple[str, ...]:
    raw = config.get("names")
    if isinstance(raw, dict) and all(isinstance(k, int) for k in raw) and raw:
        if sorted(raw) != list(range(len(raw))):
            raise AnnotationError(f"names keys {sorted(raw)}: expected 0..{len(raw) - 1}",
                                  path=path, where="names")
        raw = [raw[k] for k in range(len(raw))]
    if not isinstance(raw, list) or not raw or not all(
            isinstance(n, (str, int)) and str(n).strip() and "\n" not in str(n)
            for n in raw):
        raise AnnotationError(f"names {raw!r}: expected a list of class names or a "
                              "mapping {0: name, ...}", path=path, where="names")
    names = tuple(str(n).strip() for n in raw)
    if len(set(names)) != len(names):
        raise AnnotationError(f"names {list(names)}: a name given twice: expected "
                              "distinct names", path=path, where="names")
    nc = config.get("nc", len(names))
    if nc != len(names):
        raise AnnotationError(f"nc {nc!r} but {len(names)} names: expected the same",
                              path=path, where="nc")
    return names


def _root(config: dict[str, Any], path: Path) -> Path:
    base = config.get("path")
    if base is None:
        return path.parent
    if not isinstance(base, str):
        raise AnnotationError(f"path {base!r}: expected a folder", path=path, where="path")
    root = Path(base).expanduser()
    root = root if root.is_absolute() else path.parent / root
    # A yaml copied with its dataset often keeps the path of the machine it was made
    # on: then the yaml's own folder is the root.
    return root if root.is_dir() else path.parent


def _split_images(config: dict[str, Any], key: str, root: Path, path: Path) -> list[Path]:
    value = config.get(key)
    if value is None:
        if key == "train":
            raise AnnotationError("no train: expected a folder or list of images",
                                  path=path, where=key)
        return []
    entries = value if isinstance(value, list) else [value]
    images: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise AnnotationError(f"{entry!r}: expected a folder or a .txt list of "
                                  "images", path=path, where=key)
        target = Path(entry).expanduser()
        target = target if target.is_absolute() else root / target
        if target.is_dir():
            images += sorted(p for p in target.rglob("*")
                             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif target.is_file():
            images += _list_file(target)
        else:
            raise AnnotationError(f"{entry}: {target} does not exist: expected a folder "
                                  "or a .txt list of images", path=path, where=key)
    return images


def _list_file(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"cannot read image list: {exc}", path=path) from None
    out = []
    for line in lines:
        entry = line.strip()
        if entry:
            p = Path(entry)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def _label_path(image: Path) -> Path:
    """ultralytics' img2label_paths: the last /images/ becomes /labels/."""
    text = str(image)
    marker, label = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if marker in text:
        head, tail = text.rsplit(marker, 1)
        text = head + label + tail
    return Path(text).with_suffix(".txt")


def _name(image: Path, root: Path) -> str:
    parts = image.parts
    if "images" in parts:
        last = len(parts) - 1 - parts[::-1].index("images")
        if last < len(parts) - 1:
            return "/".join(parts[last + 1:])
    try:
        return image.relative_to(root).as_posix()
    except ValueError:
        return image.name


def _read_label(label: Path, names: tuple[str, ...], width: int, height: int,
                clip: bool) -> tuple[list[Box] | None, int, list[Problem]]:
    """The boxes of one label file (None when there is none), polygons read, clips."""
    if not label.is_file():
        return None, 0, []
    try:
        text = label.read_text()
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"cannot read label file: {exc}", path=label) from None
    boxes, clipped, segments = [], [], 0
    tolerance = 1e-6 * max(width, height)
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        where = f"line {number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if not values or not all(math.isfinite(v) for v in values):
            raise AnnotationError(f"{raw.strip()!r}: expected numbers 'class cx cy w h'",
                                  path=label, where=where)
        if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
            raise AnnotationError(f"{raw.strip()!r}: {len(values)} fields: expected 5 "
                                  "'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 "
                                  "x3 y3 ...')", path=label, where=where)
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < len(names):
            raise AnnotationError(f"class {fields[0]} is not in the names: expected 0 <= "
                                  f"class < {len(names)}", path=label, where=where)
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            x0, x1 = (cx - w / 2) * width, (cx + w / 2) * width
            y0, y1 = (cy - h / 2) * height, (cy + h / 2) * height
        else:
            xs, ys = values[1::2], values[2::2]
            x0, x1 = min(xs) * width, max(xs) * width
            y0, y1 = min(ys) * height, max(ys) * height
            segments += 1
        box, problem = check_box(
            Box(names[int(cls)], x0, y0, x1, y1, where=f"{where} {raw.strip()!r}"),
            width, height, path=str(label), clip=clip, tolerance=tolerance)
        boxes.append(box)
        if problem is not None:
            clipped.append(problem)
    return boxes, segments, clipped
