"""The XLA compile options of the runtime's inference forward (`runtime.forward`).

On CPU, jaxlib 0.10's XLA hands convolutions to YNNPACK (``__ynn_fusion``). For
many of the shapes a Darknet detector has, that fusion runs on one thread: in
yolov3-416 at batch 8, nine of its 23 conv shapes (the 416², 208² layers and most
1×1 convs) kept one core of two busy, and the network ran at 0.84× torch eager.
Left to XLA's own convolution (Eigen, all cores) and with YNNPACK kept for dots,
the same forward ran 1.13× (batch 1) and 1.21× (batch 8) torch eager
(``benchmarks/README.md``, 2026-11-30). Heads moved by at most 2e-7.

The train step keeps XLA's default. With these options its yolov3-tiny step ran
1.22× torch instead of 1.11×, but the weight gradients of BatchNorm'd convs, sums
over every pixel that nearly cancel, came out up to 5.5% off a float64 step where the
default's were within 0.43% (leaf by leaf, relative to the largest update), and a
one-device step no longer equalled the same step sharded over two devices.

The options are per compilation (``jax.jit(..., compiler_options=...)``): nothing
global changes, and they only name CPU options, which other backends ignore. A user
who sets ``xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS`` keeps their choice.
"""

from __future__ import annotations

import os

_YNN = "xla_cpu_experimental_ynn_fusion_type"


def compiler_options() -> dict[str, str]:
    """Options for ``jax.jit(..., compiler_options=...)``: YNNPACK for dots only,
    unless ``XLA_FLAGS`` already chooses what YNNPACK fuses."""
    if _YNN in os.environ.get("XLA_FLAGS", ""):
        return {}
    return {_YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
