"""`darkslim train` on several processes (jax.distributed over loopback, gloo on CPU):
two processes with one CPU device each train to the same weights and logs as one
process with two devices, and a run whose process dies mid-epoch resumes, after both
are restarted (or resumed by one process with two devices), to the same result as the
uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ir
from darkslim.commands.synth import synth_cfg_path
from frontends import load_variables
from runtime.synth import write_synth

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds for one run of the processes; a hang fails, never blocks CI

# The CLI, with a hook that kills process 1 after step DIE_AT_STEP (a crash mid-epoch),
# once the checkpoint of epoch DIE_AFTER_CHECKPOINT is complete on disk.
_CLI = """
import os, sys, time
from pathlib import Path
die = int(os.environ.get("DIE_AT_STEP", "0"))
if die:
    import jax
    import runtime.train as train
    real_fit = train.fit

    def fit(*args, on_step=None, **kwargs):
        done = Path(kwargs["out_dir"]) / "checkpoints" / os.environ["DIE_AFTER_CHECKPOINT"]

        def step(info):
            on_step(info)
            if info.step >= die and jax.process_index() == 1:
                for _ in range(600):
                    if done.exists():
                        break
                    time.sleep(0.1)
                os._exit(17)
        return real_fit(*args, on_step=step, **kwargs)

    train.fit = fit
from darkslim.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = write_synth(root, train=16, valid=4, size=64, seed=0,
                       cfg=ir.parse_cfg(synth_cfg_path()))
    graph = ir.narrow(ir.parse_cfg(data.cfg), 4, min_filters=4)
    (root / "tiny.cfg").write_text(ir.write_cfg(graph))
    return root, data.data, root / "tiny.cfg", graph


def _args(tiny, out: Path, *extra: str) -> list[str]:
    _, data, cfg, _ = tiny
    return ["train", str(data), str(cfg), "--out", str(out), "--epochs", "2", "--batch", "4",
            "--no-eval", "--no-augment", "--precise-bn", "1", "--lr", "0.03",
            "--sparsity", "auto", "--s-init", "0.05", "--quiet", *extra]


def _env(devices: int, **extra: str) -> dict:
    flags = "--xla_backend_optimization_level=0"
    if devices > 1:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_",
                                                                     "OMPI_"))}
    return {**env, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
            **extra}


def _run(tiny, out: Path, processes: int, devices: int = 1, *, die_at: int = 0,
         resume: bool = False) -> list[int]:
    """Run the CLI in ``processes`` processes of ``devices`` CPU devices each; return
    their exit codes. With ``die_at``, process 1 dies after that step and process 0
    is then killed (it would wait for its peer until the heartbeat timeout)."""
    port = _free_port()
    extra = ["--resume"] if resume else []
    env = _env(devices, DIE_AT_STEP=str(die_at), DIE_AFTER_CHECKPOINT="1")
    procs = []
    for index in range(processes):
        cluster = (["--coordinator", f"127.0.0.1:{port}", "--num-processes",
                    str(processes), "--process-id", str(index)] if processes > 1 else [])
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _CLI, *_args(tiny, out, *extra, *cluster)], env=env,
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True))
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if die_at and procs[1].poll() is not None:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        logs = [p.communicate()[0] for p in procs]
    codes = [p.returncode for p in procs]
    if not die_at:
        assert codes == [0] * processes, "\n".join(log[-3000:] for log in logs)
    else:
        assert codes[1] == 17, logs[1][-3000:]
    return codes


def _weights(tiny, out: Path) -> list[np.ndarray]:
    import jax

    variables = load_variables(tiny[3], out / "last.weights").variables
    return [np.asarray(a) for a in jax.tree.leaves(variables)]


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    _run(tiny, out / "local", processes=1, devices=2)
    _run(tiny, out / "two", processes=2)
    return out


def test_two_processes_train_like_two_local_devices(tiny, runs):
    for a, b in zip(_weights(tiny, runs / "local"), _weights(tiny, runs / "two")):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    local = (runs / "local" / "metrics.jsonl").read_text()
    two = (runs / "two" / "metrics.jsonl").read_text()
    assert local == two
    rows = [json.loads(line) for line in two.splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [4, 8]
    assert rows[0]["left_out"] == 0
    # Only process 0 wrote: one set of files, the checkpoints of both epochs.
    assert sorted(p.name for p in (runs / "two" / "checkpoints").iterdir()) == ["1", "2"]


def test_a_process_killed_mid_epoch_resumes_to_the_same_result(tiny, runs, tmp_path):
    out = tmp_path / "killed"
    _run(tiny, out, processes=2, die_at=6)  # epoch 2 is steps 5..8
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1]
    # The same crash, resumed by one process with two devices: another process count.
    other = tmp_path / "other"
    shutil.copytree(out, other)
    _run(tiny, out, processes=2, resume=True)
    _run(tiny, other, processes=1, devices=2, resume=True)
    for folder in (out, other):
        for a, b in zip(_weights(tiny, runs / "two"), _weights(tiny, folder)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
        assert ((folder / "metrics.jsonl").read_text()
                == (runs / "two" / "metrics.jsonl").read_text())
