"""Write an annotation set as a Darknet dataset that ``darkslim train``/``eval`` read.

Layout (all paths in the list and ``.data`` files relative to ``OUT``, so the folder can
be moved)::

    OUT/NAME.data  OUT/NAME.names  OUT/train.txt  OUT/valid.txt  OUT/import_report.json
    OUT/images/<name>            linked (hard link, else copy; or symlink) never re-encoded
    OUT/labels/<stem>.txt        "class cx cy w h", normalised, one line per box

The label file of each image is where the runtime's images->labels rule
(``runtime.dataset.label_path``, passed in as ``label_path``: frontends do not import
the runtime) looks for it. Everything is written into a temporary folder beside
``OUT`` that is renamed to ``OUT`` at the end, so a failed import leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frontends.annotations.errors import AnnotationError
from frontends.annotations.model import Annotations, Box, LabeledImage
from frontends.annotations.split import Split
from frontends.annotations.stats import SplitStats, split_stats

LINKS = ("hard", "sym", "copy")


@dataclass(frozen=True, slots=True)
class WrittenDataset:
    """Paths of a written dataset, what each split holds and how the images got
    there (``linked``: "hard", "sym" or "copy"; "hard+copy" when some hard links
    crossed a file system and were copies)."""

    root: Path
    data: Path
    names: Path
    train: Path
    valid: Path
    report: Path
    train_stats: SplitStats
    valid_stats: SplitStats
    linked: str


def check_out(out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """``out`` as an absolute path, if it may be written.

    Raises:
        FileExistsError: ``out`` exists and is not an empty folder, without ``force``.
    """
    out = Path(out).absolute()
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder: expected a new "
                              "output folder (or --force to replace it)")
    return out


def label_line(image: LabeledImage, cls: int, box: Box) -> str:
    """``class cx cy w h`` of ``box``, normalised by the image size."""
    w, h = image.width, image.height
    values = ((box.x0 + box.x1) / 2 / w, (box.y0 + box.y1) / 2 / h,
              (box.x1 - box.x0) / w, (box.y1 - box.y0) / h)
    return f"{cls} " + " ".join(f"{v:.8g}" for v in values)


def write_darknet_dataset(out: str | os.PathLike[str], split: Split, annotations: Annotations,
                          *, label_path: Callable[[Path], Path], name: str = "data",
                          link: str = "hard", force: bool = False,
                          report: dict[str, Any] | None = None) -> WrittenDataset:
    """Write ``split`` of ``annotations`` to ``out`` (see the module doc).

    Args:
        label_path: the images->labels rule of the reader (``runtime.dataset
            .label_path``), applied to each image's final path.
        link: ``"hard"`` (a copy where a hard link is impossible), ``"sym"``
            (absolute symlinks to the source) or ``"copy"``.
        force: replace an existing ``out``.
        report: extra entries for ``import_report.json`` (the command line).

    Raises:
        AnnotationError: two images that would share a file or label file, or a
            label path outside ``out`` (``out`` itself inside an ``images/`` folder).
        FileExistsError: see `check_out`.
    """
    if link not in LINKS:
        raise ValueError(f"link={link!r}: expected one of {LINKS}")
    out = check_out(out, force=force)
    images = split.train + split.valid
    labels = _label_files(out, images, label_path)
    index = {n: i for i, n in enumerate(annotations.names)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        used = set()
        for image, label in zip(images, labels):
            target = tmp / "images" / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            used.add(_place(image.path, target, link))
            (tmp / label).parent.mkdir(parents=True, exist_ok=True)
            (tmp / label).write_text("".join(label_line(image, index[b.name], b) + "\n"
                                             for b in image.boxes))
        for part, members in (("train", split.train), ("valid", split.valid)):
            (tmp / f"{part}.txt").write_text("".join(f"images/{im.name}\n"
                                                     for im in members))
        (tmp / f"{name}.names").write_text("".join(f"{n}\n" for n in annotations.names))
        (tmp / f"{name}.data").write_text(
            f"classes={len(annotations.names)}\ntrain=train.txt\nvalid=valid.txt\n"
            f"names={name}.names\n")
        train_stats = split_stats(split.train, annotations.names)
        valid_stats = split_stats(split.valid, annotations.names)
        linked = "+".join(m for m in LINKS if m in used)
        payload = {
            **(report or {}),
            "names": list(annotations.names),
            "category_ids": list(annotations.category_ids)
            if annotations.category_ids is not None else None,
            "train": train_stats.as_dict(annotations.names),
            "valid": valid_stats.as_dict(annotations.names),
            "images_linked": linked,
            "left_out": dict(annotations.left_out),
            "notes": dict(annotations.notes),
            "problems": [{"file": p.path, "where": p.where, "reason": p.reason,
                          "action": p.action} for p in annotations.problems],
            "unlisted_images": [im.name for im in split.unlisted],
            "unmatched_list_entries": list(split.unmatched),
            "images": [{"name": im.name, "split": part, "source": im.source,
                        "image_id": im.image_id, "width": im.width, "height": im.height,
                        "boxes": len(im.boxes)}
                       for part, members in (("train", split.train),
                                             ("valid", split.valid))
                       for im in members],
        }
        (tmp / "import_report.json").write_text(json.dumps(payload, indent=1) + "\n")
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return WrittenDataset(root=out, data=out / f"{name}.data", names=out / f"{name}.names",
                          train=out / "train.txt", valid=out / "valid.txt",
                          report=out / "import_report.json", train_stats=train_stats,
                          valid_stats=valid_stats, linked=linked)


def _label_files(out: Path, images: tuple[LabeledImage, ...],
                 label_path: Callable[[Path], Path]) -> list[Path]:
    """Each image's label file relative to ``out``, checked to be inside it and
    distinct (``x.jpg`` and ``x.png`` would share ``x.txt``)."""
    labels: list[Path] = []
    owner: dict[str, str] = {}
    for image in images:
        parts = Path(image.name).parts
        if not parts or Path(image.name).is_absolute() or ".." in parts:
            raise AnnotationError(f"image name {image.name!r}: expected a relative path "
                                  "without '..'", path=image.source)
        final = out / "images" / image.name
        label = Path(label_path(final))
        try:
            relative = label.relative_to(out)
        except ValueError:
            raise AnnotationError(
                f"image {image.name}: its label file would be {label}, outside {out} "
                "(the images->labels rule rewrites every /images/ folder of the path): "
                "expected an output folder that is not inside an images/ folder",
                path=image.source) from None
        key = (str(final), str(relative))
        for k in key:
            if k in owner:
                raise AnnotationError(
                    f"image {image.name}: two images with the same name: it and "
                    f"{owner[k]} would share {k}: expected distinct names",
                    path=image.source)
        owner.update((k, image.name) for k in key)
        labels.append(relative)
    return labels


def _place(source: Path, target: Path, link: str) -> str:
    if link == "sym":
        os.symlink(source.resolve(), target)
        return "sym"
    if link == "hard":
        try:
            os.link(source, target)
            return "hard"
        except OSError:  # another file system, or links not allowed there: a copy
            pass
    shutil.copyfile(source, target)
    return "copy"


def _replace_folder(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.replace(out, old / "old")
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / "old", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
