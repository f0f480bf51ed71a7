"""What ``darkslim detect`` writes: class names, drawn images, the detections JSON.

Library code: returns data and writes files (atomically), never prints.
"""

from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import frontends

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2",
                  ".pbm", ".pgm", ".ppm")


class DetectInputError(ValueError):
    """An input of ``darkslim detect`` that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageResult:
    """One image's detections, as ``darkslim detect`` reports them."""

    image: str
    width: int
    height: int
    output: str
    detections: tuple  # of runtime.detect.Detected


def read_names(path: str | os.PathLike, classes: int) -> tuple[str, ...]:
    """Class names, one a line (Darknet's ``.names``), blank lines at the end dropped.

    Raises:
        DetectInputError: unreadable file, or fewer names than the network's classes.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DetectInputError(f"{path}: cannot read class names: {why}") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if len(names) < classes:
        raise DetectInputError(f"{path}: {len(names)} class names: expected {classes} "
                               "(the classes= of the network's detection layers), one a "
                               "line")
    return tuple(names)


def default_names(cfg: str | os.PathLike) -> Path | None:
    """A ``.names`` file beside the cfg: ``<stem>.names``, else the only one there."""
    cfg = Path(cfg)
    same = cfg.with_suffix(".names")
    if same.is_file():
        return same
    found = sorted(cfg.parent.glob("*.names"))
    return found[0] if len(found) == 1 else None


def list_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders' images (by
    suffix, sorted, not recursive).

    Raises:
        DetectInputError: a path that does not exist, or a folder without images.
    """
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DetectInputError(f"{item}: no images in this folder (expected files "
                                       f"ending in {', '.join(IMAGE_SUFFIXES[:5])}, ...)")
            images += found
        elif item.is_file():
            images.append(item)
        else:
            raise DetectInputError(f"{item}: no such image file or folder")
    return images


def output_names(images: Sequence[Path]) -> list[str]:
    """A distinct file name for each drawn image: the image's own name, with ``_2``,
    ``_3``, ... when two inputs share one; an unusual suffix becomes ``.png``."""
    seen: set[str] = set()
    names = []
    for image in images:
        suffix = image.suffix.lower() if image.suffix.lower() in (
            ".jpg", ".jpeg", ".png", ".bmp") else ".png"
        name, k = image.stem + suffix, 1
        while name.lower() in seen:
            k += 1
            name = f"{image.stem}_{k}{suffix}"
        seen.add(name.lower())
        names.append(name)
    return names


def class_color(class_id: int) -> tuple[int, int, int]:
    """A bright BGR colour per class, stable across runs (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image_rgb: np.ndarray, detections, names: Sequence[str]) -> np.ndarray:
    """A BGR copy of the image with each box and its label drawn (boxes clipped to
    the image for drawing only). A box reported for several classes is drawn once,
    labelled ``car 0.71, truck 0.41`` in its best class's colour, as Darknet does."""
    import cv2

    canvas = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    h, w = canvas.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    scale = max(0.4, min(h, w) / 900)
    boxes: dict[tuple[float, float, float, float], list] = {}
    for d in sorted(detections, key=lambda d: -d.score):
        boxes.setdefault((d.x1, d.y1, d.x2, d.y2), []).append(d)
    for (bx1, by1, bx2, by2), same in reversed(list(boxes.items())):  # best on top
        color = class_color(same[0].class_id)
        x1, y1 = int(np.clip(round(bx1), 0, w - 1)), int(np.clip(round(by1), 0, h - 1))
        x2, y2 = int(np.clip(round(bx2), 0, w - 1)), int(np.clip(round(by2), 0, h - 1))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        label = ", ".join(f"{names[d.class_id]} {d.score:.2f}" for d in same)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(canvas, label, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def write_image(path: str | os.PathLike, image_bgr: np.ndarray) -> None:
    """Encode by the path's suffix and write atomically."""
    import cv2

    ok, data = cv2.imencode(Path(path).suffix or ".png", image_bgr)
    if not ok:
        raise DetectInputError(f"{path}: OpenCV cannot encode an image with this suffix")
    frontends.write_atomic(path, data.tobytes())


def detections_record(results: Sequence[ImageResult], names: Sequence[str],
                      settings: dict) -> dict:
    """The JSON document: ``settings``, ``images`` and a flat ``detections`` list of
    ``image, class, name, score, x1, y1, x2, y2`` (original pixels, not clipped)."""
    rows = [{"image": r.image, "class": d.class_id, "name": names[d.class_id],
             "score": round(d.score, 6), "x1": round(d.x1, 3), "y1": round(d.y1, 3),
             "x2": round(d.x2, 3), "y2": round(d.y2, 3)}
            for r in results for d in r.detections]
    images = [{"image": r.image, "width": r.width, "height": r.height,
               "output": r.output, "boxes": len(r.detections)} for r in results]
    return {"settings": settings, "images": images, "detections": rows}


def write_json(path: str | os.PathLike, record: dict) -> None:
    frontends.write_atomic(path, json.dumps(record, indent=1) + "\n")
