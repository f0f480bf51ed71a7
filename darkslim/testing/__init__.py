"""darkslim.testing: the public property-testing kit for Darknet graph transforms.

Hypothesis strategies that draw valid random Darknet networks and their weights,
invariant checks that fail with a readable diff, a plain-numpy reference interpreter
to test against, and the ``dev``/``ci`` settings profiles. The project's own tests
use exactly this kit; see ``docs/testing.md`` for the reference and a worked example.
"""

from darkslim.testing.profiles import ENV_VAR, PROFILES, load_profile
from darkslim.testing.reference import reference_forward
from darkslim.testing.strategies import (BLOCK_KINDS, graphs, inputs, mask_units, masks,
                                         programs, random_inputs, random_variables,
                                         variables)

__all__ = [
    "BLOCK_KINDS", "ENV_VAR", "PROFILES", "graphs", "inputs", "load_profile",
    "mask_units", "masks", "programs", "random_inputs", "random_variables",
    "reference_forward", "variables",
]
