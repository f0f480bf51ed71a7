"""CLI errors as a user meets them: each names the file and what was expected.

Swapped cfg and weights suggest the fixed command; OS errors are worded for people;
library argument names (``percent=``, ``allow_partial=True``) come out as the
command's flags.
"""

from __future__ import annotations

import argparse
import errno
import shlex
from pathlib import Path

import pytest

import frontends
import ir
from darkslim.cli import main
from darkslim.cli_errors import describe_error, to_flags
from darkslim.testing import random_variables
from tests.conftest import cfg_path, write_network
from tests.test_prune import at_size


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """yolov3-tiny at 64 px as tiny.cfg + tiny.weights."""
    root = tmp_path_factory.mktemp("tiny")
    graph = at_size(ir.parse_cfg(cfg_path("yolov3-tiny.cfg")), 64)
    cfg, weights = write_network(root, "tiny", graph, random_variables(graph, seed=1))
    return root, str(cfg), str(weights)


def error_of(argv, capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return " ".join(captured.err.split())


# -- swapped arguments -------------------------------------------------------------------

@pytest.mark.parametrize("command,extra", [
    ("prune", ["--percent", "0.5", "--out", "OUT"]),
    ("run", ["--input", "x.npy", "--out", "o.npz"]),
    ("convert", ["out.msgpack"]),
])
def test_weights_where_the_cfg_belongs_suggests_the_swap(tiny, capsys, command, extra):
    root, cfg, weights = tiny
    err = error_of([command, weights, cfg, *extra], capsys)
    assert f"{weights}: a binary file" in err
    assert "expected a Darknet cfg, text starting with [net]" in err
    assert "'utf-8' codec" not in err
    fixed = shlex.join([command, cfg, weights, *extra])
    assert f"Did you mean: darkslim {fixed}" in err


def test_a_cfg_where_the_weights_belong_is_named(tiny, tmp_path, capsys):
    root, cfg, weights = tiny
    named_weights = tmp_path / "model.weights"  # a cfg, saved under a weights name
    named_weights.write_text(Path(cfg).read_text())
    err = error_of(["convert", cfg, str(named_weights), str(tmp_path / "o.msgpack")],
                   capsys)
    assert (f"{named_weights}: a Darknet cfg (text with a [net] section), not a .weights "
            "file: expected binary weights") in err


def test_cfg_given_twice_names_the_weights_suffixes(tiny, capsys):
    root, cfg, weights = tiny
    err = error_of(["convert", cfg, cfg, "o.msgpack"], capsys)
    assert f"{cfg}: unknown weights suffix '.cfg': expected .weights" in err
    assert "Did you mean" not in err  # both are cfgs: no swap to suggest


# -- OS errors ---------------------------------------------------------------------------

def test_missing_cfg(tmp_path, capsys):
    err = error_of(["info", str(tmp_path / "nope.cfg")], capsys)
    assert err == (f"error: {tmp_path / 'nope.cfg'}: no such file: MODEL.cfg expects a "
                   "Darknet cfg, text starting with [net]")


@pytest.mark.parametrize("command", ["prune", "convert", "info"])
def test_missing_weights(tiny, tmp_path, capsys, command):
    root, cfg, weights = tiny
    missing = str(tmp_path / "nope.weights")
    argv = {"prune": ["prune", cfg, missing, "--percent", "0.5", "--out", str(tmp_path)],
            "convert": ["convert", cfg, missing, str(tmp_path / "o.pt")],
            "info": ["info", cfg, "--weights", missing]}[command]
    err = error_of(argv, capsys)
    flag = {"prune": "WEIGHTS", "convert": "IN", "info": "--weights"}[command]
    assert err.startswith(f"error: {missing}: no such file: {flag} expects ")
    assert ".weights" in err and ".pt/.pth or .msgpack" in err
    assert "Errno" not in err


def test_out_on_an_existing_file(tiny, tmp_path, capsys):
    root, cfg, weights = tiny
    (tmp_path / "taken").write_text("mine")
    err = error_of(["prune", cfg, weights, "--percent", "0.5", "--no-check", "--out",
                    str(tmp_path / "taken")], capsys)
    assert err == (f"error: {tmp_path / 'taken'}: a file is in the way (it exists and is "
                   "not a folder): --out expects a folder (created when missing) for "
                   "pruned.cfg, pruned.weights and report.json")
    assert (tmp_path / "taken").read_text() == "mine"


def test_output_in_a_missing_folder(tiny, tmp_path, capsys):
    root, cfg, weights = tiny
    out = tmp_path / "no" / "such" / "m.msgpack"
    err = error_of(["convert", cfg, weights, str(out)], capsys)
    assert err.startswith(f"error: {out}: its folder does not exist: OUT expects the "
                          "weights file to write")


def test_a_folder_where_a_file_belongs(tiny, tmp_path, capsys):
    root, cfg, weights = tiny
    err = error_of(["info", str(tmp_path)], capsys)
    assert f"{tmp_path}: " in err and "MODEL.cfg expects a Darknet cfg" in err


def test_permission_denied_is_worded_for_people(tmp_path):
    # (the tests may run as root, where chmod does not deny: the error is built here)
    args = argparse.Namespace(command="prune", cfg="m.cfg", weights="m.weights",
                              out=str(tmp_path / "out"), percent=0.5)
    inside = tmp_path / "out" / ".pruned.cfg.tmp"
    exc = PermissionError(errno.EACCES, "Permission denied", str(inside))
    assert describe_error(exc, args) == (
        f"{inside}: permission denied: cannot write it (in --out {tmp_path / 'out'}); "
        "--out expects a folder (created when missing) for pruned.cfg, pruned.weights "
        "and report.json: check the permissions or choose another path")
    exc = PermissionError(errno.EACCES, "Permission denied", "m.weights")
    assert describe_error(exc, args).startswith(
        "m.weights: permission denied: cannot read it; WEIGHTS expects a weights file")


# -- library arguments as flags ----------------------------------------------------------

PRUNE_ARGS = argparse.Namespace(command="prune", cfg="m.cfg", weights="m.weights",
                                percent=None, threshold=None, layers=None,
                                layer_threshold=None, mode="regular", ignore=(),
                                min_keep=0.01, round_to=1, allow_partial=False, out="d")


@pytest.mark.parametrize("message,expected", [
    ("percent=1.5: expected 0 <= percent < 1", "--percent 1.5: expected 0 <= percent < 1"),
    ("slim-channels: ignore=(84, 96): layer 84 is a [yolo]",
     "slim-channels: --ignore 84,96: layer 84 is a [yolo]"),
    ("min_keep=2.0: expected a fraction in [0, 1]", "--min-keep 2.0: expected a fraction "
     "in [0, 1]"),
    ("m.weights: holds 0 of 2 convs; pass allow_partial=True",
     "m.weights: holds 0 of 2 convs; pass --allow-partial"),
    ("remove-blocks: n=30: expected 0 <= n <= 23", "remove-blocks: --layers 30: expected "
     "0 <= n <= 23"),
    ("remove-blocks: threshold=nan: expected a finite number",
     "remove-blocks: --layer-threshold nan: expected a finite number"),
    ("slim-channels (after remove-blocks): threshold=-1: expected >= 0",
     "slim-channels (after remove-blocks): --threshold -1: expected >= 0"),
    ("pipeline remove-blocks{n=8},slim-channels{percent=0.5}: n=30",
     "pipeline remove-blocks{n=8},slim-channels{percent=0.5}: --layers 30"),
    ("the percent of channels", "the percent of channels"),
])
def test_library_arguments_become_flags(message, expected):
    assert to_flags(message, PRUNE_ARGS) == expected


def test_flags_only_when_the_command_has_them():
    run_args = argparse.Namespace(command="run", cfg="m.cfg", weights="m.pt", bn_eps=None)
    message = "m.pt: keys of both layouts: pass layout='ultralytics' or layout='erik'"
    assert to_flags(message, run_args) == message  # run has no --layout
    convert_args = argparse.Namespace(command="convert", layout=None, bn_eps=None)
    assert to_flags(message, convert_args) == (
        "m.pt: keys of both layouts: pass --layout ultralytics or --layout erik")
    piped = argparse.Namespace(**vars(PRUNE_ARGS), pipeline="slim-channels{percent=1.5}")
    assert to_flags("percent=1.5: expected", piped) == "percent=1.5: expected"


def test_prune_percent_out_of_range_names_the_flag(tiny, tmp_path, capsys):
    root, cfg, weights = tiny
    err = error_of(["prune", cfg, weights, "--percent", "1.5", "--out", str(tmp_path)],
                   capsys)
    assert "--percent 1.5: expected 0 <= percent < 1" in err
    assert "percent=" not in err


def test_ambiguous_torch_layout_names_the_flag(tiny, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    root, cfg, weights = tiny
    t = torch.zeros(1)
    torch.save({"module_list.0.Conv2d.weight": t, "module_list.0.conv_0.weight": t},
               tmp_path / "both.pt")
    err = error_of(["convert", cfg, str(tmp_path / "both.pt"), str(tmp_path / "o.pt")],
                   capsys)
    assert f"{tmp_path / 'both.pt'}: keys of both layouts" in err
    assert "pass --layout ultralytics or --layout erik" in err
    assert frontends.format_of(tmp_path / "both.pt") == "torch"


def test_an_input_that_is_not_npy(tiny, tmp_path, capsys):
    root, cfg, weights = tiny
    (tmp_path / "x.npy").write_bytes(b"not an array")
    err = error_of(["run", cfg, weights, "--input", str(tmp_path / "x.npy"), "--out",
                    str(tmp_path / "o.npz")], capsys)
    assert err.startswith(f"error: {tmp_path / 'x.npy'}: not a readable .npy array")
    assert err.endswith("expected float32 NCHW in [0, 1]")
