"""`darkslim.report.ChartProcess`: `darkslim prune` draws channels.png in a process of
its own, so that importing matplotlib overlaps the prune on another core."""

from __future__ import annotations

import os
import sys

import pytest

import ir
import passes
from darkslim import report
from darkslim.testing import random_variables
from tests.conftest import cfg_path


@pytest.fixture(scope="module")
def slim_report():
    graph = ir.parse_cfg(cfg_path("yolov3-tiny.cfg"))
    result = passes.prune(graph, random_variables(graph, 0, sparsity=0.5),
                          passes.SlimChannels(percent=0.5))
    return result.report


PNG = b"\x89PNG\r\n\x1a\n"


def test_the_chart_is_drawn_in_another_process(tmp_path, slim_report, monkeypatch):
    drawn_here = []
    monkeypatch.setattr(report, "_figure", lambda *a: drawn_here.append(a))  # not used there
    with report.ChartProcess() as charts:
        charts.draw(report.plot_channels_kept, slim_report, tmp_path / "channels.png")
    assert (tmp_path / "channels.png").read_bytes()[:8] == PNG
    assert drawn_here == []


def test_a_failed_drawing_raises_with_the_workers_traceback(tmp_path):
    with pytest.raises(report.ChartError, match="(?s)plot_channels_kept.*AttributeError"):
        with report.ChartProcess() as charts:
            charts.draw(report.plot_channels_kept, None, tmp_path / "channels.png")
    assert not (tmp_path / "channels.png").exists()


def test_a_worker_that_died_before_drawing_is_reported(tmp_path, slim_report):
    with pytest.raises(report.ChartError, match="plot_channels_kept failed"):
        with report.ChartProcess() as charts:
            charts._process.kill()
            charts._process.wait()
            charts.draw(report.plot_channels_kept, slim_report, tmp_path / "channels.png")
    assert not (tmp_path / "channels.png").exists()


def test_an_error_in_the_work_stops_the_worker_and_propagates(tmp_path):
    with pytest.raises(ValueError, match="the work failed"):
        with report.ChartProcess() as charts:
            process = charts._process
            raise ValueError("the work failed")
    assert process.returncode is not None  # not left running


def test_one_cpu_draws_in_this_process(tmp_path, slim_report, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    with report.ChartProcess() as charts:
        assert charts._process is None
        charts.draw(report.plot_channels_kept, slim_report, tmp_path / "channels.png")
    assert (tmp_path / "channels.png").read_bytes()[:8] == PNG
    assert "matplotlib" in sys.modules
