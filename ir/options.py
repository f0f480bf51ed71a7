"""Typed reading of one cfg section's ``key=value`` options, for the kinds' parse rules.

`SectionReader` remembers which keys a rule read; the rest (and repeats of read keys)
stay in the layer's ``extra`` verbatim, so writing a parsed cfg loses nothing.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from ir.activations import Activation
from ir.errors import CfgError

Options = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RawSection:
    type: str
    line: int
    options: tuple[tuple[str, str, int], ...]  # key, value, line



class SectionReader:
    """Typed access to one section's options; remembers which keys were used."""

    def __init__(self, raw: RawSection, path: str) -> None:
        self.raw, self.path = raw, path
        self.first: dict[str, tuple[str, int]] = {}
        for key, value, line in raw.options:
            self.first.setdefault(key, (value, line))
        self.used: set[str] = set()

    def error(self, message: str, key: str | None = None) -> CfgError:
        line = self.first[key][1] if key in self.first else self.raw.line
        return CfgError(message, path=self.path, line=line, section=self.raw.type)

    def str(self, key: str, default: str | None = None) -> str:
        self.used.add(key)
        if key in self.first:
            return self.first[key][0]
        if default is None:
            raise self.error(f"missing required key {key}=")
        return default

    def int(self, key: builtins.str, default: builtins.int | None = None) -> builtins.int:
        value = self.str(key, None if default is None else str(default))
        try:
            return int(value)
        except ValueError:
            raise self.error(f"{key}={value}: expected an integer", key) from None

    def float(self, key: builtins.str, default: builtins.float) -> builtins.float:
        value = self.str(key, repr(default))
        try:
            return float(value)
        except ValueError:
            raise self.error(f"{key}={value}: expected a number", key) from None

    def ints(self, key: builtins.str) -> tuple[builtins.int, ...]:
        value = self.str(key)
        try:
            return tuple(int(v) for v in value.split(",") if v)
        except ValueError:
            raise self.error(f"{key}={value}: expected comma-separated integers",
                             key) from None

    def floats(self, key: builtins.str) -> tuple[builtins.float, ...]:
        value = self.str(key)
        try:
            return tuple(float(v) for v in value.split(",") if v)
        except ValueError:
            raise self.error(f"{key}={value}: expected comma-separated numbers",
                             key) from None

    def activation(self, default: Activation) -> Activation:
        value = self.str("activation", default.value)
        try:
            return Activation(value)
        except ValueError:
            known = ", ".join(a.value for a in Activation)
            raise self.error(f"activation={value}: not supported (expected one of {known})",
                             "activation") from None

    def refs(self, key: builtins.str, index: builtins.int) -> tuple[builtins.int, ...]:
        resolved = []
        for ref in self.ints(key):
            absolute = index + ref if ref < 0 else ref
            if not 0 <= absolute < index:
                raise self.error(f"{key}={self.first[key][0]}: layer {absolute} is not "
                                 f"before this layer ({index})", key)
            resolved.append(absolute)
        if not resolved:
            raise self.error(f"{key}= is empty: expected at least one layer", key)
        return tuple(resolved)

    def extra(self) -> Options:
        """Unused keys, and repeats of used ones, verbatim and in order."""
        seen: set[str] = set()
        kept = []
        for key, value, _ in self.raw.options:
            if key not in self.used or key in seen:
                kept.append((key, value))
            seen.add(key)
        return tuple(kept)

    def bool(self, key: builtins.str) -> builtins.bool:
        return self.int(key, 0) != 0

    @property
    def loc(self) -> dict[builtins.str, Any]:
        """``path`` and ``line`` keyword arguments for the layer dataclass."""
        return {"path": self.path, "line": self.raw.line}
