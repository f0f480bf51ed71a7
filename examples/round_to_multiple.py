"""A user-written pass: keep every pruned unit's channel count a multiple of N.

Accelerators like widths that are multiples of 8 (tensor cores, SIMD lanes). Given
keep-masks (from `passes.compute_masks`, or anyone's), `RoundToMultiple` keeps a few
more channels of each prunable unit, those with the largest |γ| among the dropped
ones, until its count is a multiple of ``multiple`` (or the full width), then folds
and slices with darkslim's own passes. Coupled units (a shortcut group in
``shortcut`` mode) stay coupled: the unit's score is its members' max |γ|.

    analysis = passes.analyze_prunability(graph, "shortcut")
    masks = passes.compute_masks(graph, variables, analysis, threshold=0.05)
    graph2, variables2 = RoundToMultiple(masks, analysis, multiple=8)(graph, variables)

Its property test, with `darkslim.testing`, is ``examples/test_round_to_multiple.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import passes
from ir import layer_key


@dataclass(frozen=True, slots=True)
class RoundToMultiple:
    masks: passes.ChannelMasks
    analysis: passes.Prunability
    multiple: int = 8
    name: str = "round-to-multiple"

    def rounded(self, variables) -> passes.ChannelMasks:
        """The masks with each unit's kept count rounded up (largest |γ| first)."""
        out = {}
        for unit in self.analysis.units:
            keep = self.masks.get(unit[0])
            if keep is None:
                continue
            score = np.max([np.abs(variables["params"][layer_key(i)]["bn"]["scale"])
                            for i in unit], axis=0)
            want = min(len(keep), -(-int(keep.sum()) // self.multiple) * self.multiple)
            # Kept channels first, then the dropped ones by falling |γ|.
            order = np.lexsort((-score, ~keep))
            rounded = np.zeros_like(keep)
            rounded[order[:want]] = True
            out.update({i: rounded for i in unit})
        return passes.ChannelMasks.from_arrays(out, self.masks.fingerprint)

    def __call__(self, graph, variables):
        masks = self.rounded(variables)
        return passes.pipeline(passes.FoldPrunedBias(masks),
                               passes.SliceChannels(masks))(graph, variables)
