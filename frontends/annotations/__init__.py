"""Annotation importers: Pascal VOC XML, COCO JSON and ultralytics YOLO folders, read into
frozen data (images with their size and boxes in pixels) and written as a Darknet
dataset (`write_darknet_dataset`); `to_coco` exports a Darknet dataset back to COCO.

The readers are pure apart from reading files; every bad input is an `AnnotationError`
naming the file and the element or index, or, with ``skip_bad``, a `Problem` in the
result. The CLI is ``darkslim data import {voc,coco,yolo}``.
"""

from frontends.annotations.coco import read_coco, to_coco
from frontends.annotations.darknet import (
                                           LINKS,
                                           WrittenDataset,
                                           check_out,
                                           label_line,
                                           write_darknet_dataset,
)
from frontends.annotations.errors import AnnotationError, Problem
from frontends.annotations.images import IMAGE_EXTENSIONS, image_size
from frontends.annotations.model import Annotations, Box, LabeledImage, check_box
from frontends.annotations.split import (
                                           Split,
                                           select_classes,
                                           split_by_fraction,
                                           split_by_lists,
                                           split_by_source,
)
from frontends.annotations.stats import QUANTILES, SplitStats, split_stats
from frontends.annotations.voc import read_voc
from frontends.annotations.yolo import read_yolo

__all__ = ["IMAGE_EXTENSIONS", "LINKS", "QUANTILES", "AnnotationError", "Annotations", "Box",
           "LabeledImage", "Problem", "Split", "SplitStats", "WrittenDataset", "check_box",
           "check_out", "image_size", "label_line", "read_coco", "read_voc", "read_yolo",
           "select_classes", "split_by_fraction", "split_by_lists", "split_by_source",
           "split_stats", "to_coco", "write_darknet_dataset"]
