"""The CLI answers at once: `--help` and `info` import no heavy library.

Each check runs the CLI in a fresh interpreter and reads its ``sys.modules`` after the
command returned (no timing here; the wall times are in benchmarks/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "flax", "optax", "torch", "matplotlib")
SYNTH_CFG = ROOT / "darkslim" / "data" / "synth-tiny.cfg"

_PROBE = """
import json, sys
{preload}
from darkslim.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))
"""


def _heavy_imports(*argv: str, preload: str = "") -> list[str]:
    code = _PROBE.format(heavy=set(HEAVY), preload=preload)
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                         text=True, cwd=ROOT, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                              "COLUMNS": "120"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [("--help",), ("info", str(SYNTH_CFG)),
                                  ("info", "--help"), ("prune", "--help"), ("sweep", "--help"),
                                  ("data", "import", "--help"),
                                  ("nosuchcommand",)])
def test_light_commands_import_no_heavy_library(argv):
    assert _heavy_imports(*argv) == []


def test_the_probe_sees_a_heavy_import():
    """The check can fail: a module imported before the command shows up."""
    assert "matplotlib" in _heavy_imports("--help", preload="import matplotlib")


def test_the_help_lines_match_the_subcommands():
    import argparse

    from darkslim.cli import COMMANDS, build_parser

    for name, text in COMMANDS.items():
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (action,) = sub._choices_actions
        assert (action.dest, action.help) == (name, text)
