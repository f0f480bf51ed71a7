"""The error type of the annotation importers and the record of what ``skip_bad`` left out."""

from __future__ import annotations

import os
from dataclasses import dataclass


class AnnotationError(ValueError):
    """An annotation set that cannot be imported as it is.

    The message starts with the file, then the element or index inside it, then what was
    found and what was expected::

        annotations/raccoon-7.xml: object 2 <bndbox>: box xmin=0 ymin=5 xmax=90 ymax=60
        outside the 120x80 image: expected 1 <= xmin < xmax <= width, ...

    ``path``, ``where`` and ``reason`` keep the three parts for tests and reports.
    """

    def __init__(self, reason: str, *, path: str | os.PathLike[str], where: str = "") -> None:
        self.path = str(path)
        self.where = where
        self.reason = reason
        super().__init__(f"{self.path}: {where}: {reason}" if where
                         else f"{self.path}: {reason}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad input met with ``skip_bad``, and what the importer did about it
    (``action``: "image left out", "annotation left out", "box clipped to ...")."""

    path: str
    where: str
    reason: str
    action: str

    @classmethod
    def of(cls, error: AnnotationError, action: str) -> Problem:
        return cls(path=error.path, where=error.where, reason=error.reason, action=action)

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{self.path}: {where}{self.reason} ({self.action})"
