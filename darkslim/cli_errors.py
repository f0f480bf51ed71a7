"""How the command line words an error for the person at the terminal.

The library's errors (`ir.CfgError`, `frontends.WeightsError`, `CheckpointError`,
`passes.PruneError`, ...) already name the file, line or layer, what was found and what
was expected. They speak of function arguments (``percent=1.5``,
``allow_partial=True``) because Python callers read them too. `describe_error` turns
one into what a CLI user needs:

- argument names become the command's flags (``--percent 1.5``, ``--allow-partial``),
  only for flags the command has and not when the user wrote a ``--pipeline`` (whose
  text uses the argument names);
- OS errors are worded for people and name the argument the path was given as, with
  what it should be (a missing file, ``--out`` on an existing file, no permission);
- weights where the cfg belongs, or a cfg where the weights belong, suggest the
  command with the two swapped.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shlex
from pathlib import Path

# Library argument -> CLI flag; the `args` attribute the flag sets (its dest) is the
# flag without dashes, so a command without that flag is left alone.
FLAGS = {
    "percent": "--percent", "threshold": "--threshold", "mode": "--mode",
    "ignore": "--ignore", "min_keep": "--min-keep", "round_to": "--round-to",
    "bn_eps": "--bn-eps", "layout": "--layout", "seed": "--seed",
    "allow_partial": "--allow-partial", "anchor_buffers": "--anchor-buffers",
    "reinit_heads": "--reinit-heads",
}
# `passes.RemoveBlocks(n=..., threshold=...)` is `prune --layers/--layer-threshold`.
REMOVE_BLOCKS_FLAGS = {"n": "--layers", "threshold": "--layer-threshold"}
_BOOLEAN_FLAGS = frozenset({"--allow-partial", "--anchor-buffers", "--reinit-heads"})

# What each argument holds: (how the user wrote it, what it must be).
_ROLES = {
    "cfg": ("MODEL.cfg", "a Darknet cfg, text starting with [net]"),
    "weights": ("WEIGHTS", "a weights file: .weights (or a *.conv.N backbone), "
                ".pt/.pth or .msgpack"),
    "input": ("--input", "a .npy float32 NCHW array or an image file"),
    "output": ("OUT", "the weights file to write: .weights, .pt/.pth or .msgpack"),
    "out": ("--out", "the output path"),
    "data": ("DATA.data", "a Darknet .data file (classes, train, valid, names)"),
    "json": ("--json", "the JSON file to write"),
}
_COMMAND_ROLES = {
    ("convert", "input"): ("IN", "the weights file to read: .weights (or a *.conv.N "
                           "backbone), .pt/.pth or .msgpack"),
    ("prune", "out"): ("--out", "a folder (created when missing) for pruned.cfg, "
                       "pruned.weights and report.json"),
    ("train", "out"): ("--out", "a folder (created when missing) for checkpoints"),
    ("demo", "out"): ("--out", "a folder (created when missing) for the demo's files"),
    ("synth", "out"): ("OUT_DIR", "a folder (created when missing) for the dataset"),
    ("run", "out"): ("--out", "the .npz file to write"),
    ("info", "weights"): ("--weights", _ROLES["weights"][1]),
    ("train", "weights"): ("--weights", _ROLES["weights"][1]),
}
_WRITTEN = frozenset({"out", "output", "json"})


def describe_error(exc: BaseException, args: argparse.Namespace,
                   argv: list[str] | None = None) -> str:
    """The message the CLI prints for ``exc``, raised by the command ``args`` ran."""
    cause = exc.__cause__
    if isinstance(exc, OSError):
        text = _os_message(exc, args)
    elif isinstance(cause, OSError) and getattr(cause, "filename", None) is not None:
        text = _os_message(cause, args)  # e.g. CfgError "cannot read cfg" from ENOENT
    else:
        text = to_flags(str(exc), args)
    hint = swap_hint(args, argv)
    return f"{text}\n{hint}" if hint else text


def to_flags(message: str, args: argparse.Namespace) -> str:
    """``message`` with library argument names (``percent=1.5``) as the command's flags
    (``--percent 1.5``); unchanged when the user gave a ``--pipeline``."""
    if getattr(args, "pipeline", None):
        return message
    table = dict(FLAGS)
    rb = _first(message, ("remove-blocks", "RemoveBlocks"))
    sc = _first(message, ("slim-channels", "SlimChannels"))
    if rb is not None and (sc is None or rb < sc):
        table.update(REMOVE_BLOCKS_FLAGS)
    for name, flag in table.items():
        if not hasattr(args, flag[2:].replace("-", "_")):
            continue
        pattern = re.compile(rf"(?<![\w.\-{{,]){name}=(\([^)]*\)|'[^']*'|\"[^\"]*\"|"
                             r"[^\s,;:()]+)")
        def text(m: re.Match[str], flag: str = flag) -> str:
            return _flag_text(flag, m.group(1))

        message = pattern.sub(text, message)
    return message


def _first(text: str, names: tuple[str, ...]) -> int | None:
    found = [text.find(n) for n in names if n in text]
    return min(found) if found else None


def _flag_text(flag: str, value: str) -> str:
    if flag in _BOOLEAN_FLAGS:
        return flag if value == "True" else f"no {flag}"
    if value[:1] == "(":  # a tuple of indices: the CLI spells it 84,96
        value = ",".join(v.strip() for v in value[1:-1].split(",") if v.strip())
    return f"{flag} {value.strip(chr(39) + chr(34))}"


def _role(path: str | os.PathLike | None, args: argparse.Namespace
          ) -> tuple[str, tuple[str, str]] | None:
    """Which argument ``path`` was given as (or lies inside), and its role."""
    if path is None:
        return None
    target = Path(os.fspath(path))
    command = getattr(args, "command", "")
    best = None
    for dest, value in vars(args).items():
        if not isinstance(value, (str, os.PathLike)) or not value or dest == "command":
            continue
        given = Path(os.fspath(value))
        # frontends.atomic_path writes through a hidden ".NAME.*.tmp" folder beside it
        temp = f".{given.name}."
        if (target == given or given in target.parents
                or any(p.parent == given.parent and p.name.startswith(temp)
                       for p in (target, *target.parents))):
            role = _COMMAND_ROLES.get((command, dest)) or _ROLES.get(dest)
            if role is not None and (best is None or target == given):
                best = (dest, role)
    return best


def _os_message(exc: OSError, args: argparse.Namespace) -> str:
    path = exc.filename
    found = _role(path, args)
    if found is None:
        what = exc.strerror or str(exc)
        return f"{path}: {what.lower()}" if path is not None else what
    dest, (flag, expected) = found
    given = os.fspath(getattr(args, dest))
    writing = dest in _WRITTEN
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        if writing:
            return (f"{given}: its folder does not exist: {flag} expects {expected} in "
                    "an existing folder")
        return f"{given}: no such file: {flag} expects {expected}"
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return (f"{given}: a file is in the way (it exists and is not a folder): {flag} "
                f"expects {expected}")
    if isinstance(exc, IsADirectoryError):
        return f"{given}: is a folder: {flag} expects {expected}"
    if isinstance(exc, PermissionError):
        action = "write" if writing else "read"
        where = "" if os.fspath(path) == given else f" (in {flag} {given})"
        return (f"{path}: permission denied: cannot {action} it{where}; {flag} expects "
                f"{expected}: check the permissions or choose another path")
    return f"{given}: {(exc.strerror or str(exc)).lower()} ({flag} expects {expected})"


def _head(path: str | os.PathLike, size: int = 65536) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return None


def looks_like_cfg(path: str | os.PathLike) -> bool:
    """A text file with a ``[net]`` section: a Darknet cfg."""
    head = _head(path)
    return (head is not None and b"\0" not in head
            and re.search(rb"^\s*\[(net|network)\]", head, re.M) is not None)


def looks_like_weights(path: str | os.PathLike) -> bool:
    """A binary file, or one named as weights (``.weights``, ``.pt``, ``*.conv.N``...)."""
    name = Path(path).name.lower()
    if name.endswith((".weights", ".pt", ".pth", ".msgpack")) or re.search(
            r"\.conv\.\d+$", name):
        return True
    head = _head(path)
    return head is not None and b"\0" in head


def swap_hint(args: argparse.Namespace, argv: list[str] | None) -> str | None:
    """When the cfg and the weights arguments look swapped, the command that fixes it."""
    cfg = getattr(args, "cfg", None)
    command = getattr(args, "command", None)
    other = getattr(args, "input" if command == "convert" else "weights", None)
    if not (isinstance(cfg, str) and isinstance(other, str)) or argv is None:
        return None
    if not (looks_like_cfg(other) and not looks_like_cfg(cfg) and looks_like_weights(cfg)):
        return None
    try:
        i, j = argv.index(cfg), argv.index(other)
    except ValueError:
        return None
    fixed = list(argv)
    fixed[i], fixed[j] = other, cfg
    return (f"{other} is a Darknet cfg and {cfg} holds weights: the cfg comes first. Did "
            f"you mean:\n  darkslim {shlex.join(fixed)}")
