"""darkslim.testing: the public property-testing kit for Darknet graph transforms.

Hypothesis strategies that draw valid random Darknet networks, their weights, inputs
and channel masks; invariant checks that fail with a readable diff; a plain-numpy
reference interpreter to test against; and the ``dev``/``ci`` settings profiles.
The project's own tests use exactly this kit. Reference and a worked example:
``docs/testing.md``.

>>> from hypothesis import given
>>> from darkslim.testing import graphs, assert_roundtrip_cfg
>>> @given(graphs())
... def test_cfg_roundtrip(graph):
...     assert_roundtrip_cfg(graph)
"""

from darkslim.testing.checks import (
    Program,
    assert_equivalent,
    assert_identity_when_noop,
    assert_pass_is_pure,
    assert_roundtrip_cfg,
    assert_roundtrip_weights,
    assert_verifies,
    describe_graph,
    tree_diff,
)
from darkslim.testing.profiles import ENV_VAR, PROFILES, load_profile
from darkslim.testing.reference import reference_forward
from darkslim.testing.strategies import (
    BLOCK_KINDS,
    CLASSIC_KINDS,
    HEAD_KINDS,
    STYLES,
    graph_features,
    graphs,
    inputs,
    mask_units,
    masks,
    programs,
    random_inputs,
    random_variables,
    variables,
)

__all__ = [
    # strategies
    "BLOCK_KINDS", "CLASSIC_KINDS", "HEAD_KINDS", "STYLES", "graphs", "variables", "programs",
    "inputs", "masks",
    "random_variables", "random_inputs", "mask_units", "graph_features",
    # checks
    "Program", "assert_verifies", "assert_equivalent", "assert_roundtrip_cfg",
    "assert_roundtrip_weights", "assert_pass_is_pure", "assert_identity_when_noop",
    "describe_graph", "tree_diff",
    # oracle and profiles
    "reference_forward", "ENV_VAR", "PROFILES", "load_profile",
]
