"""What is inside a torch ``.pt``/``.pth`` file, read safely: the unpickled object, the
state_dict in it, and the Darknet header darkslim may have stored with it.

**Safety.** Files are read with ``torch.load(map_location="cpu", weights_only=True)``,
which unpickles only tensors and plain containers. Real ultralytics checkpoints also
hold ``best_fitness`` as a numpy float64 array, so exactly the globals such an array
needs are allowed, for this call only: ``numpy.core.multiarray._reconstruct`` (numpy 1)
and ``numpy._core.multiarray._reconstruct`` (numpy 2), ``numpy.ndarray``,
``numpy.dtype`` and the float64 dtype class. Anything else (a pickle that would call
``os.system``, a whole pickled ``nn.Module``) is refused with `CheckpointError` before
it runs, and whatever torch raises on a corrupt file becomes a `CheckpointError` too
(tests/test_fuzz.py feeds it mutated and random files).

torch is imported inside the functions only.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from frontends.darknet import DarknetHeader
from frontends.errors import CheckpointError

__all__ = ["detect_layout", "find_state_dict", "safe_load", "stored_darknet_header"]


_LAYOUT_PATTERNS = {
    "ultralytics": re.compile(r"^module_list\.\d+\.(Conv2d|BatchNorm2d)\."),
    "erik": re.compile(r"^module_list\.(\d+)\.(conv|batch_norm)_\1\."),
}


def detect_layout(keys: Collection[str], source: str) -> str:
    """``"ultralytics"`` or ``"erik"``, from the state_dict's keys."""
    counts = {name: sum(1 for k in keys if pattern.match(k))
              for name, pattern in _LAYOUT_PATTERNS.items()}
    found = [name for name, n in counts.items() if n]
    if len(found) == 1:
        return found[0]
    sample = ", ".join(list(keys)[:4])
    if not found:
        raise CheckpointError(
            f"{source}: no key looks like a cfg-based YOLO state_dict (first keys: "
            f"{sample or 'none'}): expected ultralytics keys like "
            "'module_list.0.Conv2d.weight' or erik keys like 'module_list.0.conv_0.weight'")
    raise CheckpointError(
        f"{source}: keys of both layouts ({counts['ultralytics']} ultralytics, "
        f"{counts['erik']} erik): pass layout='ultralytics' or layout='erik'")


def _numpy_globals() -> list[Any]:
    """Exactly what a pickled numpy float64 array needs, under both module spellings."""
    core = getattr(np, "_core", None)  # numpy 2; numpy 1 only has numpy.core
    if core is None:  # pragma: no cover - numpy 1
        core = np.core
    reconstruct = core.multiarray._reconstruct
    return [(reconstruct, "numpy.core.multiarray._reconstruct"),
            (reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.float64))]


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def safe_load(path: str | os.PathLike[str], source: str) -> tuple[Any, tuple[str, ...]]:
    import torch
    from torch.serialization import safe_globals

    with open(path, "rb"):  # a missing or unreadable file is an OSError of its own
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with safe_globals(_numpy_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            text = str(exc)
            match = _GLOBAL.search(text)
            what = (f"it asks for {match.group(1)}, which is neither a tensor, a plain "
                    "container nor an allow-listed numpy value" if match else
                    "it is not a torch checkpoint darkslim can read safely "
                    f"({_last_line(text)})")
            raise CheckpointError(
                f"{source}: refused to unpickle: {what}. darkslim loads checkpoints with "
                "torch.load(weights_only=True) and never runs code from them; a file "
                "holding a whole pickled model (torch.save(model)) must be re-saved as "
                "model.state_dict() by code you trust") from None
        except (RuntimeError, EOFError, ValueError, TypeError, KeyError, IndexError,
                AttributeError, AssertionError, struct.error, OverflowError,
                RecursionError, OSError) as exc:  # what torch.load raises on corrupt files (the zip
            # reader's OSError included: the file itself was opened just above)
            raise CheckpointError(f"{source}: not a readable torch file: "
                                  f"{_last_line(str(exc)) or type(exc).__name__}"
                                  ) from None
    notes = tuple(f"torch.load: {w.message}" for w in caught
                  if "pickle protocol" not in str(w.message))
    return obj, notes


_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)",
                        re.S)


def _last_line(text: str) -> str:
    """The informative line of a torch error (they come wrapped in advice)."""
    match = _UNPICKLER.search(text)
    if match:
        return " ".join(match.group(1).split())[:300]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    meaningful = [line for line in lines if "error" in line.lower()]
    return (meaningful or lines or [""])[-1][:300]


def find_state_dict(obj: Any, source: str
                    ) -> tuple[Mapping[str, Any], str, tuple[str, ...]]:
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}: expected a "
                              "checkpoint dict with 'model' or a state_dict")
    for name in ("model", "state_dict"):
        if name in obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = obj[name]
            if not isinstance(inner, Mapping):
                raise CheckpointError(
                    f"{source}: checkpoint['{name}'] is {type(inner).__name__}: expected "
                    "a state_dict (a dict of tensors)")
            return inner, "checkpoint", tuple(str(k) for k in obj if k != name)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "state_dict", ()
    keys = ", ".join(map(str, list(obj)[:6]))
    raise CheckpointError(f"{source}: a dict with keys {keys or '(none)'}: expected an "
                          "ultralytics checkpoint ('model' = state_dict) or a state_dict")


def stored_darknet_header(obj: Any, state: Any, container: str,
                    source: str) -> DarknetHeader | None:
    """The ``.weights`` header darkslim stored: the checkpoint entry
    ``darknet_header``, or the state_dict's ``_metadata["darknet_header"]``."""
    value = obj.get("darknet_header") if container == "checkpoint" else None
    if value is None:
        metadata = getattr(state, "_metadata", None)
        value = metadata.get("darknet_header") if isinstance(metadata, Mapping) else None
    if value is None:
        return None
    return DarknetHeader.from_stored(value, source, CheckpointError)
