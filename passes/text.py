"""Pipelines as text: ``remove-blocks{n=8},slim-channels{percent=0.5,mode=shortcut}``.

A pass prints as its kebab-case name followed, in braces, by the options that differ
from their defaults (``mlir-opt --pass-pipeline`` and xDSL's ``-p`` read the same way);
`parse_pipeline` (beside the registry, `passes.registry`) maps each name to a pass class
and builds it from those options, so ``parse_pipeline(str(p)) == p``. Values are numbers,
bare words, ``true``/``false``, ``none`` and lists of integers in brackets
(``ignore=[84,96]``). This module only tokenises and parses; it imports no pass.
Options that have no text form (masks, a score function) print in angle brackets and
are refused by the parser with the reason; a field with ``metadata={"text": False}``
(`SlimToLatency`'s measured table, filled in by the CLI) is left out of the text.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from passes.errors import PruneError

_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


def pass_name(cls_or_pass: Any) -> str:
    """The kebab-case name of a pass class or instance (a ``name`` field's default or
    a ``name`` class attribute)."""
    cls = cls_or_pass if isinstance(cls_or_pass, type) else type(cls_or_pass)
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name == "name" and isinstance(f.default, str):
                return f.default
    name = getattr(cls_or_pass, "name", None)
    if not isinstance(name, str):
        raise PruneError(f"{cls.__name__}: a pass needs a str `name`")
    return name


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and _WORD.match(value) and value not in ("none", "true",
                                                                       "false"):
        return value
    if isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool)
                                        for v in value):
        return "[" + ",".join(str(v) for v in value) + "]"
    if callable(value):
        return f"<{getattr(value, '__name__', value)}>"
    return f"<{getattr(value, 'summary', None) or repr(value)}>"


def pass_text(p: Any) -> str:
    """``name{option=value,...}`` with the options that differ from their defaults."""
    name = pass_name(p)
    if not dataclasses.is_dataclass(p):
        return name
    options = []
    for f in dataclasses.fields(p):
        if f.name == "name" or not f.init or f.metadata.get("text") is False:
            continue  # metadata text=False: an option with no text form (a table)
        value = getattr(p, f.name)
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else dataclasses.MISSING)
        if default is dataclasses.MISSING or value != default:
            options.append(f"{f.name}={_format(value)}")
    return f"{name}{{{','.join(options)}}}" if options else name


def _split(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside braces and brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "{[<":
            depth += 1
        elif ch in "}]>":
            depth -= 1
            if depth < 0:
                raise PruneError(f"pipeline {text!r}: unbalanced {ch!r} at character {i}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise PruneError(f"pipeline {text!r}: unclosed bracket")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _value(text: str, where: str) -> Any:
    if text.startswith("<"):
        raise PruneError(f"{where}: {text} has no text form; build this pass in Python")
    if text.startswith("["):
        if not text.endswith("]"):
            raise PruneError(f"{where}: {text!r}: expected a list such as [84,96]")
        inner = text[1:-1].strip()
        try:
            return tuple(int(v) for v in inner.split(",")) if inner else ()
        except ValueError:
            raise PruneError(f"{where}: {text!r}: expected a list of integers") from None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if not _WORD.match(text):
        raise PruneError(f"{where}: {text!r}: expected a number, a word or a [list]")
    return text


def parse_pass(text: str, registry: Mapping[str, type | str]) -> Any:
    """One pass from ``name`` or ``name{option=value,...}``."""
    text = text.strip()
    name, _, rest = text.partition("{")
    name = name.strip()
    if not _NAME.match(name):
        raise PruneError(f"pipeline: {text!r}: expected a pass name such as slim-channels")
    if name not in registry:
        raise PruneError(f"pipeline: unknown pass {name!r}; expected one of "
                         f"{', '.join(sorted(registry))}")
    cls = registry[name]
    if isinstance(cls, str):  # a pass whose options have no text form, and why
        raise PruneError(f"pipeline: {name}: {cls}")
    options: dict[str, Any] = {}
    if rest:
        if not rest.rstrip().endswith("}"):
            raise PruneError(f"pipeline: {text!r}: expected a closing '}}'")
        fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "name"
                  and f.metadata.get("text") is not False}
        for item in _split(rest.rstrip()[:-1]):
            if not item:
                continue
            key, eq, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in fields:
                raise PruneError(f"pipeline: {name}: option {item!r}: expected key=value "
                                 f"with a key among {', '.join(sorted(fields))}")
            options[key] = _value(raw.strip(), f"pipeline: {name}: {key}")
    try:
        return cls(**options)
    except PruneError as exc:
        raise PruneError(f"pipeline: {name}: {exc}", argument=exc.argument,
                         pass_name=name) from exc


def parse_passes(text: str, registry: Mapping[str, type | str]) -> tuple[Any, ...]:
    """The passes that ``text`` names, in order (``a{...},b``); `passes.parse_pipeline`
    wraps them in a `Pipeline`."""
    if not text.strip():
        raise PruneError("pipeline: empty; expected passes such as slim-channels{percent=0.5}")
    return tuple(parse_pass(part, registry) for part in _split(text))
