"""Weights I/O speed: yolov3's 246 MB through every frontend, against raw file I/O.

Seeded random weights for the cfg are written once as a ``.weights`` file; then each
operation is timed (median of ``--repeats``): reading and writing ``.weights``, torch
``.pt`` (ultralytics layout, eps kept) and Flax ``.msgpack``. The reference, measured
in the same run on the same file, is the floor any reader/writer pays: one
``read_bytes`` and one ``write_bytes`` of the same number of bytes.

    .venv/bin/python benchmarks/weights_io.py [--cfg yolov3.cfg] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import frontends  # noqa: E402
import ir  # noqa: E402

DEFAULT_CFG = ROOT.parent / "shared" / "cfg" / "yolov3.cfg"


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default=str(DEFAULT_CFG))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    graph = ir.parse_cfg(args.cfg)
    n = sum(int(np.prod(s)) for s in frontends.variables.flat_shapes(graph).values())
    body = np.random.default_rng(0).random(n, dtype=np.float32)
    data = frontends.DarknetHeader(0, 2, 0, 0).to_bytes() + body.tobytes()
    del body
    r = args.repeats
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        d = Path(tmp)
        src = d / "in.weights"
        src.write_bytes(data)
        rows.append(("reference: read_bytes", timed(src.read_bytes, r)))
        rows.append(("reference: write_bytes", timed(lambda: (d / "raw").write_bytes(data),
                                                     r)))
        loaded = frontends.load_variables(graph, src)
        rows.append((".weights read",
                     timed(lambda: frontends.load_variables(graph, src), r)))
        rows.append((".weights write", timed(lambda: frontends.save_variables(
            graph, loaded.variables, d / "out.weights", header=loaded.header), r)))

        def weights_round_trip():
            lw = frontends.load_variables(graph, src)
            frontends.save_variables(graph, lw.variables, d / "out.weights",
                                     header=lw.header)

        rows.append((".weights read + write", timed(weights_round_trip, r)))
        assert (d / "out.weights").read_bytes() == data
        rows.append((".pt write (ultralytics)", timed(lambda: frontends.save_variables(
            graph, loaded.variables, d / "m.pt", bn_eps=1e-5), r)))
        rows.append((".pt read", timed(lambda: frontends.load_variables(
            graph, d / "m.pt", bn_eps=1e-5), r)))
        rows.append((".msgpack write", timed(lambda: frontends.save_variables(
            graph, loaded.variables, d / "m.msgpack"), r)))
        rows.append((".msgpack read", timed(lambda: frontends.load_variables(
            graph, d / "m.msgpack"), r)))

    table = Table(title=f"weights I/O, {Path(args.cfg).name}: {len(data) / 2**20:.0f} MiB, "
                        f"median of {r}")
    table.add_column("operation")
    table.add_column("seconds", justify="right")
    table.add_column("MiB/s", justify="right")
    for name, seconds in rows:
        mib = len(data) / 2**20 * (2 if "+" in name else 1)
        table.add_row(name, f"{seconds:.3f}", f"{mib / seconds:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
