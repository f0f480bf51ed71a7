"""Network slimming as pure passes over ``(Graph, variables)``.

The passes that decide (`SlimChannels`, `RemoveBlocks`) compute what they need from
the graph they receive and report what they decided (`Pipeline.run`); the lower-level
ones (`FoldPrunedBias`, `SliceChannels`, `ZeroPrunedGamma`, `FoldBatchNorm`) apply given
masks or fold BatchNorm. Pipelines are values and text (`parse_pipeline`).
"""

from passes.analysis import (
    Blocker,
    BlockReason,
    Prunability,
    analyze_prunability,
    channel_segments,
)
from passes.blocks import (
    BlockAnalysis,
    RemoveBlocks,
    ResidualBlock,
    ScoredBlock,
    analyze_blocks,
    choose_blocks,
    find_residual_blocks,
    layer_map,
    mean_abs_gamma,
    rank_blocks,
    remove_blocks,
)
from passes.errors import PruneError
from passes.fold import FoldPrunedBias, SliceChannels, ZeroPrunedGamma, tensor_keeps
from passes.fold_bn import FoldBatchNorm
from passes.latency import (
    LATENCY_RULES,
    ConvGrid,
    ConvSignature,
    LatencyTable,
    LayerEntry,
    Prediction,
    TableKey,
    latency_refusal,
    layer_entries,
    monotone_grid,
    table_from_json,
    table_to_json,
)
from passes.masks import (
    ChannelMasks,
    GraphFingerprint,
    Threshold,
    balance_mask,
    check_masks,
    compute_masks,
    compute_threshold,
)
from passes.pipeline import Pass, PassResult, Pipeline, PipelineResult, pipeline
from passes.program import verify_program
from passes.prune import PruneConfig, PruneResult, prune
from passes.registry import PASSES, parse_pipeline
from passes.reports import (
    BlocksReport,
    Counts,
    LatencyReport,
    PassReport,
    RemovedBlock,
    SlimReport,
    dump_reports,
    load_reports,
    report_from_json,
    report_to_json,
)
from passes.rules import Segment
from passes.slim import SlimChannels
from passes.slim_latency import SlimToLatency, choose_counts
from passes.text import pass_text

__all__ = [
    "Blocker", "BlockReason", "ChannelMasks", "FoldBatchNorm", "FoldPrunedBias",
    "GraphFingerprint", "Pass",
    "PassResult", "Pipeline", "PipelineResult", "PruneConfig", "PruneError", "PruneResult",
    "Prunability", "Segment", "SlimChannels", "SliceChannels", "Threshold",
    "ZeroPrunedGamma", "analyze_prunability", "balance_mask", "channel_segments",
    "check_masks",
    "compute_masks", "compute_threshold", "pipeline", "prune", "tensor_keeps",
    "verify_program",
    # text form and reports
    "PASSES", "parse_pipeline", "pass_text", "BlocksReport", "Counts", "PassReport",
    "RemovedBlock", "SlimReport", "dump_reports", "load_reports", "report_from_json",
    "report_to_json",
    # layer pruning (passes/blocks.py)
    "BlockAnalysis", "RemoveBlocks", "ResidualBlock", "ScoredBlock", "analyze_blocks",
    "choose_blocks", "find_residual_blocks", "layer_map", "mean_abs_gamma", "rank_blocks",
    "remove_blocks",
    # latency budget (passes/latency.py, passes/slim_latency.py)
    "LATENCY_RULES", "ConvGrid", "ConvSignature", "LatencyReport", "LatencyTable", "layer_entries",
    "LayerEntry", "Prediction", "SlimToLatency", "TableKey", "choose_counts",
    "latency_refusal", "monotone_grid", "table_from_json", "table_to_json",
]
