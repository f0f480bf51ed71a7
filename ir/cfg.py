"""Parse and write Darknet ``.cfg`` files.

`parse_cfg` follows Darknet's reader: whitespace anywhere is dropped, lines starting
with ``#`` or ``;`` are comments, a repeated key keeps its first value for meaning
(Darknet's ``option_find`` returns the first match) and the repeats are kept verbatim.
Relative references (``from=-3``, ``layers=-1,61``) become absolute indices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ir.errors import CfgError
from ir.layers import (Activation, Conv, Graph, Layer, MaxPool, Options, Route,
                       Section, Shortcut, Upsample, Yolo)

# Darknet's `string_to_layer_type`, minus the ones with their own dataclass.
OTHER_SECTIONS = frozenset({
    "activation", "avg", "avgpool", "batchnorm", "connected", "conn", "contrastive",
    "conv_lstm", "cost", "crnn", "crop", "deconv", "deconvolutional", "detection",
    "dropout", "empty", "gaussian_yolo", "gru", "history", "implicit_add",
    "implicit_mul", "local", "local_avgpool", "logistic", "lrn", "lstm",
    "normalization", "region", "reorg", "reorg3d", "rnn", "sam", "scale_channels",
    "silence", "soft", "softmax",
})
_ALIASES = {"conv": "convolutional", "max": "maxpool"}
_FROM_SECTIONS = frozenset({"sam", "scale_channels"})


@dataclass(frozen=True, slots=True)
class _RawSection:
    type: str
    line: int
    options: tuple[tuple[str, str, int], ...]  # key, value, line


def _read_text(path_or_text: str | os.PathLike) -> tuple[str, str]:
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


def _split_sections(text: str, path: str) -> list[_RawSection]:
    sections: list[_RawSection] = []
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
                sections.append(_RawSection(current[0], current[1], tuple(current[2])))
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
        sections.append(_RawSection(current[0], current[1], tuple(current[2])))
    return sections


class _Options:
    """Typed access to one section's options; remembers which keys were used."""

    def __init__(self, raw: _RawSection, path: str) -> None:
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

    def int(self, key: str, default: int | None = None) -> int:
        value = self.str(key, None if default is None else str(default))
        try:
            return int(value)
        except ValueError:
            raise self.error(f"{key}={value}: expected an integer", key) from None

    def float(self, key: str, default: float) -> float:
        value = self.str(key, repr(default))
        try:
            return float(value)
        except ValueError:
            raise self.error(f"{key}={value}: expected a number", key) from None

    def ints(self, key: str) -> tuple[int, ...]:
        value = self.str(key)
        try:
            return tuple(int(v) for v in value.split(",") if v)
        except ValueError:
            raise self.error(f"{key}={value}: expected comma-separated integers",
                             key) from None

    def floats(self, key: str) -> tuple[float, ...]:
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

    def refs(self, key: str, index: int) -> tuple[int, ...]:
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


def _bool(opts: _Options, key: str) -> bool:
    return opts.int(key, 0) != 0


