"""Array-namespace dispatch: numpy in, numpy out; JAX in, JAX out.

Passes do their array work through the namespace of the arrays they are given. Weights
read from files are numpy on the host, where op-by-op JAX dispatch would compile a
kernel per shape (seconds on yolov3); variables already on an accelerator as
`jax.Array` stay there and are transformed with `jax.numpy`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Callable

import numpy as np

from ir import Activation


def namespace(*arrays: Any) -> ModuleType:
    """``jax.numpy`` if any array is a `jax.Array`, else ``numpy``.

    JAX is not imported here: if no one imported it, nothing can be a `jax.Array`,
    and a host-only prune does not pay for the import.
    """
    jax = sys.modules.get("jax")
    if jax is not None and any(isinstance(a, jax.Array) for a in arrays):
        return jax.numpy
    return np


def _sigmoid(xp, x):
    return 1.0 / (1.0 + xp.exp(-x))


ACTIVATIONS: dict[Activation, Callable[[ModuleType, Any], Any]] = {
    Activation.LEAKY: lambda xp, x: xp.where(x > 0, x, 0.1 * x),
    Activation.LINEAR: lambda xp, x: x,
    Activation.MISH: lambda xp, x: x * xp.tanh(xp.logaddexp(0.0, x)),
    Activation.SWISH: lambda xp, x: x * _sigmoid(xp, x),
    Activation.LOGISTIC: _sigmoid,
    Activation.RELU: lambda xp, x: xp.maximum(x, 0.0),
}


def activate(activation: Activation, x):
    """Darknet's ``activation`` applied to ``x`` in ``x``'s own namespace."""
    return ACTIVATIONS[activation](namespace(x), x)
