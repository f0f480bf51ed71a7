"""Data parallelism over every device of every process (`jax.distributed`).

One global mesh with a ``data`` axis spans all devices of all processes
(`data_mesh`). Each process loads only its rows of every batch (`process_rows`, passed
to `runtime.batches.iterate_batches`) and `global_batch` assembles the global array
from those local rows; the state is replicated (`replicate`). The step compiled over
that mesh is the same program whether the devices sit in one process
(``--xla_force_host_platform_device_count=2``) or in two on two hosts, so both give the
same weights.

`initialize_distributed` starts `jax.distributed` when asked to: explicitly (a
coordinator address, or the ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/
``JAX_PROCESS_ID`` environment variables), or when a SLURM, Open MPI or Kubernetes
(indexed job) launch with more than one task is detected (JAX's own cluster detection
then fills in the rest). On CPU the cross-process collectives run over gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@dataclass(frozen=True, slots=True)
class Cluster:
    """How this process joined (or did not join) a multi-process run."""

    process_index: int
    process_count: int
    source: str  # "single", "explicit", "environment", "slurm", "openmpi", "kubernetes"


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def detect_launcher(environ=os.environ) -> str | None:
    """The multi-process launcher this process runs under, if any: ``slurm`` (more than
    one task in the step), ``openmpi`` (more than one rank), ``kubernetes`` (an indexed
    job with more than one completion), else None."""
    def more_than_one(*names: str) -> bool:
        return any(int(environ.get(n) or 1) > 1 for n in names)

    if "SLURM_JOB_ID" in environ and more_than_one("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in environ or "PMIX_SERVER_URI2" in environ:
        if more_than_one("OMPI_COMM_WORLD_SIZE"):
            return "openmpi"
    if "KUBERNETES_SERVICE_HOST" in environ and "JOB_COMPLETION_INDEX" in environ:
        if more_than_one("JAX_NUM_PROCESSES"):
            return "kubernetes"
    return None


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, timeout_s: int = 300
                           ) -> Cluster:
    """Start `jax.distributed` when this run is multi-process; return where we stand.

    Must run before anything touches a JAX device. Explicit arguments win over the
    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` variables,
    which win over launcher detection (`detect_launcher`). With none of them this is a
    single-process run and nothing is started.

    Raises:
        ValueError: a coordinator without the process count and id (or the reverse),
            or a process id outside ``[0, num_processes)``.
    """
    source = "explicit" if coordinator or num_processes or process_id is not None else None
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _int_env(
        "JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _int_env("JAX_PROCESS_ID")
    launcher = detect_launcher()
    if coordinator is None and launcher is None:
        if num_processes not in (None, 1):
            raise ValueError(f"--num-processes {num_processes} without --coordinator "
                             "HOST:PORT: expected the address of process 0")
        return Cluster(0, 1, "single")
    if launcher is None and (num_processes is None or process_id is None):
        raise ValueError(f"--coordinator {coordinator}: expected --num-processes N and "
                         "--process-id I too (or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
    if num_processes is not None and process_id is not None \
            and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id}: expected 0 <= id < --num-processes "
                         f"{num_processes}")
    # Cross-process collectives of CPU devices; GPUs and TPUs use their own (NCCL, ICI).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)
    return Cluster(jax.process_index(), jax.process_count(),
                   source or ("environment" if launcher is None else launcher))


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every
    process, in `jax.devices` order)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicate(tree, mesh: Mesh):
    """``tree`` on every device of ``mesh`` (host values must be equal in every process)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def process_rows(mesh: Mesh, batch_size: int) -> tuple[int, int]:
    """The rows ``(start, stop)`` of a global batch that this process's devices hold
    when the batch is split over the mesh's ``data`` axis: a contiguous slab, and the
    slabs of all processes partition ``range(batch_size)``.

    Raises:
        ValueError: the batch does not split evenly over the devices.
    """
    size = mesh.shape["data"]
    if batch_size % size:
        raise ValueError(f"batch of {batch_size} does not split over {size} devices: "
                         "choose a batch size that is a multiple of the device count")
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    slices = [s for s in sharding.addressable_devices_indices_map((batch_size,)).values()
              if s is not None]
    starts = sorted(s[0].start or 0 for s in slices)
    stops = sorted(s[0].stop if s[0].stop is not None else batch_size for s in slices)
    return starts[0], stops[-1]


def global_batch(local, mesh: Mesh, batch_size: int):
    """The global array, split over the ``data`` axis, of which ``local`` holds this
    process's rows (`process_rows`)."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.make_array_from_process_local_data(sharding, local,
                                                  (batch_size, *local.shape[1:]))


def shard_batch(array, mesh: Mesh):
    """Split a whole batch held by this (single) process over the mesh's ``data`` axis."""
    size = mesh.shape["data"]
    if array.shape[0] % size:
        raise ValueError(f"batch of {array.shape[0]} does not split over {size} devices: "
                         "choose a batch size that is a multiple of the device count")
    return jax.device_put(array, NamedSharding(mesh, PartitionSpec("data")))


def to_host(tree):
    """numpy copies of a tree of (replicated) arrays, in any process."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0))
                        if isinstance(a, jax.Array) else np.asarray(a), tree)
