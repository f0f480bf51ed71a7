"""`darkslim info` explains, for every layer kind, why a conv is not prunable."""

from __future__ import annotations

from pathlib import Path

import pytest

import ir
import passes
from darkslim.cli import main
from darkslim.commands.info import short_reason

CFG = Path(__file__).parent / "cfg"
HEAD = ("[net]\nwidth=16\nheight=16\nchannels=3\n"
        "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky\n")
GATE = "[convolutional]\nbatch_normalize=1\nfilters={c}\nsize=1\nactivation=logistic\n"


@pytest.mark.parametrize("body,layer,mode,short", [
    ("[maxpool]\nmaxpool_depth=1\nout_channels=2\n", 0, "regular", "maxpool_depth"),
    ("[reorg3d]\nstride=2\n", 0, "regular", "reorg3d"),
    ("[reorg]\nstride=2\n", 0, "regular", "reorg"),
    ("[softmax]\n", 0, "regular", "across-channel op"),
    ("[avgpool]\n[softmax]\n", 0, "regular", "across-channel op"),
    (GATE.format(c=1) + "[scale_channels]\nfrom=-2\nscale_wh=1\n", 0, "regular",
     "per-pixel scale"),
    (GATE.format(c=8) + "[sam]\nfrom=-2\n", 0, "regular", "coupled group"),
    ("[avgpool]\n" + GATE.format(c=8) + "[scale_channels]\nfrom=-3\n", 0, "regular",
     "coupled group"),
    ("[route]\nlayers=-1,-1\n" + GATE.format(c=16) + "[sam]\nfrom=-2\n", 0, "shortcut",
     "partial sam"),
    ("[route]\nlayers=-1,-1\n[avgpool]\n" + GATE.format(c=16)
     + "[scale_channels]\nfrom=-3\n", 0, "shortcut", "partial scale_channels"),
    ("[convolutional]\nbatch_normalize=1\nfilters=4\nsize=1\n[route]\nlayers=-1,-2\n"
     "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", 0, "regular", "route groups"),
    ("[convolutional]\nbatch_normalize=1\nfilters=6\nsize=1\nactivation=linear\n"
     "[region]\nanchors=1,1\nclasses=1\nnum=1\n", 1, "regular", "feeds region"),
    ("[convolutional]\nbatch_normalize=1\nfilters=10\nsize=1\nactivation=linear\n"
     "[Gaussian_yolo]\nmask=0\nanchors=1,1\nclasses=1\nnum=1\n", 1, "regular",
     "feeds Gaussian_yolo"),
    ("[crnn]\noutput=4\n", 0, "regular", "unsupported layer"),
    (GATE.format(c=8) + "[sam]\nfrom=-2\nactivation=mish\n", 0, "shortcut",
     "unsupported layer"),
    ("[connected]\noutput=4\n[softmax]\n", 1, "regular", "no BN"),
    ("[connected]\nbatch_normalize=1\noutput=4\n[softmax]\n", 1, "regular",
     "across-channel op"),
])
def test_each_kind_has_a_short_reason(body, layer, mode, short):
    analysis = passes.analyze_prunability(ir.parse_cfg(HEAD + body), mode)
    blocker = analysis.code(layer)
    assert blocker is not None, analysis.reason(layer)
    assert short_reason(blocker) == short, analysis.reason(layer)


def test_pass_through_kinds_leave_convs_prunable():
    for body in ("[dropout]\n", "[local_avgpool]\nsize=2\nstride=1\n", "[crop]\n"
                 "crop_width=8\ncrop_height=8\n", "[avgpool]\n[connected]\noutput=4\n"):
        graph = ir.parse_cfg(HEAD + body + "[convolutional]\nfilters=6\nsize=1\n"
                             "activation=linear\n[yolo]\nmask=0\nanchors=2,2\nclasses=1\n"
                             if "connected" not in body else HEAD + body)
        assert passes.analyze_prunability(graph).reason(0) is None, body


@pytest.mark.parametrize("name,rows", [
    ("kinds-yolov2.cfg", ["no: reorg", "no: no BN", "region"]),
    ("kinds-se.cfg", ["no: per-pixel scale", "no: no BN", "1 of 6 convs"]),
    ("kinds-sam-reorg3d.cfg", ["no: reorg3d", "no: reorg ", "0 of 5 convs"]),
    ("kinds-classifier.cfg", ["3 of 4 convs/connected", "connected"]),
    ("kinds-csp-newcoords.cfg", ["5 of 7 convs"]),
])
def test_info_shows_the_reasons(capsys, name, rows):
    assert main(["info", str(CFG / name), "--mode", "shortcut"]) == 0
    printed = capsys.readouterr().out
    for row in rows:
        assert row in printed, printed


def test_every_reason_code_has_table_words():
    from darkslim.commands.info import _WORDS
    from passes.analysis import BlockReason

    assert set(_WORDS) == set(BlockReason)


@pytest.mark.parametrize("name", sorted(p.name for p in CFG.glob("*.cfg")))
@pytest.mark.parametrize("mode", ["regular", "shortcut"])
def test_each_reason_has_a_code(name, mode):
    """The codes name exactly the convs the reasons name, and a conv coupled with a
    blocked one carries that one's code (the root cause, as its text says)."""
    analysis = passes.analyze_prunability(ir.parse_cfg(CFG / name), mode)
    assert [i for i, _ in analysis.codes] == [i for i, _ in analysis.reasons]
    for i, text in analysis.reasons:
        if text.startswith("coupled with layer "):
            root = int(text.split()[3].rstrip(":"))
            assert analysis.code(i) == analysis.code(root), text
