"""Array-namespace dispatch: numpy in, numpy out; JAX in, JAX out.

Passes do their array work through the namespace of the arrays they are given. Weights
read from files are numpy on the host, where op-by-op JAX dispatch would compile a
kernel per shape (seconds on yolov3); variables already on an accelerator as
`jax.Array` stay there and are transformed with `jax.numpy`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

from ir import Activation
from ir.activations import ACTIVATIONS, activate_xp  # noqa: F401  (re-exported)


def namespace(*arrays: Any) -> ModuleType:
    """``jax.numpy`` if any array is a `jax.Array`, else ``numpy``.

    JAX is not imported here: if no one imported it, nothing can be a `jax.Array`,
    and a host-only prune does not pay for the import.
    """
    jax = sys.modules.get("jax")
    if jax is not None and any(isinstance(a, jax.Array) for a in arrays):
        jnp: ModuleType = jax.numpy
        return jnp
    return np


def activate(activation: Activation, x: Any) -> Any:
    """Darknet's ``activation`` applied to ``x`` in ``x``'s own namespace."""
    return activate_xp(namespace(x), activation, x)
