"""The documentation's examples run: the README's Python blocks (in a temporary folder
holding the files they read), and docs/testing.md's blocks (each is the worked example's
code, run in CI through tests/test_examples.py, so each must be that code verbatim).
Docstring examples run as doctests (``--doctest-modules`` in pyproject.toml)."""

from __future__ import annotations

import argparse
import ast
import re
import shutil
from pathlib import Path

import pytest

import frontends
import ir
from darkslim.testing import random_variables
from tests.conftest import CFG_DIR

ROOT = Path(__file__).resolve().parents[1]
_WEIGHTS = r"[\w.-]+\.(?:weights|pt|pth|msgpack)"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


def prepare_files(block: str, folder: Path) -> None:
    """The cfgs a block names (from tests/cfg), and for the first of them every weights
    file it names, with seeded sparse weights (files it writes are overwritten)."""
    cfgs = [name for name in re.findall(r"[\"']([\w.-]+\.cfg)[\"']", block)
            if (CFG_DIR / name).exists()]
    for name in cfgs:
        shutil.copy(CFG_DIR / name, folder / name)
    if cfgs:
        graph = ir.parse_cfg(folder / cfgs[0])
        variables = random_variables(graph, seed=0, sparsity=0.5)
        for name in re.findall(rf"[\"']({_WEIGHTS})[\"']", block):
            frontends.save_variables(graph, variables, folder / name)


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(ROOT / "README.md")
    assert blocks, "the README has Python examples"
    monkeypatch.chdir(tmp_path)
    for n, block in enumerate(blocks):
        prepare_files(block, tmp_path)
        exec(compile(block, f"README.md python block {n + 1}", "exec"),
             {"__name__": f"readme_{n}"})
    if "pruned.cfg" in "".join(blocks):  # the example writes a loadable network
        graph = ir.parse_cfg(tmp_path / "pruned.cfg")
        loaded = frontends.load_variables(graph, tmp_path / "pruned.weights",
                                          allow_partial=False)
        assert loaded.loaded_convs == loaded.total_convs


def _definitions(source: str) -> dict[str, str]:
    """Top-level classes and functions of ``source`` as AST dumps without docstrings
    (comments are not in the AST), and its imports."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out[ast.dump(node)] = ""
            continue
        for inner in ast.walk(node):
            body = getattr(inner, "body", None)
            if (isinstance(inner, (ast.ClassDef, ast.FunctionDef)) and body
                    and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                inner.body = body[1:] or [ast.Pass()]
        out[getattr(node, "name", ast.dump(node))] = ast.dump(node)
    return out


def test_testing_guide_blocks_are_the_worked_example():
    blocks = python_blocks(ROOT / "docs" / "testing.md")
    assert len(blocks) >= 3
    exec(compile(blocks[0], "docs/testing.md python block 1", "exec"), {})  # the import
    examples = {}
    for path in (ROOT / "examples").glob("*.py"):
        examples.update(_definitions(path.read_text()))
    for block in blocks[1:]:  # the same code as examples/, which CI runs
        for name, dump in _definitions(block).items():
            assert name in examples, f"docs/testing.md: {name[:60]} is not in examples/"
            assert examples[name] == dump, f"docs/testing.md: {name} differs from examples/"


@pytest.mark.parametrize("doc", ["README.md", "docs/testing.md"])
def test_commands_in_the_docs_exist(doc):
    """Every ``darkslim COMMAND --flag`` a document shows is a flag of that command."""
    from darkslim.cli import build_parser

    def subparser(command: str):
        # build_parser(command) imports only that command's module, as the CLI does.
        return build_parser(command)._subparsers._group_actions[0].choices[command]

    commands = build_parser()._subparsers._group_actions[0].choices
    code = "\n".join(re.findall(r"^```(?:bash|text)?\n(.*?)^```", (ROOT / doc).read_text(),
                                re.S | re.M))
    lines = re.findall(r"^(?:\S*/)?darkslim (\w+)\s+(.*)$", code, re.M)
    assert lines or doc != "README.md"
    for command, rest in lines:
        assert command in commands, command
        parser = subparser(command)
        # A command with subcommands of its own (`darkslim data import ...`): the flags
        # belong to the subcommand the line names (`voc|coco|yolo`-style choices are not).
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            word = rest.split()[0]
            assert word in nested[0].choices, f"{doc}: darkslim {command} {word}"
            parser = nested[0].choices[word]
        known = {s for a in parser._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
            assert flag in known, f"{doc}: darkslim {command} {flag}"
