"""darkslim: network slimming for Darknet YOLO networks, as a compiler of pure passes."""

__version__ = "0.1.0"
