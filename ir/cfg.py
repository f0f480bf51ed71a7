"""Parse and write Darknet ``.cfg`` files.

`parse_cfg` follows Darknet's reader: whitespace anywhere is dropped, lines starting
with ``#`` or ``;`` are comments, a repeated key keeps its first value for meaning
(Darknet's ``option_find`` returns the first match) and the repeats are kept verbatim.
Relative references (``from=-3``, ``layers=-1,61``) become absolute indices.
"""

from __future__ import annotations

import os
from pathlib import Path

from ir.errors import CfgError
from ir.kinds import spec_for_section, spec_of
from ir.kinds.section import Section, parse_section
from ir.layers import Graph, Layer
from ir.options import RawSection, SectionReader


def _read_text(path_or_text: str | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(path_or_text, os.PathLike):
        path = Path(path_or_text)
    elif "\n" not in path_or_text and "[" not in path_or_text:
        path = Path(path_or_text)
    else:
        return "<text>", path_or_text
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CfgError(f"cannot read cfg: {exc.strerror}", path=str(path)) from exc
    return str(path), _decode(data, str(path))


def _decode(data: bytes, path: str) -> str:
    """The cfg's text. A file with a NUL byte is binary (weights given where the cfg
    belongs): an error saying so, not a codec message. Text that is not UTF-8 (a
    Latin-1 comment) is read byte for byte, as Darknet does."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise CfgError(f"a binary file (a NUL byte at offset {nul}): expected a Darknet "
                       "cfg, text starting with [net]", path=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _split_sections(text: str, path: str) -> list[RawSection]:
    sections: list[RawSection] = []
    current: tuple[str, int, list[tuple[str, str, int]]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if "#" in line:  # Darknet has no inline comments; real cfgs do.
            line = line[: line.index("#")]
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"malformed section header {raw.strip()!r}: expected [name]",
                               path=path, line=number)
            if current is not None:
                sections.append(RawSection(current[0], current[1], tuple(current[2])))
            current = (line[1:-1].lower(), number, [])
            continue
        if "=" not in line:
            raise CfgError(f"expected key=value, found {raw.strip()!r}", path=path,
                           line=number)
        if current is None:
            raise CfgError(f"{raw.strip()!r} before the first section: expected [net]",
                           path=path, line=number)
        key, value = line.split("=", 1)
        current[2].append((key, value, number))
    if current is not None:
        sections.append(RawSection(current[0], current[1], tuple(current[2])))
    return sections


def _build_layer(raw: RawSection, index: int, path: str) -> Layer:
    spec = spec_for_section(raw.type)
    if spec is None:
        raise CfgError(f"unknown section type: Darknet has no [{raw.type}]", path=path,
                       line=raw.line)
    reader = SectionReader(raw, path)
    if spec.layer is Section:
        return parse_section(reader, index, raw.type)
    layer: Layer = spec.parse(reader, index)
    return layer


def parse_cfg(path_or_text: str | os.PathLike[str]) -> Graph:
    """Parse a Darknet cfg, given as a path or as its text.

    Returns:
        An immutable `Graph`. Errors are `CfgError` with file and line.

    >>> g = parse_cfg("[net]\\nwidth=32\\nheight=32\\n[convolutional]\\nfilters=4\\n")
    >>> g.layers[0].filters
    4
    """
    path, text = _read_text(path_or_text)
    sections = _split_sections(text, path)
    if not sections or sections[0].type not in ("net", "network"):
        line = sections[0].line if sections else 0
        raise CfgError("missing [net]: a Darknet cfg starts with a [net] section",
                       path=path, line=line)
    net = tuple((k, v) for k, v, _ in sections[0].options)
    for extra_net in sections[1:]:
        if extra_net.type in ("net", "network"):
            raise CfgError("a second [net] section: expected exactly one", path=path,
                           line=extra_net.line)
    layers = tuple(_build_layer(raw, i, path) for i, raw in enumerate(sections[1:]))
    return Graph(net=net, layers=layers, path=path)


def _layer_lines(layer: Layer, index: int) -> list[str]:
    spec = spec_of(layer)
    header = f"[{layer.type}]" if isinstance(layer, Section) else f"[{spec.name}]"
    lines = spec.write(layer, index)
    if isinstance(layer, Section):
        return [header, *lines]
    return [header, *lines, *(f"{k}={v}" for k, v in layer.extra)]


def write_cfg(graph: Graph) -> str:
    """The Darknet cfg text of ``graph``; ``parse_cfg(write_cfg(g)) == g``.

    References are written relative (``from=-3``, ``layers=-1,-4``), which Darknet,
    OpenCV and the torch ports all read.
    """
    blocks = ["\n".join(["[net]", *(f"{k}={v}" for k, v in graph.net)])]
    blocks += ["\n".join(_layer_lines(layer, i)) for i, layer in enumerate(graph.layers)]
    return "\n\n".join(blocks) + "\n"
