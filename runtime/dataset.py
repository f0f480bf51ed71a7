"""Darknet-format detection datasets: ``.data`` files, list files and YOLO labels.

A Darknet dataset is a ``.data`` file (``classes=``, ``train=``, ``valid=``, ``names=``)
naming list files of image paths; each image's labels live at the path given by the
images→labels rule (`label_path`), one ``class cx cy w h`` line per object, normalised
to [0, 1]. A missing label file means an image without objects, as in Darknet.

Relative paths are looked up beside the file that names them first, then beside the
``.data`` file, then in the working directory (Darknet's only rule), so a dataset
written with paths relative to its own folder works from anywhere. Batching is
`runtime.batches`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class DataError(ValueError):
    """A dataset that cannot be read: the message starts with ``file:line:``.

    ``labels/train/000003.txt:2: class 7 >= classes=3 (synth.data)``
    """

    def __init__(self, message: str, *, path: str | os.PathLike = "<data>",
                 line: int = 0) -> None:
        where = f"{path}:{line}:" if line else f"{path}:"
        super().__init__(f"{where} {message}")
        self.path = str(path)
        self.line = line
        self.reason = message


# --------------------------------------------------------------------------- config

@dataclass(frozen=True, slots=True)
class DataConfig:
    """A parsed ``.data`` file; list paths resolved (None when the key is absent)."""

    path: Path
    classes: int
    train: Path | None
    valid: Path | None
    names: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()


def _resolve(value: str, *bases: Path) -> Path | None:
    """The first existing ``base / value`` (or ``value`` itself when absolute)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.exists() else None
    for base in (*bases, Path.cwd()):
        candidate = base / path
        if candidate.exists():
            return candidate
    return None


