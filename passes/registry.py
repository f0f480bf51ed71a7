"""`PASSES`: the named passes `parse_pipeline` knows, by their text names."""

from __future__ import annotations

from types import MappingProxyType

from passes.blocks import RemoveBlocks
from passes.fold import FoldPrunedBias, SliceChannels, ZeroPrunedGamma
from passes.fold_bn import FoldBatchNorm
from passes.slim import SlimChannels
from passes.text import pass_name

_NEEDS_MASKS = ("takes ChannelMasks computed on the graph it runs on, which have no "
                "text form; use slim-channels{...}, which computes them itself")

PASSES = MappingProxyType({
    **{pass_name(cls): cls for cls in (SlimChannels, RemoveBlocks, FoldBatchNorm)},
    **{pass_name(cls): _NEEDS_MASKS for cls in (FoldPrunedBias, SliceChannels,
                                               ZeroPrunedGamma)},
})
"""Read-only: extend it with ``{**passes.PASSES, "my-pass": MyPass}``."""
