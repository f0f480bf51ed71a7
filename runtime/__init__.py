"""darkslim's runtime: execute a Darknet `ir.Graph` with JAX/Flax (NHWC)."""

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

__all__ = [
    "ACTIVATIONS", "NO_AUGMENT", "Augment", "Batch", "Checkpointer", "ClassMetrics",
    "DarknetModule", "DataConfig", "DataError", "Dataset", "EvalResult", "ForwardOut",
    "ImageError", "LossConfig", "LossParts", "TrainConfig", "TrainResult", "TrainStateError",
    "UnsupportedLayerError", "bn_l1", "bn_l1_auto", "check_supported", "coco_map", "data_mesh",
    "decode_yolo", "evaluate", "evaluate_detections", "fit", "forward", "gamma_mask",
    "init_variables", "initialize_distributed", "iterate_batches", "letterbox", "load_dataset",
    "load_image", "make_optimizer", "make_train_step", "nms", "postprocess", "prefetch",
    "read_data_config", "sparsity", "sparsity_schedule", "yolo_loss",
]