def read_data_config(path: str | os.PathLike) -> DataConfig:
    """Parse a Darknet ``.data`` file.

    Raises:
        DataError: unreadable file, a line without ``=``, ``classes`` missing or not a
            positive integer, a ``train``/``valid``/``names`` file that does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"cannot read .data file: {exc.strerror}", path=path) from exc
    options: list[tuple[str, str, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if "=" not in line:
            raise DataError(f"expected key=value, found {line!r}", path=path, line=number)
        key, value = (s.strip() for s in line.split("=", 1))
        options.append((key, value, number))
    first: dict[str, tuple[str, int]] = {}
    for key, value, number in options:
        first.setdefault(key, (value, number))
    if "classes" not in first:
        raise DataError("missing classes=: expected the number of classes", path=path)
    value, number = first["classes"]
    try:
        classes = int(value)
    except ValueError:
        classes = 0
    if classes < 1:
        raise DataError(f"classes={value}: expected a positive integer", path=path,
                        line=number)

    def file_option(key: str) -> Path | None:
        if key not in first:
            return None
        value, number = first[key]
        found = _resolve(value, path.parent)
        if found is None:
            raise DataError(f"{key}={value}: file not found (looked beside {path.name} "
                            f"and in {Path.cwd()})", path=path, line=number)
        return found

    train, valid, names_path = file_option("train"), file_option("valid"), \
        file_option("names")
    if names_path is not None:
        names = tuple(n.strip() for n in names_path.read_text().splitlines() if n.strip())
    else:
        names = tuple(str(i) for i in range(classes))
    if len(names) < classes:
        names = names + tuple(str(i) for i in range(len(names), classes))
    return DataConfig(path=path, classes=classes, train=train, valid=valid,
                      names=names[:classes], options=tuple((k, v) for k, v, _ in options))


def label_path(image_path: str | os.PathLike) -> Path:
    """Darknet's images→labels rule: ``/images/`` and ``/JPEGImages/`` become
    ``/labels/``, the image extension becomes ``.txt``."""
    text = str(image_path)
    for folder in ("images", "JPEGImages"):
        text = text.replace(f"{os.sep}{folder}{os.sep}", f"{os.sep}labels{os.sep}")
        if text.startswith(f"{folder}{os.sep}"):
            text = f"labels{os.sep}" + text[len(folder) + 1:]
    stem, ext = os.path.splitext(text)
    if ext.lower() in _IMAGE_EXTENSIONS:
        text = stem
    return Path(text + ".txt")


def read_labels(path: str | os.PathLike, classes: int,
                source: str = "") -> np.ndarray:
    """A YOLO label file as a ``(k, 5)`` float32 array; ``(0, 5)`` when it is missing.

    Raises:
        DataError: naming the file and line of a malformed row, a class id outside
            ``[0, classes)`` or a coordinate outside [0, 1] (or a zero-size box).
    """
    path = Path(path)
    if not path.exists():
        return np.zeros((0, 5), np.float32)
    rows = []
    of = f" ({source})" if source else ""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DataError(f"{raw.strip()!r}: expected 5 fields 'class cx cy w h', "
                            f"found {len(fields)}", path=path, line=number)
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"{raw.strip()!r}: expected numbers", path=path,
                            line=number) from None
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < classes:
            raise DataError(f"class {fields[0]} out of range: expected 0 <= class < "
                            f"classes={classes}{of}", path=path, line=number)
        for name, v in zip(("cx", "cy", "w", "h"), values[1:]):
            if not -1e-6 <= v <= 1 + 1e-6 or (name in ("w", "h") and v <= 0):
                expected = "(0, 1]" if name in ("w", "h") else "[0, 1]"
                raise DataError(f"{name}={fields[('cx', 'cy', 'w', 'h').index(name) + 1]}"
                                f" out of range: expected {expected} (normalised)",
                                path=path, line=number)
        rows.append(values)
    return np.asarray(rows, np.float32).reshape(-1, 5)


# -------------------------------------------------------------------------- dataset

@dataclass(frozen=True, slots=True, eq=False)
class Sample:
    image: Path
    labels: np.ndarray  # (k, 5) class cx cy w h, normalised to the original image


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    """The samples of one list file; ``skipped`` holds a message per bad entry left out
    (only with ``skip_bad=True``)."""

    samples: tuple[Sample, ...]
    classes: int
    names: tuple[str, ...]
    source: Path | None = None
    skipped: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def max_boxes(self) -> int:
        return max((len(s.labels) for s in self.samples), default=0)


def read_list(list_path: str | os.PathLike, classes: int, *,
              names: tuple[str, ...] | None = None, data_dir: Path | None = None,
              skip_bad: bool = False) -> Dataset:
    """The dataset of a list file (one image path per line) and its labels.

    Raises:
        DataError: at the first missing image (list file and line) or bad label
            (label file and line), unless ``skip_bad``: then that image is left out
            and its message kept in ``Dataset.skipped``.
    """
    list_path = Path(list_path)
    try:
        lines = list_path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read list file: {exc.strerror}", path=list_path) from exc
    bases = tuple(b for b in (list_path.parent, data_dir) if b is not None)
    samples, skipped = [], []
    for number, raw in enumerate(lines, start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            image = _resolve(entry, *bases)
            if image is None:
                raise DataError(f"image not found: {entry} (looked beside "
                                f"{list_path.name} and in {Path.cwd()})",
                                path=list_path, line=number)
            labels = read_labels(label_path(image), classes, source=list_path.name)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
            continue
        samples.append(Sample(image=image, labels=labels))
    names = names or tuple(str(i) for i in range(classes))
    return Dataset(samples=tuple(samples), classes=classes, names=names,
                   source=list_path, skipped=tuple(skipped))


def load_dataset(data: str | os.PathLike | DataConfig, split: str = "train", *,
                 skip_bad: bool = False) -> Dataset:
    """The ``split`` ("train" or "valid") of a ``.data`` file."""
    config = data if isinstance(data, DataConfig) else read_data_config(data)
    if split not in ("train", "valid"):
        raise ValueError(f"split={split!r}: expected 'train' or 'valid'")
    list_path = getattr(config, split)
    if list_path is None:
        raise DataError(f"no {split}= entry: expected a list file of images",
                        path=config.path)
    return read_list(list_path, config.classes, names=config.names,
                     data_dir=config.path.parent, skip_bad=skip_bad)
