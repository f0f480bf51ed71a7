"""Multi-process plumbing without starting processes: each process's rows of a batch,
launcher detection, argument checks, and the runtime's layering (it imports nothing of
the frontends or the app, and no module of it is over 400 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ir
from darkslim.commands.synth import synth_cfg_path
from runtime.data import NO_AUGMENT, iterate_batches, load_dataset
from runtime.parallel import detect_launcher, initialize_distributed
from runtime.synth import write_synth

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("rows")
    data = write_synth(root, train=12, valid=1, size=32, seed=1,
                       cfg=ir.parse_cfg(synth_cfg_path()))
    return load_dataset(data.data, "train")


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([(4, 2), (4, 4), (6, 3), (12, 2)]), st.integers(0, 3))
def test_process_rows_partition_every_batch(dataset, sizes, epoch):
    batch, processes = sizes
    per = batch // processes
    whole = [b.indices.tolist() for b in iterate_batches(
        dataset, (32, 32), batch, seed=5, epoch=epoch, augment=NO_AUGMENT)]
    parts = [[b.indices.tolist() for b in iterate_batches(
        dataset, (32, 32), batch, seed=5, epoch=epoch, augment=NO_AUGMENT,
        rows=(p * per, (p + 1) * per))] for p in range(processes)]
    for step, indices in enumerate(whole):
        joined = sum((part[step] for part in parts), [])
        assert joined == indices  # no overlap, nothing missing, in the global order
    assert len(whole) == len(dataset) // batch
    assert sorted(sum(whole, [])) == sorted(set(sum(whole, [])))


def test_rows_outside_the_batch_are_refused(dataset):
    with pytest.raises(ValueError, match=r"rows=\(2, 6\)"):
        next(iterate_batches(dataset, (32, 32), 4, rows=(2, 6)))


def test_process_rows_of_a_single_process_is_the_whole_batch():
    from runtime.parallel import data_mesh, process_rows

    mesh = data_mesh()
    assert process_rows(mesh, 4 * mesh.shape["data"]) == (0, 4 * mesh.shape["data"])
    if mesh.shape["data"] > 1:
        with pytest.raises(ValueError, match="does not split"):
            process_rows(mesh, mesh.shape["data"] + 1)


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "slurm"),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "2"}, "slurm"),
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "2"},
     "openmpi"),
    ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "1"}, None),
    ({"KUBERNETES_SERVICE_HOST": "k", "JOB_COMPLETION_INDEX": "0",
      "JAX_NUM_PROCESSES": "3"}, "kubernetes"),
    ({"KUBERNETES_SERVICE_HOST": "k"}, None),
])
def test_detect_launcher(environ, expected):
    assert detect_launcher(environ) == expected


def test_single_process_starts_nothing(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    cluster = initialize_distributed()
    assert (cluster.process_index, cluster.process_count, cluster.source) == (0, 1, "single")


@pytest.mark.parametrize("args, message", [
    (("127.0.0.1:1234", None, None), "expected --num-processes N and --process-id I"),
    ((None, 2, 0), "--num-processes 2 without --coordinator"),
    (("127.0.0.1:1234", 2, 2), "--process-id 2: expected 0 <= id"),
])
def test_incomplete_cluster_arguments_are_refused(monkeypatch, args, message):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        initialize_distributed(*args)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(RUNTIME.glob("*.py")), ids=lambda p: p.name)
def test_runtime_imports_no_frontend_nor_app_and_stays_short(path):
    assert not _imports(path) & {"frontends", "darkslim"}, path.name
    lines = path.read_text().count("\n")
    assert lines <= 400, f"{path.name}: {lines} lines"
