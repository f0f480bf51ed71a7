"""Picking classes and splitting an annotation set into train and valid images."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frontends.annotations.errors import AnnotationError
from frontends.annotations.model import Annotations, LabeledImage


@dataclass(frozen=True, slots=True)
class Split:
    """The train and valid images, the images in neither list and the list entries
    of images that were left out as bad (``--split`` with ``--skip-bad``)."""

    train: tuple[LabeledImage, ...]
    valid: tuple[LabeledImage, ...]
    unlisted: tuple[LabeledImage, ...] = ()
    unmatched: tuple[str, ...] = ()


def select_classes(annotations: Annotations, classes: tuple[str, ...]) -> Annotations:
    """Keep the boxes of ``classes``, in that order; the others are counted in
    ``left_out`` (``"boxes of classes not picked: dog"``), never dropped silently.

    Raises:
        AnnotationError: a picked class that the set does not have (a typo), or a
            class picked twice.
    """
    if not classes:
        return annotations
    repeated = [c for c, n in Counter(classes).items() if n > 1]
    missing = [c for c in classes if c not in annotations.names]
    if repeated or missing:
        reason = (f"{', '.join(repeated)} picked twice" if repeated else
                  f"{', '.join(missing)} not a class of this set")
        raise AnnotationError(f"--classes {','.join(classes)}: {reason}: expected some "
                              f"of {', '.join(annotations.names)}",
                              path=_root(annotations))
    dropped = Counter(b.name for im in annotations.images for b in im.boxes
                      if b.name not in classes)
    images = tuple(dataclasses.replace(im, boxes=tuple(b for b in im.boxes
                                                        if b.name in classes))
                   for im in annotations.images)
    ids = None
    if annotations.category_ids is not None:
        ids = tuple(annotations.category_ids[annotations.names.index(c)] for c in classes)
    left = tuple((f"boxes of classes not picked: {name}", n)
                 for name, n in sorted(dropped.items()))
    return dataclasses.replace(annotations, images=images, names=tuple(classes),
                               category_ids=ids, left_out=annotations.left_out + left)


def split_by_fraction(images: tuple[LabeledImage, ...], fraction: float,
                      seed: int) -> Split:
    """``round(fraction * n)`` images (at least one when ``0 < fraction`` and n > 1)
    drawn for valid by a seeded permutation of the images sorted by name, so the
    same set, fraction and seed always give the same split."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--valid-fraction {fraction}: expected 0 <= F < 1")
    ordered = sorted(images, key=lambda im: im.name)
    n_valid = round(fraction * len(ordered))
    if fraction > 0 and len(ordered) > 1:
        n_valid = min(max(n_valid, 1), len(ordered) - 1)
    order = np.random.default_rng(seed).permutation(len(ordered))
    chosen = set(order[:n_valid].tolist())
    return Split(train=tuple(im for i, im in enumerate(ordered) if i not in chosen),
                 valid=tuple(im for i, im in enumerate(ordered) if i in chosen))


def split_by_source(images: tuple[LabeledImage, ...]) -> Split:
    """The source's own split (`LabeledImage.split`, e.g. a YOLO set's train/val)."""
    return Split(train=tuple(im for im in images if im.split == "train"),
                 valid=tuple(im for im in images if im.split == "valid"),
                 unlisted=tuple(im for im in images if im.split not in ("train", "valid")))


def split_by_lists(images: tuple[LabeledImage, ...], train_list: str | os.PathLike[str],
                   valid_list: str | os.PathLike[str], *, lenient: bool = False) -> Split:
    """The split two lists give: text files of one image per line (a path, a file name,
    or a VOC ImageSets id without extension) or CSV files with a ``filename`` column
    (one row per box, as the raccoon set ships). An entry matches the image whose name,
    file name or stem it equals (or ends with, for a path).

    Images in neither list are returned in ``Split.unlisted``.

    Args:
        lenient: entries that match no image are not errors but returned in
            ``Split.unmatched`` (``file:line: entry``): for a set whose bad images
            were left out (``skip_bad``).

    Raises:
        AnnotationError: naming the list file and line: an entry that matches no
            image, or matches more than one; an image in both lists.
    """
    index: dict[str, list[LabeledImage]] = {}
    for im in images:
        for key in {im.name, Path(im.name).name, Path(im.name).stem}:
            index.setdefault(key, []).append(im)
    chosen: dict[str, tuple[str, Path, int]] = {}
    unmatched: list[str] = []
    parts: dict[str, list[LabeledImage]] = {"train": [], "valid": []}
    for split, list_path in (("train", Path(train_list)), ("valid", Path(valid_list))):
        for line, entry in _entries(list_path):
            key = entry.replace("\\", "/")
            matches = index.get(key) or index.get(Path(key).name) or []
            if not matches and Path(key).stem in index and Path(key).suffix == "":
                matches = index[Path(key).stem]
            if not matches:
                if lenient:
                    unmatched.append(f"{list_path}:{line}: {entry}")
                    continue
                raise AnnotationError(f"{entry}: no imported image of that name",
                                      path=list_path, where=f"line {line}")
            if len(matches) > 1:
                raise AnnotationError(
                    f"{entry}: matches {len(matches)} images ("
                    + ", ".join(m.name for m in matches[:3]) + "): expected one",
                    path=list_path, where=f"line {line}")
            image = matches[0]
            if image.name in chosen:
                other, other_path, other_line = chosen[image.name]
                if other != split:
                    raise AnnotationError(
                        f"{entry}: image {image.name} is in both lists (also "
                        f"{other_path}:{other_line}): expected train and valid apart",
                        path=list_path, where=f"line {line}")
                continue  # one CSV row per box: the image again
            chosen[image.name] = (split, list_path, line)
            parts[split].append(image)
    unlisted = tuple(im for im in images if im.name not in chosen)
    return Split(train=tuple(parts["train"]), valid=tuple(parts["valid"]),
                 unlisted=unlisted, unmatched=tuple(dict.fromkeys(unmatched)))


def _entries(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"cannot read split list: {exc}", path=path) from None
    lines = text.splitlines()
    first = lines[0] if lines else ""
    if path.suffix.lower() == ".csv" or "filename" in first.split(","):
        rows = list(csv.reader(io.StringIO(text)))
        header = [h.strip() for h in rows[0]] if rows else []
        if "filename" not in header:
            raise AnnotationError(f"CSV header {','.join(header)!r}: expected a "
                                  "'filename' column", path=path, where="line 1")
        col = header.index("filename")
        return [(i, row[col].strip()) for i, row in enumerate(rows[1:], start=2)
                if len(row) > col and row[col].strip()]
    return [(i, raw.strip()) for i, raw in enumerate(lines, start=1)
            if raw.strip() and not raw.strip().startswith("#")]


def _root(annotations: Annotations) -> str:
    return str(Path(annotations.images[0].source).parent) if annotations.images \
        else "<annotations>"
