"""Atomic writes: write beside the destination, then `os.replace`."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in the destination's folder; on success it replaces ``path``.

    The temp file has the destination's own name, inside a hidden temp folder, because
    `torch.save` records the file's stem in the archive: a checkpoint written this way
    is the one written straight to ``path``. If the body raises, nothing is left
    behind and ``path`` is untouched.
    """
    target = Path(path)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.",
                                   suffix=".tmp"))
    try:
        tmp = folder / target.name
        yield tmp
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_chunks(path: str | os.PathLike[str], chunks: Iterable[Any]) -> None:
    """Write ``chunks`` (bytes-like objects, e.g. contiguous numpy arrays) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(memoryview(chunk).cast("B"))


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, mode 0644 (or the mode
    an existing file has)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
