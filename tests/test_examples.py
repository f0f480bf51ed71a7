"""Runs the worked examples' property tests (examples/ is not in pytest's testpaths)."""

from examples.test_round_to_multiple import test_round_to_multiple  # noqa: F401
