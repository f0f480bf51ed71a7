"""Datasets and batches, the public import path of both (`runtime.dataset` reads
Darknet ``.data``/list/label files; `runtime.batches` letterboxes, augments, batches
and prefetches)."""

from runtime.batches import (
    NO_AUGMENT,
    Augment,
    Batch,
    Prefetch,
    iterate_batches,
    prefetch,
    prepare_sample,
    read_image,
)
from runtime.dataset import (
    DataConfig,
    DataError,
    Dataset,
    Sample,
    label_path,
    load_dataset,
    read_data_config,
    read_labels,
    read_list,
)

__all__ = ["NO_AUGMENT", "Augment", "Batch", "DataConfig", "DataError", "Dataset",
           "Prefetch", "Sample", "iterate_batches", "label_path", "load_dataset", "prefetch",
           "prepare_sample", "read_data_config", "read_image", "read_labels", "read_list"]
