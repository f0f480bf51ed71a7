"""The XLA compile options of every jitted function of the runtime (forward, train
step, BatchNorm recalibration).

On CPU, jaxlib 0.10's XLA hands convolutions to YNNPACK (``__ynn_fusion``). For
many of the shapes a Darknet detector has, that fusion runs on one thread: in
yolov3-416 at batch 8, nine of its 23 conv shapes (the 416², 208² layers and most
1×1 convs) kept one core of two busy, and the network ran at 0.84× torch eager.
Left to XLA's own convolution (Eigen, all cores), with YNNPACK kept for dots and
reductions, the same forward ran 1.13–1.35× torch eager and the yolov3-tiny train
step 1.48× (``benchmarks/README.md``, 2026-11-30); heads moved by at most 2e-7.

Reductions must stay with YNNPACK: without it, XLA's own reduction loops summed the
BatchNorm'd weight gradients (sums over every pixel that nearly cancel) so loosely
that a train step's update came out up to 5.5% off a float64 step, against 0.43% with
YNNPACK's (leaf by leaf, relative to the largest update), and a one-device step no
longer equalled the same step sharded over two devices.

The options are per compilation (``jax.jit(..., compiler_options=...)``): nothing
global changes, and they only name CPU options, which other backends ignore. They
apply where the runtime's own jit is the outermost one: `runtime.forward` called inside
a user's ``jax.jit`` compiles with the user's options (same results, XLA's default
speed). A user who sets ``xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS`` keeps
their choice.
"""

from __future__ import annotations

import os

_YNN = "xla_cpu_experimental_ynn_fusion_type"
YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def compiler_options() -> dict[str, str]:
    """Options for ``jax.jit(..., compiler_options=...)``: YNNPACK for dots and
    reductions only, unless ``XLA_FLAGS`` already chooses what YNNPACK fuses."""
    if _YNN in os.environ.get("XLA_FLAGS", ""):
        return {}
    return {_YNN: YNN_FUSIONS}
