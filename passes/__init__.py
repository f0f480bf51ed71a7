"""Network slimming as pure passes over ``(Graph, variables)``."""

from passes.analysis import Prunability, Segment, analyze_prunability, channel_segments
from passes.errors import PruneError
from passes.fold import FoldPrunedBias, SliceChannels, ZeroPrunedGamma, tensor_keeps
from passes.masks import ChannelMasks, Threshold, compute_masks, compute_threshold
from passes.pipeline import Pass, Pipeline, pipeline
from passes.prune import PruneConfig, PruneResult, prune

__all__ = [
    "ChannelMasks", "FoldPrunedBias", "Pass", "Pipeline", "PruneConfig", "PruneError",
    "PruneResult", "Prunability", "Segment", "SliceChannels", "Threshold",
    "ZeroPrunedGamma", "analyze_prunability", "channel_segments", "compute_masks",
    "compute_threshold", "pipeline", "prune", "tensor_keeps",
]
