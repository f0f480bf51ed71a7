"""The registry of layer kinds: one `KindSpec` per Darknet section kind.

Adding a kind is one module here (its dataclass and every rule of what it is, see
`ir.kinds.base`) plus one line in `KINDS`, and one checked entry in each consumer's
table (`ir.check_table`; docs/extending.md lists them). At import the registry checks
that every spec has every rule and that section names are unique, so an incomplete
kind fails at import rather than silently at use. Whatever has no spec of its own is
an `ir.Section` (fail closed: kept, shaped where possible, never executed, and refused
by every consumer).
"""

from __future__ import annotations

import dataclasses

from ir.kinds import (
    avgpool,
    connected,
    conv,
    cost,
    crop,
    detection,
    dropout,
    gaussian_yolo,
    local_avgpool,
    maxpool,
    region,
    reorg,
    route,
    sam,
    scale_channels,
    section,
    shortcut,
    softmax,
    upsample,
    yolo,
)
from ir.kinds.base import KindSpec

KINDS: tuple[KindSpec, ...] = (
    conv.SPEC, shortcut.SPEC, route.SPEC, upsample.SPEC, maxpool.SPEC, yolo.SPEC,
    gaussian_yolo.SPEC, region.SPEC, sam.SPEC, scale_channels.SPEC, reorg.REORG3D,
    reorg.REORG, avgpool.SPEC, local_avgpool.SPEC, dropout.SPEC, softmax.SPEC,
    connected.SPEC, cost.SPEC, crop.SPEC, detection.SPEC, section.SPEC)

_OPTIONAL = frozenset({"decode", "boxes"})


def _check(kinds: tuple[KindSpec, ...]) -> tuple[dict[type, KindSpec], dict[str, KindSpec]]:
    by_type: dict[type, KindSpec] = {}
    by_section: dict[str, KindSpec] = {}
    for spec in kinds:
        for f in dataclasses.fields(spec):
            if f.name not in _OPTIONAL and getattr(spec, f.name) is None:
                raise TypeError(f"layer kind [{spec.name}]: rule {f.name!r} is missing")
        if (spec.decode is None) != (spec.boxes is None):
            raise TypeError(f"layer kind [{spec.name}]: a detection layer has both 'decode' "
                            "and 'boxes', any other kind neither")
        if spec.layer in by_type:
            raise TypeError(f"layer kind [{spec.name}]: {spec.layer.__name__} registered twice")
        by_type[spec.layer] = spec
        if spec is section.SPEC:
            continue
        for name in spec.sections:
            if name.lower() in by_section or name.lower() in section.OTHER_SECTIONS:
                raise TypeError(f"layer kind [{spec.name}]: section [{name}] registered twice")
            by_section[name.lower()] = spec
    return by_type, by_section


_BY_TYPE, _BY_SECTION = _check(KINDS)


def spec_of(layer: object) -> KindSpec:
    """The spec of a layer instance."""
    try:
        return _BY_TYPE[type(layer)]
    except KeyError:
        raise TypeError(f"{type(layer).__name__} is not a registered layer kind") from None


def spec_for_section(name: str) -> KindSpec | None:
    """The spec parsing ``[name]`` (case-insensitive), `Section`'s for Darknet's other
    sections, None for a name Darknet does not know."""
    name = name.lower()
    if name in _BY_SECTION:
        return _BY_SECTION[name]
    return section.SPEC if name in section.OTHER_SECTIONS else None


def unsupported_reason(layer: object) -> str | None:
    """None when darkslim executes ``layer`` as Darknet does; else why not."""
    return spec_of(layer).unsupported(layer)


__all__ = ["KINDS", "KindSpec", "spec_for_section", "spec_of", "unsupported_reason"]
