"""darkslim's runtime: execute a Darknet `ir.Graph` with JAX/Flax (NHWC)."""

from runtime.image import ImageError, letterbox, load_image
from runtime.detect import (Detected, NmsRule, Placement, darknet_letterbox, darknet_resize,
                            detect_image, prepare_image, select_detections, to_image_boxes)
from runtime.model import (ACTIVATIONS, DarknetModule, ForwardOut, UnsupportedLayerError,
                           check_supported, decode_heads, decode_yolo, forward,
                           init_variables)
from runtime.data import (NO_AUGMENT, Augment, Batch, DataConfig, DataError, Dataset,
                          iterate_batches, load_dataset, prefetch, read_data_config)
from runtime.terms import LossTerm, LossTermError, StepOutputs, term_names
from runtime.loss import LossConfig, LossParts, YoloLoss, yolo_loss, yolo_terms
from runtime.metrics import (ClassMetrics, EvalResult, coco_map, evaluate,
                             evaluate_detections, evaluate_heads, evaluate_predict, nms,
                             postprocess)
from runtime.sparsity import bn_l1, bn_l1_auto, gamma_mask, sparsity, sparsity_schedule
from runtime.checkpoint import Checkpointer, TrainStateError
from passes.diagnostics import sparsity_metrics
from runtime.parallel import data_mesh, initialize_distributed
from runtime.train import (TrainConfig, TrainResult, TrainStep, fit, make_optimizer,
                           make_train_step)
