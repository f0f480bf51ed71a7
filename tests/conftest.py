"""Shared fixtures. Hypothesis profiles are chosen with HYPOTHESIS_PROFILE (dev|ci)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests compile many small XLA programs; the optimiser's time is not worth it there.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CFG_DIR = SHARED / "cfg"

try:  # the kit registers the dev/ci profiles; before it exists, do it here.
    from darkslim.testing import load_profile
except ImportError:  # pragma: no cover
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", derandomize=True, max_examples=30, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=20, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
else:
    load_profile()


def cfg_path(name: str) -> Path:
    path = CFG_DIR / name
    if not path.exists():
        pytest.skip(f"{path} not found (../shared/cfg must lie beside the checkout)")
    return path


@pytest.fixture
def shared_cfg():
    return cfg_path