def _build_layer(raw: _RawSection, index: int, path: str) -> Layer:
    opts = _Options(raw, path)
    loc = {"path": path, "line": raw.line}
    kind = _ALIASES.get(raw.type, raw.type)
    if kind == "convolutional":
        conv = dict(filters=opts.int("filters", 1), size=opts.int("size", 1),
                    stride=opts.int("stride", 1), pad=_bool(opts, "pad"),
                    padding=opts.int("padding", 0), groups=opts.int("groups", 1),
                    batch_normalize=_bool(opts, "batch_normalize"),
                    activation=opts.activation(Activation.LOGISTIC))
        for key in ("filters", "size", "stride", "groups"):
            if conv[key] < 1:
                raise opts.error(f"{key}={conv[key]}: expected a positive integer", key)
        return Conv(**conv, extra=opts.extra(), **loc)
    if kind == "shortcut":
        inputs = (index - 1, *opts.refs("from", index))
        return Shortcut(inputs=inputs, activation=opts.activation(Activation.LINEAR),
                        extra=opts.extra(), **loc)
    if kind == "route":
        groups = opts.int("groups", 1)
        group_id = opts.int("group_id", 0)
        if groups < 1 or not 0 <= group_id < groups:
            raise opts.error(f"groups={groups} group_id={group_id}: expected "
                             "groups >= 1 and 0 <= group_id < groups", "group_id")
        return Route(inputs=opts.refs("layers", index), groups=groups, group_id=group_id,
                     extra=opts.extra(), **loc)
    if kind == "upsample":
        stride = opts.int("stride", 2)
        if stride == 0:
            raise opts.error("stride=0: expected a non-zero integer", "stride")
        return Upsample(stride=stride, extra=opts.extra(), **loc)
    if kind == "maxpool":
        stride = opts.int("stride", 1)
        size = opts.int("size", stride)
        padding = opts.int("padding") if "padding" in opts.first else None
        if size < 1 or stride < 1:
            raise opts.error(f"size={size} stride={stride}: expected positive integers")
        return MaxPool(size=size, stride=stride, padding=padding, extra=opts.extra(), **loc)
    if kind == "yolo":
        classes = opts.int("classes", 20)
        num = opts.int("num", 1)
        anchors_flat = opts.floats("anchors") if "anchors" in opts.first else ()
        if len(anchors_flat) % 2:
            raise opts.error("anchors= has an odd count: expected w,h pairs", "anchors")
        anchors = tuple(zip(anchors_flat[::2], anchors_flat[1::2]))
        mask = opts.ints("mask") if "mask" in opts.first else tuple(range(num))
        bad = [m for m in mask if not 0 <= m < len(anchors)]
        if bad:
            raise opts.error(f"mask={','.join(map(str, mask))}: index {bad[0]} has no "
                             f"anchor ({len(anchors)} anchors given)", "mask")
        return Yolo(mask=mask, anchors=anchors, classes=classes, num=num,
                    scale_x_y=opts.float("scale_x_y", 1.0), extra=opts.extra(), **loc)
    if kind in OTHER_SECTIONS:
        inputs = opts.refs("from", index) if kind in _FROM_SECTIONS else ()
        return Section(type=kind, options=opts.extra(), inputs=inputs, **loc)
    raise CfgError(f"unknown section type: Darknet has no [{raw.type}]", path=path,
                   line=raw.line)


def parse_cfg(path_or_text: str | os.PathLike) -> Graph:
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


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _rel(refs: tuple[int, ...], index: int) -> str:
    return ",".join(str(r - index) for r in refs)


def _layer_lines(layer: Layer, index: int) -> list[str]:
    if isinstance(layer, Conv):
        lines = ["[convolutional]"]
        if layer.batch_normalize:
            lines.append("batch_normalize=1")
        lines += [f"filters={layer.filters}", f"size={layer.size}",
                  f"stride={layer.stride}"]
        if layer.pad:
            lines.append("pad=1")
        if layer.padding:
            lines.append(f"padding={layer.padding}")
        if layer.groups != 1:
            lines.append(f"groups={layer.groups}")
        lines.append(f"activation={layer.activation.value}")
    elif isinstance(layer, Shortcut):
        lines = ["[shortcut]", f"from={_rel(layer.inputs[1:], index)}",
                 f"activation={layer.activation.value}"]
    elif isinstance(layer, Route):
        lines = ["[route]", f"layers={_rel(layer.inputs, index)}"]
        if layer.groups != 1:
            lines += [f"groups={layer.groups}", f"group_id={layer.group_id}"]
    elif isinstance(layer, Upsample):
        lines = ["[upsample]", f"stride={layer.stride}"]
    elif isinstance(layer, MaxPool):
        lines = ["[maxpool]", f"size={layer.size}", f"stride={layer.stride}"]
        if layer.padding is not None:
            lines.append(f"padding={layer.padding}")
    elif isinstance(layer, Yolo):
        lines = ["[yolo]", f"mask={','.join(map(str, layer.mask))}"]
        if layer.anchors:
            flat = ", ".join(f"{_fmt(w)},{_fmt(h)}" for w, h in layer.anchors)
            lines.append(f"anchors={flat}")
        lines += [f"classes={layer.classes}", f"num={layer.num}"]
        if layer.scale_x_y != 1.0:
            lines.append(f"scale_x_y={_fmt(layer.scale_x_y)}")
    else:
        lines = [f"[{layer.type}]"]
        if layer.inputs:
            lines.append(f"from={_rel(layer.inputs, index)}")
        return lines + [f"{k}={v}" for k, v in layer.options]
    return lines + [f"{k}={v}" for k, v in layer.extra]


def write_cfg(graph: Graph) -> str:
    """The Darknet cfg text of ``graph``; ``parse_cfg(write_cfg(g)) == g``.

    References are written relative (``from=-3``, ``layers=-1,-4``), which Darknet,
    OpenCV and the torch ports all read.
    """
    blocks = ["\n".join(["[net]", *(f"{k}={v}" for k, v in graph.net)])]
    blocks += ["\n".join(_layer_lines(layer, i)) for i, layer in enumerate(graph.layers)]
    return "\n\n".join(blocks) + "\n"
