"""Network slimming as pure passes over ``(Graph, variables)``."""

from passes.analysis import Prunability, Segment, analyze_prunability, channel_segments
from passes.blocks import (BlockAnalysis, RemoveBlocks, ResidualBlock, ScoredBlock,
                           analyze_blocks, choose_blocks, find_residual_blocks, layer_map,
                           mean_abs_gamma, rank_blocks, remove_blocks)
from passes.errors import PruneError
from passes.fold import FoldPrunedBias, SliceChannels, ZeroPrunedGamma, tensor_keeps
from passes.fold_bn import FoldBatchNorm
from passes.masks import (ChannelMasks, Threshold, balance_mask, compute_masks,
                          compute_threshold)
from passes.pipeline import Pass, Pipeline, pipeline
from passes.prune import PruneConfig, PruneResult, prune

__all__ = [
    "ChannelMasks", "FoldBatchNorm", "FoldPrunedBias", "Pass", "Pipeline", "PruneConfig", "PruneError",
    "PruneResult", "Prunability", "Segment", "SliceChannels", "Threshold",
    "ZeroPrunedGamma", "analyze_prunability", "balance_mask", "channel_segments", "compute_masks",
    "compute_threshold", "pipeline", "prune", "tensor_keeps",
    # layer pruning (passes/blocks.py)
    "BlockAnalysis", "RemoveBlocks", "ResidualBlock", "ScoredBlock", "analyze_blocks",
    "choose_blocks", "find_residual_blocks", "layer_map", "mean_abs_gamma", "rank_blocks",
    "remove_blocks",
]
