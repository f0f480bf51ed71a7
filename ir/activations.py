"""Darknet's activations (``src/activations.c``), generic over the array namespace.

Each function takes ``xp`` (numpy or ``jax.numpy``) and the array, so the passes (folding
``act(β)``), the runtime and the numpy reference share one definition. Element-wise
activations apply anywhere; the ``normalize_channels*`` family normalises across the
channel axis (last, NHWC) and Darknet applies it only in ``[convolutional]`` and
``[shortcut]`` layers.
"""

from __future__ import annotations

import enum
from typing import Any, Callable


class Activation(str, enum.Enum):
    """Every activation a Darknet cfg can name (``get_activation`` in activations.c).

    Darknet falls back to ReLU for a name it does not know; darkslim refuses it.
    """

    LOGISTIC = "logistic"
    SWISH = "swish"
    MISH = "mish"
    HARD_MISH = "hard_mish"
    NORMALIZE_CHANNELS = "normalize_channels"
    NORMALIZE_CHANNELS_SOFTMAX = "normalize_channels_softmax"
    NORMALIZE_CHANNELS_SOFTMAX_MAXVAL = "normalize_channels_softmax_maxval"
    LOGGY = "loggy"
    RELU = "relu"
    RELU6 = "relu6"
    ELU = "elu"
    SELU = "selu"
    GELU = "gelu"
    RELIE = "relie"
    PLSE = "plse"
    HARDTAN = "hardtan"
    LHTAN = "lhtan"
    LINEAR = "linear"
    RAMP = "ramp"
    REVLEAKY = "revleaky"
    LEAKY = "leaky"
    TANH = "tanh"
    STAIR = "stair"

    @property
    def across_channels(self) -> bool:
        """True for the ``normalize_channels`` family: channel c's output depends on
        every channel at the same pixel, so channels cannot be pruned independently."""
        return self.value.startswith("normalize_channels")


def _sigmoid(xp: Any, x: Any) -> Any:
    # 0.5 * (1 + tanh(x / 2)) is the logistic without exp overflow.
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def _softplus(xp: Any, x: Any, threshold: float = 20.0) -> Any:
    # activations.h softplus_activate: x above the threshold, exp(x) below its negative.
    return xp.where(x > threshold, x, xp.where(x < -threshold, xp.exp(xp.minimum(x, 0.0)),
                                               xp.logaddexp(0.0, x)))


def _stair(xp: Any, x: Any) -> Any:
    n = xp.floor(x)
    odd = xp.mod(n, 2.0) != 0
    return xp.where(odd, (x - n) + xp.floor(x / 2.0), xp.floor(x / 2.0))


def _normalize_channels(xp: Any, x: Any) -> Any:
    # activate_array_normalize_channels: positive parts over their sum (+ 1e-4) at each
    # pixel; non-positive values become 0.
    pos = xp.where(x > 0, x, 0.0)
    return pos / (1e-4 + pos.sum(axis=-1, keepdims=True))


def _normalize_channels_softmax(xp: Any, x: Any, use_max: bool = False) -> Any:
    # activate_array_normalize_channels_softmax: exp(x - max) / sum, max = 0 unless
    # the _maxval variant; eps 0.0001 in the denominator (`float sum = eps;`), so the
    # outputs do not sum to 1.
    shift = x.max(axis=-1, keepdims=True) if use_max else 0.0
    e = xp.exp(x - shift)
    return e / (1e-4 + e.sum(axis=-1, keepdims=True))


ACTIVATIONS: dict[Activation, Callable[[Any, Any], Any]] = {
    Activation.LOGISTIC: _sigmoid,
    Activation.SWISH: lambda xp, x: x * _sigmoid(xp, x),
    Activation.MISH: lambda xp, x: x * xp.tanh(_softplus(xp, x)),
    Activation.HARD_MISH: lambda xp, x: xp.where(x > 0, x, xp.where(x > -2, x * x / 2 + x,
                                                                    0.0)),
    Activation.NORMALIZE_CHANNELS: _normalize_channels,
    Activation.NORMALIZE_CHANNELS_SOFTMAX: _normalize_channels_softmax,
    Activation.NORMALIZE_CHANNELS_SOFTMAX_MAXVAL:
        lambda xp, x: _normalize_channels_softmax(xp, x, use_max=True),
    Activation.LOGGY: lambda xp, x: 2.0 * _sigmoid(xp, x) - 1.0,
    Activation.RELU: lambda xp, x: xp.maximum(x, 0.0),
    Activation.RELU6: lambda xp, x: xp.clip(x, 0.0, 6.0),
    Activation.ELU: lambda xp, x: xp.where(x >= 0, x, xp.expm1(xp.minimum(x, 0.0))),
    Activation.SELU: lambda xp, x: xp.where(x >= 0, 1.0507 * x,
                                            1.0507 * 1.6732 * xp.expm1(xp.minimum(x, 0.0))),
    Activation.GELU: lambda xp, x: 0.5 * x * (1 + xp.tanh(0.797885 * x + 0.035677 * x ** 3)),
    Activation.RELIE: lambda xp, x: xp.where(x > 0, x, 0.01 * x),
    Activation.PLSE: lambda xp, x: xp.where(x < -4, 0.01 * (x + 4),
                                            xp.where(x > 4, 0.01 * (x - 4) + 1,
                                                     0.125 * x + 0.5)),
    Activation.HARDTAN: lambda xp, x: xp.clip(x, -1.0, 1.0),
    Activation.LHTAN: lambda xp, x: xp.where(x < 0, 0.001 * x,
                                             xp.where(x > 1, 0.001 * (x - 1) + 1, x)),
    Activation.LINEAR: lambda xp, x: x,
    Activation.RAMP: lambda xp, x: xp.where(x > 0, x, 0.0) + 0.1 * x,
    Activation.REVLEAKY: lambda xp, x: xp.where(x > 0, x, 0.1 * x),  # activate(): = LEAKY
    Activation.LEAKY: lambda xp, x: xp.where(x > 0, x, 0.1 * x),
    Activation.TANH: lambda xp, x: xp.tanh(x),
    Activation.STAIR: _stair,
}


def activate_xp(xp: Any, activation: Activation, x: Any) -> Any:
    """``activation`` applied to ``x`` with the array namespace ``xp``."""
    return ACTIVATIONS[activation](xp, x)
