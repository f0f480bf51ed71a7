"""Every consumer of the IR keeps its own rule table keyed by layer kind, checked
against `ir.KINDS` at import (`ir.check_table`); ``ir/kinds`` says only what a layer
is. ``pytest -s`` prints the kinds x consumers matrix.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ir
from export.rules import ONNX_RULES
from frontends.weights_order import WEIGHTS_ORDER
from passes.latency import LATENCY_RULES
from passes.rules import PASS_RULES, PassRule

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "tests" / "cfg"

#: Every consumer table, with the file it lives in (docs/extending.md lists the same).
CONSUMERS = {
    "passes": (PASS_RULES, "passes/rules/__init__.py"),
    "onnx export": (ONNX_RULES, "export/rules/__init__.py"),
    ".weights order": (WEIGHTS_ORDER, "frontends/weights_order.py"),
    "latency": (LATENCY_RULES, "passes/latency.py"),
}


def _cell(entry) -> str:
    if isinstance(entry, ir.Refusal):
        return f"refused: {entry.reason}"
    if isinstance(entry, PassRule):
        return f"rule ({entry.channels.__name__})"
    return f"rule ({getattr(entry, '__name__', type(entry).__name__)})"


def test_every_kind_has_a_rule_or_a_refusal_with_its_reason_in_every_consumer():
    names = [spec.name for spec in ir.KINDS]
    width = max(map(len, names)) + 3
    lines = [" " * width + " | ".join(f"{c:<36}" for c in CONSUMERS)]
    for spec in ir.KINDS:
        cells = []
        for consumer, (table, path) in CONSUMERS.items():
            assert (ROOT / path).is_file()
            assert table.consumer == consumer
            entry = table[spec.layer]
            assert entry is not None
            if isinstance(entry, ir.Refusal):
                assert entry.reason.strip()
            else:
                assert callable(entry) or isinstance(entry, PassRule)
            cells.append(f"{_cell(entry)[:36]:<36}")
        lines.append(f"[{spec.name}]".ljust(width) + " | ".join(cells))
    print("\n" + "\n".join(lines))
    for table, _ in CONSUMERS.values():
        assert set(table) == {spec.layer for spec in ir.KINDS}
        assert len(table) == len(ir.KINDS)
    # the kinds darkslim does not execute are refused where a rule would be a guess
    assert isinstance(ONNX_RULES[ir.Section], ir.Refusal)
    assert isinstance(PASS_RULES[ir.Section], ir.Refusal)


def test_a_table_missing_one_kind_raises_at_construction_naming_it():
    table = {spec.layer: (lambda layer: 1) for spec in ir.KINDS}
    del table[ir.Sam]
    with pytest.raises(TypeError, match=r"^latency model: no rule for layer kind \[sam\]$"):
        ir.check_table("latency model", table)


def test_a_stray_key_or_a_none_entry_raises():
    table = {spec.layer: (lambda layer: 1) for spec in ir.KINDS}
    with pytest.raises(TypeError, match=r"latency model: str is not a layer kind"):
        ir.check_table("latency model", {**table, str: lambda layer: 1})
    with pytest.raises(TypeError, match=r"rule for layer kind \[Gaussian_yolo\] is None"):
        ir.check_table("latency model", {**table, ir.GaussianYolo: None})
    with pytest.raises(TypeError, match="needs a reason"):
        ir.Refusal("  ")


def test_a_table_is_read_only():
    with pytest.raises(TypeError):
        ONNX_RULES[ir.Conv] = None  # type: ignore[index]


# ----------------------------------------------------------- a toy consumer, no ir/ edit

def _conv_ops(layer: ir.Conv) -> int:
    return 1 + layer.batch_normalize + (layer.activation != ir.Activation.LINEAR)


_TOY = ir.check_table("count ops", {
    **{spec.layer: (lambda layer: 1) for spec in ir.KINDS},
    ir.Conv: _conv_ops,
    ir.Section: ir.Refusal("no op count for a layer darkslim does not execute"),
})


def count_ops(graph: ir.Graph) -> int:
    total = 0
    for i, layer in enumerate(graph.layers):
        why = _TOY.refusal(layer)
        if why is not None:
            raise ValueError(f"{layer.path}:{layer.line}: [{layer.kind}] (layer {i}): {why}")
        total += _TOY.of(layer)(layer)
    return total


def test_a_new_consumer_is_one_table_and_no_edit_under_ir():
    graph = ir.parse_cfg(CFG / "yolov3-tiny.cfg")
    convs = [layer for layer in graph.layers if isinstance(layer, ir.Conv)]
    expected = (len(graph.layers) - len(convs)) + sum(
        1 + c.batch_normalize + (c.activation != ir.Activation.LINEAR) for c in convs)
    # 11 BN leaky convs (3 ops), 2 linear convs before the heads (1 op), 11 other layers
    assert count_ops(graph) == expected == 11 * 3 + 2 * 1 + (len(graph.layers) - 13)
    assert [spec.name for spec in _TOY.handled()] == [spec.name for spec in ir.KINDS][:-1]
    rnn = ir.parse_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n[rnn]\noutput=4\n")
    with pytest.raises(ValueError, match=r"<text>:\d+: \[rnn\] \(layer 0\): no op count"):
        count_ops(rnn)


# ------------------------------------------------------- ir/kinds says what a layer is

def test_ir_kinds_names_no_consumer():
    """``grep -rniE "onnx|Flow|fold|slice" ir/kinds`` finds nothing."""
    pattern = re.compile(r"onnx|flow|fold|slice", re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted((ROOT / "ir" / "kinds").rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert not found, "\n".join(found)


def test_import_ir_loads_no_consumer():
    code = ("import sys, ir; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('passes', 'export', 'frontends', 'runtime', 'darkslim', 'jax', 'onnx')); "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=False, env={"PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout + run.stderr
