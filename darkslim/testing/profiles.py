"""Hypothesis settings profiles for darkslim property tests.

Two profiles, chosen by the ``HYPOTHESIS_PROFILE`` environment variable:

``dev`` (the default)
    Random: every run explores new examples (and replays failures from the local
    example database first). Few examples per test, so the suite stays quick while
    you edit.
``ci``
    Derandomised: the examples are a fixed function of each test, so two runs of the
    same commit see the same graphs and a red CI run repeats on a laptop. Bounded
    ``max_examples``, no example database, and the failing example's reproduction
    blob is printed.

Both disable the per-example deadline: the first call of a new graph through the
runtime pays a jit compile, which no deadline should count.

Use it from a ``conftest.py``::

    from darkslim.testing import load_profile
    load_profile()                # HYPOTHESIS_PROFILE=ci pytest ... picks "ci"
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILES", "ENV_VAR", "load_profile"]

ENV_VAR = "HYPOTHESIS_PROFILE"
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]

#: The settings of each profile, by name.
PROFILES: dict[str, settings] = {
    # derandomize=False explicitly: with CI=true in the environment hypothesis's own
    # defaults derandomize, and `dev` must stay random wherever it is loaded.
    "dev": settings(max_examples=20, deadline=None, derandomize=False,
                    suppress_health_check=_SLOW),
    "ci": settings(max_examples=30, deadline=None, derandomize=True, database=None,
                   print_blob=True, suppress_health_check=_SLOW),
}

for _name, _settings in PROFILES.items():
    settings.register_profile(_name, _settings)


def load_profile(name: str | None = None) -> str:
    """Load the profile ``name``, else ``$HYPOTHESIS_PROFILE``, else ``dev``.

    Returns the name loaded. Raises `ValueError` naming the known profiles when the
    name is not one of them.
    """
    chosen = name or os.environ.get(ENV_VAR) or "dev"
    if chosen not in PROFILES:
        raise ValueError(f"{ENV_VAR}={chosen!r}: unknown hypothesis profile; expected "
                         f"one of {', '.join(sorted(PROFILES))}")
    settings.load_profile(chosen)
    return chosen
