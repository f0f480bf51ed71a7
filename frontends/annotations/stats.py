"""What an import holds, as numbers the CLI prints and the report keeps."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from frontends.annotations.model import LabeledImage

# COCO's area ranges (pixels of the original image): small < 32^2 <= medium < 96^2.
SMALL, MEDIUM = 32 ** 2, 96 ** 2
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True, slots=True)
class SplitStats:
    """One split: images, images without boxes, boxes per class (in label order), the
    quantiles `QUANTILES` of the box side relative to the image (``sqrt(w*h / (W*H))``)
    and COCO's small/medium/large counts."""

    images: int
    empty_images: int
    boxes: tuple[int, ...]
    relative_size: tuple[float, ...]
    small: int
    medium: int
    large: int

    def as_dict(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {"images": self.images, "empty_images": self.empty_images,
                "boxes": dict(zip(names, self.boxes)),
                "relative_size_quantiles": dict(zip((f"p{round(q * 100)}"
                                                     for q in QUANTILES),
                                                    self.relative_size)),
                "small": self.small, "medium": self.medium, "large": self.large}


def split_stats(images: tuple[LabeledImage, ...], names: tuple[str, ...]) -> SplitStats:
    per_class = Counter(b.name for im in images for b in im.boxes)
    areas = np.array([b.width * b.height for im in images for b in im.boxes], np.float64)
    relative = np.array([np.sqrt(b.width * b.height / (im.width * im.height))
                         for im in images for b in im.boxes], np.float64)
    quantiles = tuple(float(q) for q in np.quantile(relative, QUANTILES)) \
        if relative.size else ()
    return SplitStats(images=len(images),
                      empty_images=sum(1 for im in images if not im.boxes),
                      boxes=tuple(per_class.get(n, 0) for n in names),
                      relative_size=quantiles,
                      small=int(np.sum(areas < SMALL)),
                      medium=int(np.sum((areas >= SMALL) & (areas < MEDIUM))),
                      large=int(np.sum(areas >= MEDIUM)))
