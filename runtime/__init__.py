"""darkslim's runtime: execute a Darknet `ir.Graph` with JAX/Flax (NHWC)."""

from passes.diagnostics import sparsity_metrics
from runtime.checkpoint import Checkpointer, TrainStateError
from runtime.data import (
                           NO_AUGMENT,
                           Augment,
                           Batch,
                           DataConfig,
                           DataError,
                           Dataset,
                           iterate_batches,
                           load_dataset,
                           prefetch,
                           read_data_config,
)
from runtime.image import ImageError, letterbox, load_image
from runtime.loss import LossConfig, LossParts, yolo_loss
from runtime.metrics import (
                           ClassMetrics,
                           EvalResult,
                           coco_map,
                           evaluate,
                           evaluate_detections,
                           nms,
                           postprocess,
)
from runtime.model import (
                           ACTIVATIONS,
                           DarknetModule,
                           ForwardOut,
                           UnsupportedLayerError,
                           check_supported,
                           decode_yolo,
                           forward,
                           init_variables,
)
from runtime.parallel import data_mesh, initialize_distributed
from runtime.sparsity import bn_l1, bn_l1_auto, gamma_mask, sparsity, sparsity_schedule
from runtime.train import TrainConfig, TrainResult, fit, make_optimizer, make_train_step
