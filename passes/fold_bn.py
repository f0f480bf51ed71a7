"""`FoldBatchNorm`: BatchNorm folded into the conv it follows, for inference.

At inference a BN conv computes ``(W * x - mean) / sqrt(var + eps) * γ + β``. With
``s = γ / sqrt(var + eps)`` that is one conv with kernel ``W · s`` (per output channel)
and bias ``β - mean · s``: the same function with one op fewer. Deployment formats
(ONNX) and the inference runtime use it; training keeps BN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ir import Connected, Conv, Graph, Variables, layer_key
from passes import tree
from passes.arrays import namespace


@dataclass(frozen=True, slots=True)
class FoldBatchNorm:
    """Every ``batch_normalize=1`` conv (or ``[connected]``) gets its BN folded into its
    kernel and a bias.

    Args:
        eps: the BatchNorm epsilon the weights were trained with (Darknet: 1e-5).

    The graph's convs get ``batch_normalize=False``; their ``bn`` variables are
    replaced by ``conv.bias``. A graph without BN convs is returned as is.
    """

    eps: float = 1e-5
    name: str = "fold-batch-norm"

    def __call__(self, graph: Graph, variables: Variables) -> tuple[Graph, Variables]:
        folded = [i for i, layer in enumerate(graph.layers)
                  if getattr(layer, "batch_normalize", False)]  # [convolutional], [connected]
        if not folded:
            return graph, variables
        params = dict(variables["params"])
        stats = dict(variables.get("batch_stats", {}))
        layers = list(graph.layers)
        for i in folded:
            layer = graph.layers[i]
            assert isinstance(layer, (Conv, Connected))  # the kinds with batch_normalize
            layers[i] = dataclasses.replace(layer, batch_normalize=False)
            if getattr(graph.layers[i], "share", None) is not None:
                continue  # runs with its owner's variables, folded there (share_index)
            key = layer_key(i)
            part = "conv" if "conv" in params[key] else "dense"  # the kernel's owner
            kernel = params[key][part]["kernel"]
            xp = namespace(kernel)
            scale = tree.get(variables, i, tree.GAMMA) / xp.sqrt(
                tree.get(variables, i, tree.VAR) + self.eps)
            bias = tree.get(variables, i, tree.BETA) - tree.get(variables, i, tree.MEAN) * scale
            # The output axis is last in both layouts: HWIO conv, (in, out) dense.
            params[key] = {**{k: v for k, v in params[key].items() if k != "bn"},
                           part: {"kernel": kernel * scale.astype(kernel.dtype),
                                  "bias": bias.astype(kernel.dtype)}}
            stats.pop(key, None)
        new = {**variables, "params": params}
        if "batch_stats" in variables:
            new["batch_stats"] = stats
        return dataclasses.replace(graph, layers=tuple(layers)), new
