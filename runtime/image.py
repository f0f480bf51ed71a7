"""Read images and letterbox them to a network's input size (Darknet/ultralytics style).

Both functions are small and general on purpose: `darkslim run` uses them for one
image, the dataset code for many.
"""

from __future__ import annotations

import os

import cv2
import numpy as np


class ImageError(ValueError):
    """An image file that cannot be read; the message names the file."""


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB ``uint8`` array of shape (H, W, 3).

    Raises:
        ImageError: the file is missing or not an image OpenCV can decode.
    """
    # cv2.imread returns None (no exception) for a missing or undecodable file;
    # reading the bytes ourselves also tells the two cases apart.
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image: {exc.strerror}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"{path}: cannot decode image ({data.size} bytes): expected a "
                         "format OpenCV reads (jpg, png, bmp, ...)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def letterbox(image: np.ndarray, size: tuple[int, int]
              ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad with 0.5 gray to ``size``.

    Args:
        image: (H, W, C) ``uint8`` (scaled by 1/255) or float already in [0, 1].
        size: the network's ``(height, width)``.

    Returns:
        ``(boxed, scale, (pad_x, pad_y))``: ``boxed`` is float32 (net_h, net_w, C) in
        [0, 1]; a point ``(x, y)`` of the image lands at
        ``(x * scale + pad_x, y * scale + pad_y)``.
    """
    net_h, net_w = size
    h, w = image.shape[:2]
    pixels = image.astype(np.float32)
    if image.dtype == np.uint8:
        pixels /= 255.0
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    scale = min(net_w / w, net_h / h)
    new_w = max(1, min(net_w, round(w * scale)))
    new_h = max(1, min(net_h, round(h * scale)))
    resized = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    resized = resized.reshape(new_h, new_w, pixels.shape[2])  # cv2 drops a C=1 axis
    pad_x, pad_y = (net_w - new_w) // 2, (net_h - new_h) // 2
    boxed = np.full((net_h, net_w, pixels.shape[2]), 0.5, dtype=np.float32)
    boxed[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return boxed, scale, (pad_x, pad_y)
