"""Doctests of the packages (``--doctest-modules``, see pyproject.toml) run in a fresh
temporary folder, with a small network at hand: ``graph`` (yolov3 with every conv
1/8 as wide, so the examples that remove residual blocks have blocks) and
``variables`` (seeded, half the γ near zero, so a prune has something to drop), and
``yolov3-tiny.cfg`` / ``yolov3.cfg`` copied into the folder for examples that read a
file. Test modules keep their own fixtures in tests/conftest.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CFG_DIR = Path(__file__).resolve().parent / "tests" / "cfg"


@pytest.fixture(autouse=True)
def _doctest_folder(request):
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    import ir
    from darkslim.testing import random_variables

    tmp = request.getfixturevalue("tmp_path")
    for name in ("yolov3-tiny.cfg", "yolov3.cfg"):
        shutil.copy(CFG_DIR / name, tmp / name)
    graph = ir.narrow(ir.parse_cfg(tmp / "yolov3.cfg"), 8)
    namespace = request.getfixturevalue("doctest_namespace")
    namespace.update(graph=graph, variables=random_variables(graph, seed=0, sparsity=0.5))
    request.getfixturevalue("monkeypatch").chdir(tmp)
    yield
