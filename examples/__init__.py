"""Worked examples of using darkslim from Python (see docs/testing.md)."""
