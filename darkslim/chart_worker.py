"""``python -m darkslim.chart_worker``: the process behind `darkslim.report.ChartProcess`.

It imports matplotlib first, then reads one pickled ``(plot, args)`` request from
stdin, draws it and exits 0; a failure exits 1 with the traceback on stderr.
"""

from __future__ import annotations

import pickle
import sys


def main() -> int:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401

    import darkslim.report  # noqa: F401  (what the requests' functions live in)

    request = sys.stdin.buffer.read()
    if not request:  # the parent had nothing to draw
        return 0
    plot, args = pickle.loads(request)
    plot(*args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
