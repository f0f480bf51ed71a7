"""Shared fixtures. Hypothesis profiles are chosen with HYPOTHESIS_PROFILE (dev|ci)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests compile many small XLA programs; the optimiser's time is not worth it there.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# The parity tolerances (1e-4 and tighter) assume float32 arithmetic; on NVIDIA GPUs
# XLA would otherwise run float32 convs and matmuls in TF32. No effect on the CPU.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

# The Darknet cfgs the tests use, copied byte for byte into the repository with their
# sources in tests/cfg/SOURCES.md, so a fresh clone tests everything without ../shared.
CFG_DIR = Path(__file__).resolve().parent / "cfg"

from darkslim.testing import load_profile  # noqa: E402  (after XLA_FLAGS: imports jax)

load_profile()  # HYPOTHESIS_PROFILE=dev (default) or ci; see darkslim/testing/profiles.py


def cfg_path(name: str) -> Path:
    """``tests/cfg/<name>``; a missing one fails the test (it is part of the repository)."""
    path = CFG_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: not in tests/cfg/ (see tests/cfg/SOURCES.md)")
    return path


@pytest.fixture
def shared_cfg():
    return cfg_path


def write_network(folder: Path, name: str, graph, variables) -> tuple[Path, Path]:
    """``folder/name.cfg`` and ``folder/name.weights`` for a program; returns both paths."""
    import frontends
    import ir

    cfg, weights = folder / f"{name}.cfg", folder / f"{name}.weights"
    cfg.write_text(ir.write_cfg(graph))
    frontends.save_variables(graph, variables, weights)
    return cfg, weights
