"""A slow, plain-numpy reference interpreter of Darknet graphs: a test oracle.

`reference_forward` computes what `runtime.forward` computes (same heads, same
detections, same order), in float64 numpy, one layer at a time, with no compilation.
It exists for two reasons:

* **Differential testing.** The runtime (Flax, jit) and this file are written
  independently; a property that they agree on random graphs tests both.
* **Fast shrinking.** `runtime.forward` compiles once per graph (a few tenths of a
  second), and a hypothesis search that shrinks a counterexample runs hundreds of
  different graphs. On the kit's small graphs this interpreter takes milliseconds,
  so ``assert_equivalent(..., forward=reference_forward)`` keeps such searches fast.

Each layer kind's ``forward`` rule (`ir.kinds`) is written once over a small set of
primitives (conv, BatchNorm, dense, activations); this file gives independent float64
numpy versions of those primitives, the runtime gives Flax ones. The numpy reference
written straight from Darknet's C code, layer by layer in NCHW, is
``tests/reference_numpy.py``.
"""

from __future__ import annotations

import numpy as np

import ir
from ir import Variables
from ir.activations import activate_xp
from runtime import ForwardOut
from runtime.model import collect_outputs

__all__ = ["reference_forward"]


class _Tools:
    """The numpy primitives the kinds' ``forward`` rules compose (float64, NHWC),
    written independently of the Flax runtime's."""

    xp = np

    def __init__(self, variables: Variables, index: int, eps: float, input_hw) -> None:
        self.variables, self.index, self.eps, self.input_hw = variables, index, eps, input_hw
        self.train = False

    def leaf(self, part: str, name: str, collection: str = "params") -> np.ndarray:
        return np.asarray(self.variables[collection][ir.layer_key(self.index)][part][name],
                          np.float64)

    def conv(self, x, *, features: int, size: int, stride: int, padding: int, groups: int,
             dilation: int, bias: bool) -> np.ndarray:
        kernel = self.leaf("conv", "kernel")  # (k, k, cin/g, out)
        k, s, p, g, d = size, stride, padding, groups, dilation
        n, h, w, c = x.shape
        span = d * (k - 1) + 1
        ho, wo = (h + 2 * p - span) // s + 1, (w + 2 * p - span) // s + 1
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        xg = xp.reshape(n, h + 2 * p, w + 2 * p, g, c // g)
        kg = kernel.reshape(k, k, c // g, g, features // g)
        y = np.zeros((n, ho, wo, g, features // g))
        for dy in range(k):
            for dx in range(k):
                patch = xg[:, d * dy:d * dy + s * (ho - 1) + 1:s,
                           d * dx:d * dx + s * (wo - 1) + 1:s]
                y += np.einsum("nhwgc,cgo->nhwgo", patch, kg[dy, dx])
        y = y.reshape(n, ho, wo, features)
        return y + self.leaf("conv", "bias") if bias else y

    def batch_norm(self, y, axis: int = -1) -> np.ndarray:
        mean = self.leaf("bn", "mean", "batch_stats")
        var = self.leaf("bn", "var", "batch_stats")
        return (y - mean) / np.sqrt(var + self.eps) * self.leaf("bn", "scale") \
            + self.leaf("bn", "bias")

    def dense(self, x, *, features: int, bias: bool) -> np.ndarray:
        y = x @ self.leaf("dense", "kernel")
        return y + self.leaf("dense", "bias") if bias else y

    def activate(self, activation, x) -> np.ndarray:
        return activate_xp(np, activation, x)


def reference_forward(graph: ir.Graph, variables: Variables, x_nhwc, bn_eps: float = 1e-5
                      ) -> ForwardOut:
    """`runtime.forward`'s result computed in float64 numpy (heads, detections, output).

    Args:
        graph: a graph of the layer kinds the runtime executes.
        variables: the project's variables pytree (numpy or jax arrays).
        x_nhwc: ``(N, H, W, C)`` images at the graph's input size.

    Returns:
        A `runtime.ForwardOut` holding float64 numpy arrays.
    """
    x = np.asarray(x_nhwc, np.float64)
    hw = (x.shape[1], x.shape[2])
    env: dict[int, np.ndarray] = {-1: x}
    for index, layer in enumerate(graph.layers):
        reason = ir.unsupported_reason(layer)
        if reason is not None:
            raise ValueError(f"reference_forward: layer {index} is a [{layer.kind}] "
                             f"({reason or 'not executed'}), which the runtime does not "
                             "execute either")
        ins = [env[j] for j in ir.layer_inputs(graph, index)]
        tools = _Tools(variables, ir.variables_owner(layer, index), bn_eps, hw)
        env[index] = np.asarray(ir.spec_of(layer).forward(layer, tools, ins), np.float64)
    return collect_outputs(graph, env, hw, np)
