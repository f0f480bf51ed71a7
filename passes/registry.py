"""`PASSES`: the named passes `parse_pipeline` knows, by their text names, and
`parse_pipeline` itself (the text form is tokenised and parsed in `passes.text`)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from passes.blocks import RemoveBlocks
from passes.fold import FoldPrunedBias, SliceChannels, ZeroPrunedGamma
from passes.fold_bn import FoldBatchNorm
from passes.pipeline import Pipeline
from passes.slim import SlimChannels
from passes.slim_latency import SlimToLatency
from passes.text import parse_passes, pass_name

_NEEDS_MASKS = ("takes ChannelMasks computed on the graph it runs on, which have no "
                "text form; use slim-channels{...}, which computes them itself")

PASSES = MappingProxyType({
    **{pass_name(cls): cls for cls in (SlimChannels, SlimToLatency, RemoveBlocks,
                                      FoldBatchNorm)},
    **{pass_name(cls): _NEEDS_MASKS for cls in (FoldPrunedBias, SliceChannels,
                                               ZeroPrunedGamma)},
})
"""Read-only: extend it with ``{**passes.PASSES, "my-pass": MyPass}``."""


def parse_pipeline(text: str, registry: Mapping[str, type | str] | None = None) -> Pipeline:
    """The `Pipeline` that ``text`` names, e.g.
    ``parse_pipeline("remove-blocks{n=8},slim-channels{percent=0.5,mode=shortcut}")``.

    Args:
        registry: name -> pass class (or, for a pass that cannot be written as text,
            the reason); default `passes.PASSES`. Add your own passes with
            ``{**passes.PASSES, "my-pass": MyPass}``.

    ``str(parse_pipeline(t))`` is ``t`` in canonical form (defaults left out).
    """
    return Pipeline(parse_passes(text, PASSES if registry is None else registry))
