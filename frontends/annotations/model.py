"""What every importer returns: frozen images with their size and boxes in pixels.

Coordinates are continuous pixel coordinates with the origin at the top-left corner of
the image and ``x1``/``y1`` the far edges: a box covering the whole W x H image is
``(0, 0, W, H)``. COCO boxes are in these coordinates already; YOLO labels are these
divided by the image size; VOC's 1-based pixel indices are converted the way Darknet's
``scripts/voc_label.py`` does (`frontends.annotations.voc`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from frontends.annotations.errors import AnnotationError, Problem


@dataclass(frozen=True, slots=True)
class Box:
    """One object: its class name and its corners in pixels (see the module doc)."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    # Where the box came from, for messages ("object 2", "annotations[17]").
    where: str = field(default="", compare=False)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@dataclass(frozen=True, slots=True)
class LabeledImage:
    """One image of an annotation set.

    ``name`` is its path inside the written dataset's ``images/`` folder (a file name,
    or ``train/x.jpg`` for a YOLO set whose splits are folders); ``source`` the
    annotation file it was read from; ``image_id`` the COCO id when there is one;
    ``split`` the source's own split (``"train"``/``"valid"``) when it has one.
    """

    path: Path
    name: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    source: str
    image_id: int | None = None
    split: str | None = None


@dataclass(frozen=True, slots=True)
class Annotations:
    """An annotation set as read.

    ``names`` are the classes in label order; ``category_ids`` their COCO ids (COCO
    only). ``problems`` lists the bad inputs left out or clipped (only with
    ``skip_bad``/``clip``); ``left_out`` counts what was left out on purpose, not for
    being bad (VOC ``difficult`` objects, COCO crowd regions, classes not picked), as
    ``(what, count)`` pairs; ``notes`` the same for what was done that is not an error
    (sizes read from the image because the XML had none).
    """

    images: tuple[LabeledImage, ...]
    names: tuple[str, ...]
    problems: tuple[Problem, ...] = ()
    left_out: tuple[tuple[str, int], ...] = ()
    notes: tuple[tuple[str, int], ...] = ()
    category_ids: tuple[int, ...] | None = None


def check_box(box: Box, width: int, height: int, *, path: str, clip: bool = False,
              tolerance: float = 0.0) -> tuple[Box, Problem | None]:
    """``box`` if it lies inside the ``width`` x ``height`` image with a positive area.

    A corner within ``tolerance`` pixels outside the image (float noise of the tool that
    wrote it) is put on the edge. With ``clip``, a box partly outside is cut to the
    image and the returned `Problem` says so.

    Raises:
        AnnotationError: a box of zero (or negative) area, a box outside the image
            (without ``clip``), or wholly outside (with it).
    """
    if not box.x0 < box.x1 or not box.y0 < box.y1:
        raise AnnotationError(
            f"box {_corners(box)} has zero area: expected x0 < x1 and y0 < y1",
            path=path, where=box.where)
    x0, y0 = _snap(box.x0, 0, tolerance), _snap(box.y0, 0, tolerance)
    x1, y1 = _snap(box.x1, width, tolerance), _snap(box.y1, height, tolerance)
    inside = 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height
    snapped = Box(box.name, x0, y0, x1, y1, box.where)
    if inside:
        return snapped, None
    error = AnnotationError(
        f"box {_corners(box)} outside the {width}x{height} image: expected "
        f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (pixels)",
        path=path, where=box.where)
    cut = Box(box.name, max(x0, 0.0), max(y0, 0.0), min(x1, float(width)),
              min(y1, float(height)), box.where)
    if not clip or not (cut.x0 < cut.x1 and cut.y0 < cut.y1):
        raise error
    return cut, Problem.of(error, f"box clipped to {_corners(cut)}")


def _snap(value: float, edge: float, tolerance: float) -> float:
    return float(edge) if abs(value - edge) <= tolerance else float(value)


def _corners(box: Box) -> str:
    return "(" + ", ".join(f"{v:g}" for v in (box.x0, box.y0, box.x1, box.y1)) + ")"
