"""Pascal VOC XML annotations (VOCdevkit, LabelImg, the raccoon set).

One XML per image::

    <annotation><filename>raccoon-1.jpg</filename>
      <size><width>650</width><height>417</height></size>
      <object><name>raccoon</name><difficult>0</difficult>
        <bndbox><xmin>81</xmin><ymin>88</ymin><xmax>522</xmax><ymax>408</ymax></bndbox>
      </object></annotation>

VOC coordinates are 1-based pixel indices. Darknet's ``scripts/voc_label.py`` turns
them into a label as ``cx = ((xmin + xmax) / 2 - 1) / W``, ``w = (xmax - xmin) / W``
(and the same for y): the box runs from ``xmin - 1`` to ``xmax - 1`` in the continuous
pixel coordinates of `frontends.annotations.model`, which is what this reader returns,
so the written labels are exactly voc_label.py's. A box is inside its image when
``0 <= xmin - 1 < xmax - 1 <= W`` (and the same for y): a 0-based ``xmin=0``, which
some tools write, is outside and needs ``clip`` (which says so). Objects marked
``difficult`` are left out as voc_label.py does (counted in `Annotations.left_out`)
unless ``keep_difficult``.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from frontends.annotations.errors import AnnotationError, Problem
from frontends.annotations.images import IMAGE_EXTENSIONS, image_size
from frontends.annotations.model import Annotations, Box, LabeledImage, check_box


def read_voc(src: str | os.PathLike[str], *, images: str | os.PathLike[str] | None = None,
             keep_difficult: bool = False, skip_bad: bool = False,
             clip: bool = False) -> Annotations:
    """Every ``*.xml`` under ``src`` (recursively) as an annotation set.

    Each image is found by its XML's ``<filename>``: in ``images`` when given, else
    next to the XML, else in a sibling ``images/`` or ``JPEGImages/`` folder of the
    XML's folder (raccoon: ``annotations/`` + ``images/``; VOCdevkit: ``Annotations/``
    + ``JPEGImages/``). Without ``<size>`` (or with a zero size) the size is read from
    the image (counted in `Annotations.notes`); with one, it must match the image's.
    Class names are those found, sorted.

    Args:
        skip_bad: leave out each image whose XML is bad and list it in
            `Annotations.problems`, instead of raising.
        clip: cut boxes partly outside the image to it (each listed in ``problems``).

    Raises:
        AnnotationError: naming the XML and element: unparsable XML, a missing or
            unreadable image, a size that disagrees with the image, a box outside the
            image or of zero area, a missing or non-numeric coordinate, two XMLs naming
            the same image file; or ``src`` without XML files.
    """
    src = Path(src)
    if not src.is_dir():
        raise AnnotationError("expected a folder holding VOC .xml files", path=src)
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())
    if not files:
        raise AnnotationError("no .xml files found (searched recursively)", path=src)
    if images is not None and not Path(images).is_dir():
        raise AnnotationError(f"--images {images}: not a folder: expected the folder "
                              "of the images the XMLs name", path=src)
    found, problems = [], []
    difficult = from_image = 0
    seen: dict[str, Path] = {}
    for xml in files:
        try:
            image, n_difficult, sized, clipped = _read_one(
                xml, images=Path(images) if images else None,
                keep_difficult=keep_difficult, clip=clip)
            if image.name in seen:
                raise AnnotationError(
                    f"<filename> {image.name}: two images with the same name (also in "
                    f"{seen[image.name]}): expected one XML per image", path=xml,
                    where="<filename>")
        except AnnotationError as exc:
            if not skip_bad:
                raise
            problems.append(Problem.of(exc, "image left out"))
            continue
        seen[image.name] = xml
        found.append(image)
        problems += clipped
        difficult += n_difficult
        from_image += not sized
    names = tuple(sorted({b.name for im in found for b in im.boxes}))
    return Annotations(
        images=tuple(found), names=names, problems=tuple(problems),
        left_out=(("difficult objects", difficult),) if difficult else (),
        notes=(("sizes read from the image (no <size> in the XML)", from_image),)
        if from_image else ())


def _read_one(xml: Path, *, images: Path | None, keep_difficult: bool, clip: bool
              ) -> tuple[LabeledImage, int, bool, list[Problem]]:
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"not well-formed XML: {exc}", path=xml) from None
    except (OSError, ValueError, LookupError) as exc:  # unreadable, a bad encoding
        raise AnnotationError(f"cannot read: {exc}", path=xml) from None
    if root.tag != "annotation":
        raise AnnotationError(f"root element <{root.tag}>: expected <annotation>",
                              path=xml)
    path = _find_image(xml, _text(root, "filename"), images)
    width, height = image_size(path, source=xml, where="<filename>")
    size = root.find("size")
    sized = False
    # A <size> without width or height, or with a zero (some tools write
    # <width>0</width>) is no size: the image's own is used, and counted.
    if size is not None and all(_text(size, k) not in ("", "0", "0.0")
                                for k in ("width", "height")):
        w, h = (_number(size, k, xml, "<size>") for k in ("width", "height"))
        if (w, h) != (width, height):
            raise AnnotationError(
                f"size {w:g}x{h:g} but the image {path.name} is {width}x{height} "
                "(as OpenCV reads it, EXIF orientation applied): expected the same",
                path=xml, where="<size>")
        sized = True
    boxes, clipped, difficult = [], [], 0
    for i, obj in enumerate(root.iter("object"), start=1):
        where = f"object {i}"
        name = _text(obj, "name")
        if not name:
            raise AnnotationError("no <name>: expected the class name", path=xml,
                                  where=where)
        if not keep_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            difficult += 1
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise AnnotationError("no <bndbox>: expected xmin, ymin, xmax, ymax",
                                  path=xml, where=where)
        xmin, ymin, xmax, ymax = (_number(bnd, k, xml, f"{where} <bndbox>")
                                  for k in ("xmin", "ymin", "xmax", "ymax"))
        raw = Box(name, xmin - 1, ymin - 1, xmax - 1, ymax - 1,
                  where=f"{where} <bndbox> xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} "
                        f"ymax={ymax:g} (1-based)")
        box, problem = check_box(raw, width, height, path=str(xml), clip=clip)
        boxes.append(box)
        if problem is not None:
            clipped.append(problem)
    image = LabeledImage(path=path, name=path.name, width=width, height=height,
                         boxes=tuple(boxes), source=str(xml))
    return image, difficult, sized, clipped


def _find_image(xml: Path, filename: str, images: Path | None) -> Path:
    folders = [images] if images is not None else \
        [xml.parent, xml.parent.parent / "images", xml.parent.parent / "JPEGImages"]
    names = [Path(filename).name] if filename else []
    if not Path(filename).suffix:  # "<filename>000005</filename>" or none: the XML's stem
        names += [(Path(filename).name or xml.stem) + e for e in IMAGE_EXTENSIONS]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise AnnotationError(
        f"image {filename or xml.stem + '.*'} not found in "
        + ", ".join(str(f) for f in folders)
        + ("" if images is not None else " (pass --images DIR)"),
        path=xml, where="<filename>")


def _text(element: ET.Element, tag: str) -> str:
    return (element.findtext(tag) or "").strip()


def _number(element: ET.Element, tag: str, xml: Path, where: str) -> float:
    text = _text(element, tag)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise AnnotationError(f"<{tag}>{text}</{tag}>: expected a number", path=xml,
                              where=where)
    return value
