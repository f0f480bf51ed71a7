"""Checked rule tables: how a consumer of the IR keeps its rules, one per layer kind.

A kind's module in `ir.kinds` says what a layer *is*. Whatever consumes the IR (the
passes, the ONNX exporter, the ``.weights`` reader and writer, a latency model, a new
backend) keeps its own table ``{layer class: rule}`` beside its own code, as each
interpreter in JAX's autodidax owns its rules, and builds it with `check_table`:

    RULES = check_table("my backend", {ir.Conv: conv_rule, ..., ir.Section:
                                       Refusal("which darkslim does not execute")})

`check_table` compares the table with `ir.KINDS` at import: a kind without an entry,
a key that is not a kind, or an entry that is None raises `TypeError` naming the
consumer and the kind, so a new kind cannot be forgotten silently and a new consumer
needs no edit under ``ir/``. A kind the consumer does not handle gets an explicit
`Refusal` with its reason; the consumer turns it into its fail-closed behaviour (a
clear error naming the cfg line, or a block on what the layer reads).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ir.kinds import KINDS, KindSpec

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Refusal:
    """The entry of a kind a consumer does not handle, and why."""

    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise TypeError("a Refusal needs a reason")


class RuleTable(Mapping[type, R | Refusal], Generic[R]):
    """A consumer's checked, read-only table ``{layer class: rule or Refusal}``."""

    __slots__ = ("_rules", "consumer")

    def __init__(self, consumer: str, rules: Mapping[type, R | Refusal]):
        self.consumer = consumer
        self._rules = MappingProxyType(dict(rules))

    def __getitem__(self, kind: type) -> R | Refusal:
        return self._rules[kind]

    def __iter__(self) -> Iterator[type]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"RuleTable({self.consumer!r}, {len(self)} kinds)"

    def of(self, layer: object) -> R | Refusal:
        """The entry for ``layer``'s kind."""
        try:
            return self._rules[type(layer)]
        except KeyError:
            raise TypeError(f"{self.consumer}: {type(layer).__name__} is not a registered "
                            "layer kind") from None

    def refusal(self, layer: object) -> str | None:
        """Why this consumer refuses ``layer``'s kind, or None when it has a rule."""
        entry = self.of(layer)
        return entry.reason if isinstance(entry, Refusal) else None

    def handled(self) -> tuple[KindSpec, ...]:
        """The kinds this consumer has a rule for (not a refusal), in `ir.KINDS` order."""
        return tuple(spec for spec in KINDS if not isinstance(self[spec.layer], Refusal))


def check_table(consumer: str, table: Mapping[type, Any]) -> RuleTable[Any]:
    """``table`` as a `RuleTable`, after checking it against `ir.KINDS`.

    Raises:
        TypeError: a kind without an entry (``"<consumer>: no rule for layer kind
            [sam]"``), a key that is not a layer kind, or an entry that is None (give a
            `Refusal` with its reason instead).
    """
    known = {spec.layer: spec for spec in KINDS}
    for key in table:
        if key not in known:
            name = getattr(key, "__name__", repr(key))
            raise TypeError(f"{consumer}: {name} is not a layer kind (ir.KINDS)")
    for spec in KINDS:
        if spec.layer not in table:
            raise TypeError(f"{consumer}: no rule for layer kind [{spec.name}]")
        if table[spec.layer] is None:
            raise TypeError(f"{consumer}: the rule for layer kind [{spec.name}] is None: "
                            "give a Refusal with its reason")
    return RuleTable(consumer, {spec.layer: table[spec.layer] for spec in KINDS})


__all__ = ["Refusal", "RuleTable", "check_table"]
