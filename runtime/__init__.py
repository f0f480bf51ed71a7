"""darkslim's runtime: execute a Darknet `ir.Graph` with JAX/Flax (NHWC)."""

from runtime.image import ImageError, letterbox, load_image
from runtime.model import (ACTIVATIONS, DarknetModule, ForwardOut, UnsupportedLayerError,
                           check_supported, decode_yolo, forward, init_variables)
