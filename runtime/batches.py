"""Batches of a `runtime.dataset.Dataset`: letterbox, augmentation, prefetch.

Batches are numpy: ``images`` ``(B, H, W, 3)`` float32 RGB in [0, 1], letterboxed to
the network size, and ``targets`` ``(B, M, 5)`` float32 rows ``class cx cy w h`` in
the letterboxed input (normalised), padded with class ``-1``. A batch is a function of
(seed, epoch, image index) only; ``rows=`` yields one process's rows of every batch
(multi-process training). `prefetch` runs any batch iterator on a background thread so
decoding overlaps the train step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from runtime.dataset import DataError, Dataset
from runtime.image import ImageError, letterbox, load_image

# ------------------------------------------------------------------------ batching

@dataclass(frozen=True, slots=True)
class Augment:
    """Light augmentation, Darknet/ultralytics style. Zero disables a term.

    Attributes:
        flip: probability of a horizontal flip.
        hue, saturation, value: HSV jitter (hue as a fraction of the circle,
            saturation/value as relative gains ±).
        scale: the letterboxed image is resized by a factor in ``1 ± scale``.
        translate: and shifted by up to ``± translate`` of the input side.
    """

    flip: float = 0.5
    hue: float = 0.015
    saturation: float = 0.5
    value: float = 0.3
    scale: float = 0.25
    translate: float = 0.1


NO_AUGMENT = Augment(flip=0.0, hue=0.0, saturation=0.0, value=0.0, scale=0.0,
                     translate=0.0)


class Batch(NamedTuple):
    """One batch, numpy.

    Attributes:
        images: ``(B, H, W, 3)`` float32 RGB in [0, 1].
        targets: ``(B, M, 5)`` float32 ``class cx cy w h`` normalised to the input;
            rows past an image's objects have class ``-1``.
        indices: ``(B,)`` positions of the images in the dataset.
        transforms: ``(B, 3)`` float32 ``(scale, pad_x, pad_y)``: input pixel =
            original pixel × scale + pad (before a flip; eval batches never flip).
        sizes: ``(B, 2)`` int32 original ``(height, width)``.
    """

    images: np.ndarray
    targets: np.ndarray
    indices: np.ndarray
    transforms: np.ndarray
    sizes: np.ndarray


def read_image(path: Path) -> np.ndarray:
    """An image as RGB ``uint8`` (`runtime.load_image`), errors as `DataError`."""
    try:
        return load_image(path)
    except ImageError as exc:
        raise DataError(f"cannot read image: {exc}", path=path) from exc


def _hsv_jitter(image: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    gains = rng.uniform(-1, 1, 3) * (aug.hue, aug.saturation, aug.value) + (0, 1, 1)
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x + gains[0] * 180) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _warp(image: np.ndarray, input_hw: tuple[int, int], augment: Augment,
          rng: np.random.Generator) -> tuple[np.ndarray, float, float, float]:
    """Letterbox with a random scale and shift, as one affine warp."""
    h0, w0 = image.shape[:2]
    out_h, out_w = input_hw
    scale = min(out_h / h0, out_w / w0)
    factor = rng.uniform(1 - augment.scale, 1 + augment.scale) if augment.scale else 1.0
    scale *= factor
    pad_x = (out_w - w0 * scale) / 2
    pad_y = (out_h - h0 * scale) / 2
    if augment.translate:
        pad_x += rng.uniform(-1, 1) * augment.translate * out_w
        pad_y += rng.uniform(-1, 1) * augment.translate * out_h
    matrix = np.array([[scale, 0, pad_x], [0, scale, pad_y]], np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas = cv2.warpAffine(image.astype(np.float32) / 255.0, matrix, (out_w, out_h),
                            flags=interp, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(0.5, 0.5, 0.5))
    return canvas, scale, pad_x, pad_y


def prepare_sample(image: np.ndarray, labels: np.ndarray, input_hw: tuple[int, int],
                   augment: Augment = NO_AUGMENT, rng: np.random.Generator | None = None
                   ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Letterbox (and optionally augment) one RGB ``uint8`` image and its labels.

    Without augmentation this is exactly `runtime.letterbox` (what ``darkslim run``
    feeds the network); scale/shift augmentation is the same letterbox done as one
    affine warp with a random factor and offset.

    Returns:
        ``(image, labels, (scale, pad_x, pad_y))``: a ``(H, W, 3)`` float32 RGB image
        in [0, 1], its ``(k, 5)`` labels normalised to the input (boxes that leave the
        image are clipped, those left with under a quarter of their area dropped), and
        the transform from original to input pixels.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    h0, w0 = image.shape[:2]
    out_h, out_w = input_hw
    if augment.hue or augment.saturation or augment.value:
        image = _hsv_jitter(image, rng, augment)
    if augment.scale or augment.translate:
        canvas, scale_x, pad_x, pad_y = _warp(image, input_hw, augment, rng)
        scale_y = scale_x
    else:
        canvas, scale, (pad_x, pad_y) = letterbox(image, input_hw)
        # letterbox rounds the resized size; map boxes with the scale it really used.
        scale_x, scale_y = round(w0 * scale) / w0, round(h0 * scale) / h0
    boxes = labels[:, 1:5].astype(np.float64)
    x1 = (boxes[:, 0] - boxes[:, 2] / 2) * w0 * scale_x + pad_x
    x2 = (boxes[:, 0] + boxes[:, 2] / 2) * w0 * scale_x + pad_x
    y1 = (boxes[:, 1] - boxes[:, 3] / 2) * h0 * scale_y + pad_y
    y2 = (boxes[:, 1] + boxes[:, 3] / 2) * h0 * scale_y + pad_y
    area = (x2 - x1) * (y2 - y1)
    x1, x2 = np.clip(x1, 0, out_w), np.clip(x2, 0, out_w)
    y1, y2 = np.clip(y1, 0, out_h), np.clip(y2, 0, out_h)
    keep = ((x2 - x1) > 1) & ((y2 - y1) > 1) & ((x2 - x1) * (y2 - y1) >= 0.25 * area)
    out = np.stack([labels[:, 0], (x1 + x2) / 2 / out_w, (y1 + y2) / 2 / out_h,
                    (x2 - x1) / out_w, (y2 - y1) / out_h], 1)[keep].astype(np.float32)
    if augment.flip and rng.uniform() < augment.flip:
        canvas = canvas[:, ::-1]
        out[:, 1] = 1 - out[:, 1]
    transform = ((scale_x + scale_y) / 2, float(pad_x), float(pad_y))
    return np.ascontiguousarray(canvas, np.float32), out, transform


def _round_boxes(count: int) -> int:
    """Pad targets to a multiple of 8 so a few more objects do not recompile the step."""
    return max(8, -(-count // 8) * 8)


def iterate_batches(dataset: Dataset, input_hw: tuple[int, int], batch_size: int, *,
                    seed: int = 0, epoch: int = 0, shuffle: bool = True,
                    augment: Augment = NO_AUGMENT, max_boxes: int | None = None,
                    drop_last: bool = True, rows: tuple[int, int] | None = None
                    ) -> Iterator[Batch]:
    """Batches of ``dataset`` at ``input_hw``. The order depends on ``(seed, epoch)``
    and each image's augmentation on ``(seed, epoch, index)`` only, so a resumed or
    prefetched run sees exactly the same batches.

    ``max_boxes`` (default: the dataset's largest label count, rounded up to a multiple
    of 8) fixes the targets' shape; extra objects of an image are dropped.

    ``rows=(start, stop)`` yields only those rows of every (global) batch: one
    process's share in multi-process training (`runtime.parallel.process_rows`). The
    shares of all processes partition each batch, so no image is seen twice or skipped;
    with ``drop_last`` the ``len(dataset) % batch_size`` images left over after the
    last full batch sit out that epoch (a different set each epoch: the order is
    reshuffled), which `fit` reports as ``left_out``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected a positive integer")
    n = len(dataset)
    order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
             else np.arange(n))
    boxes = max_boxes if max_boxes is not None else _round_boxes(dataset.max_boxes)
    stop = n - n % batch_size if drop_last else n
    first, last = rows if rows is not None else (0, batch_size)
    if not 0 <= first < last <= batch_size:
        raise ValueError(f"rows={rows}: expected 0 <= start < stop <= {batch_size}")
    for start in range(0, stop, batch_size):
        chosen = order[start:start + batch_size][first:last]
        images = np.empty((len(chosen), *input_hw, 3), np.float32)
        targets = np.full((len(chosen), boxes, 5), -1.0, np.float32)
        transforms = np.empty((len(chosen), 3), np.float32)
        sizes = np.empty((len(chosen), 2), np.int32)
        for row, index in enumerate(chosen):
            sample = dataset.samples[index]
            raw = read_image(sample.image)
            rng = np.random.default_rng([seed, epoch, int(index)])
            images[row], labels, transforms[row] = prepare_sample(
                raw, sample.labels, input_hw, augment, rng)
            labels = labels[:boxes]
            targets[row, :len(labels)] = labels
            sizes[row] = raw.shape[:2]
        yield Batch(images, targets, chosen.astype(np.int32), transforms, sizes)


# ------------------------------------------------------------------------ prefetch

_DONE = object()


class Prefetch(Iterator):
    """Run an iterator on a background thread, ``depth`` items ahead.

    The producer's exceptions are re-raised in the consumer. Closing (``close()``,
    leaving a ``with`` block, or garbage collection) stops the producer.

    >>> with Prefetch(iter(range(3))) as it:
    ...     list(it)
    [0, 1, 2]
    """

    def __init__(self, iterable: Iterable, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(iterable),),
                                        daemon=True, name="darkslim-prefetch")
        self._finished = False
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                if not self._put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put((_DONE, exc))
            return
        self._put((_DONE, None))

    def __next__(self):
        if self._finished:
            raise StopIteration
        item, error = self._queue.get()
        if item is _DONE:
            self._finished = True
            self._thread.join()
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._finished = True
        self._thread.join()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self._stop.set()


def prefetch(iterable: Iterable, depth: int = 2) -> Prefetch:
    """`Prefetch` ``iterable`` on a background thread."""
    return Prefetch(iterable, depth)
