"""`darkslim train` with LossConfig overrides from the environment: OBJ_GAIN, IOU_THRESH, IGNORE (issue 21 experiments).

Usage: IOU_THRESH=0.213 PYTHONPATH=. python benchmarks/train_with_loss.py train DATA.data MODEL.cfg ..."""
import os, sys
import runtime.train as rt
from runtime.loss import LossConfig, yolo_terms
gain = float(os.environ.get("OBJ_GAIN", "1"))
it = os.environ.get("IOU_THRESH"); ig = os.environ.get("IGNORE")
rt.yolo_terms = lambda config: yolo_terms(LossConfig(obj_gain=gain, iou_thresh=float(it) if it else None, ignore_thresh=float(ig) if ig else None))
from darkslim.cli import main
sys.exit(main())
