"""Image files: their size as the runtime will see it, read from the header only."""

from __future__ import annotations

import os
from pathlib import Path

from frontends.annotations.errors import AnnotationError

# The extensions runtime.dataset.label_path strips (Darknet's images->labels rule);
# an image of another kind would get its label file at "x.gif.txt".
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

# EXIF orientations that turn the image by 90 degrees. OpenCV's imread/imdecode (the
# runtime's reader) applies the EXIF orientation, so for these the image it sees is
# H x W, and the annotation tools that honour EXIF label that turned image.
_TRANSPOSED = (5, 6, 7, 8)


def image_size(path: str | os.PathLike[str], *, source: str | os.PathLike[str], where: str = ""
               ) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header (Pillow, no decoding),
    turned as its EXIF orientation says (as OpenCV reads it).

    Raises:
        AnnotationError: naming ``source`` (the annotation file) and ``where``, when
            the image is missing, has an extension the runtime does not read, or
            cannot be identified as an image.
    """
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise AnnotationError(f"image {path}: extension {path.suffix or '(none)'!r}: "
                              f"expected one of {' '.join(IMAGE_EXTENSIONS)}",
                              path=source, where=where)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise AnnotationError(f"image {path} not found", path=source, where=where) from None
    except Exception as exc:  # Pillow's plugins raise many kinds on bad headers
        raise AnnotationError(f"image {path} is unreadable ({type(exc).__name__}: {exc})",
                              path=source, where=where) from exc
    if width < 1 or height < 1:
        raise AnnotationError(f"image {path} has size {width}x{height}: expected a "
                              "positive width and height", path=source, where=where)
    if orientation in _TRANSPOSED:
        width, height = height, width
    return int(width), int(height)
