"""`darkslim train` with `LossConfig` overrides from the environment (issue 21 experiments).

OBJ_GAIN (default 1), IOU_THRESH and IGNORE (default: the cfg's keys). Usage::

    IOU_THRESH=0.213 PYTHONPATH=. python docs/objectness/train_with_loss.py train \\
        DATA.data MODEL.cfg --weights base/best.weights --epochs 3 --out DIR
"""

import os
import sys

import runtime.train as rt
from darkslim.cli import main
from runtime.loss import LossConfig, yolo_terms


def _env(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


CONFIG = LossConfig(obj_gain=_env("OBJ_GAIN") or 1.0, iou_thresh=_env("IOU_THRESH"),
                    ignore_thresh=_env("IGNORE"))
rt.yolo_terms = lambda config: yolo_terms(CONFIG)  # fit() calls yolo_terms(config.loss)

if __name__ == "__main__":
    sys.exit(main())
