"""Record Darknet's ``detector test`` boxes into darknet_detect_yolov3_tiny.json.

Not a test: run it by hand with a built AlexeyAB Darknet (CPU, ``make LIBSO=1 AVX=1
OPENMP=1``) to regenerate the oracle of tests/test_detect.py::

    python tests/data/record_darknet_detect.py /path/to/darknet-checkout COMMIT

It runs ``./darknet detector test cfg/coco.data CFG WEIGHTS PHOTO -ext_output
-dont_show [-letter_box] -out OUT.json`` on the five photos of ../shared/data/photos
(and on lossless PNG copies of OpenCV's decoding of them), then stores, per box, the
printed ``left_x top_y width height`` and the ``-out`` JSON's confidence and relative
coordinates. Nothing of Darknet is copied into this repository.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / ".." / "shared"
MODEL = SHARED / "models" / "yolov3-tiny-coco"
PHOTOS = ("dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "person.jpg")
PRINTED = re.compile(r"^(\w[\w ]*): (\d+)%\s+\(left_x:\s+(-?\d+)\s+top_y:\s+(-?\d+)\s+"
                     r"width:\s+(-?\d+)\s+height:\s+(-?\d+)\)", re.M)


def run_darknet(darknet: Path, image: Path, letter_box: bool, work: Path) -> list[dict]:
    out = work / "out.json"
    args = ["./darknet", "detector", "test", "cfg/coco.data", str(MODEL / "yolov3-tiny.cfg"),
            str(MODEL / "yolov3-tiny.weights"), str(image), "-ext_output", "-dont_show",
            "-out", str(out)] + (["-letter_box"] if letter_box else [])
    text = subprocess.run(args, cwd=darknet, capture_output=True, text=True,
                          check=True).stdout
    printed = [(m[1], int(m[2]), *map(int, m.group(3, 4, 5, 6)))
               for m in PRINTED.finditer(text)]
    h, w = cv2.imread(str(image)).shape[:2]
    rows = []
    for o in json.loads(out.read_text())[0]["objects"]:
        r = o["relative_coordinates"]
        left = round((r["center_x"] - r["width"] / 2) * w)
        top = round((r["center_y"] - r["height"] / 2) * h)
        # The printed line of this box: same class, corner and rounded percentage.
        match = [q for q in printed if q[0] == o["name"] and abs(q[2] - left) <= 1
                 and abs(q[3] - top) <= 1 and abs(q[1] - o["confidence"] * 100) <= 0.51]
        if len(match) != 1:
            raise SystemExit(f"{image}: cannot pair {o} with one printed line: {printed}")
        q = match[0]
        rows.append({"class_id": o["class_id"], "name": o["name"], "prob": o["confidence"],
                     "left_x": q[2], "top_y": q[3], "width": q[4], "height": q[5],
                     "relative": [r["center_x"], r["center_y"], r["width"], r["height"]]})
    if len(rows) != len(printed):
        raise SystemExit(f"{image}: {len(printed)} printed boxes, {len(rows)} in -out")
    return sorted(rows, key=lambda d: (d["class_id"], -d["prob"]))


def main(darknet: str, commit: str) -> None:
    sha = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    record: dict = {
        "about": "Boxes printed by AlexeyAB Darknet's `detector test` (CPU build) for "
                 "yolov3-tiny with the COCO weights on the five photos of "
                 "../shared/data/photos: the oracle of tests/test_detect.py, written by "
                 "tests/data/record_darknet_detect.py. Darknet itself is not part of "
                 "this repository.",
        "darknet_commit": commit,
        "darknet_repo": "https://github.com/AlexeyAB/darknet",
        "build": "make LIBSO=1 AVX=1 OPENMP=1 (GPU=0 CUDNN=0 OPENCV=0: images read with "
                 "stb_image, resized with src/image.c resize_image)",
        "commands": {
            "resize": "./darknet detector test cfg/coco.data yolov3-tiny.cfg "
                      "yolov3-tiny.weights PHOTO -ext_output -dont_show -out PHOTO.json",
            "letter_box": "./darknet detector test cfg/coco.data yolov3-tiny.cfg "
                          "yolov3-tiny.weights PHOTO -ext_output -dont_show -letter_box "
                          "-out PHOTO.json",
            "resize_png": f"as resize, on PHOTO.png = cv2.imwrite(cv2.imread(PHOTO)) "
                          f"(OpenCV {cv2.__version__}'s decoded pixels, lossless)",
            "letter_box_png": "as letter_box, on the same PNG"},
        "png_pixels_about": f"sha256 of cv2.imread(PHOTO).tobytes() (BGR, opencv-python "
                            f"{cv2.__version__}) when the PNG sets were recorded",
        "defaults": {"thresh": 0.25, "hier_thresh": 0.5, "nms": 0.45},
        "fields": "left_x top_y width height: printed by -ext_output (image pixels, "
                  "rounded); prob: the confidence of -out (6 decimals); relative: -out's "
                  "relative_coordinates center_x center_y width height",
        "sha256": {f: sha(MODEL / f) for f in ("yolov3-tiny.cfg", "yolov3-tiny.weights",
                                               "coco.names")},
        "sizes": {}, "resize": {}, "letter_box": {}, "resize_png": {},
        "letter_box_png": {}, "png_pixels": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in PHOTOS:
            photo = SHARED / "data" / "photos" / name
            bgr = cv2.imread(str(photo))
            record["sha256"][name] = sha(photo)
            record["sizes"][name] = [bgr.shape[1], bgr.shape[0]]
            record["png_pixels"][name] = hashlib.sha256(bgr.tobytes()).hexdigest()
            png = work / (photo.stem + ".png")
            cv2.imwrite(str(png), bgr)
            for mode, image, boxed in (("resize", photo, False), ("letter_box", photo, True),
                                       ("resize_png", png, False),
                                       ("letter_box_png", png, True)):
                record[mode][name] = run_darknet(Path(darknet), image, boxed, work)
    (HERE / "darknet_detect_yolov3_tiny.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
