"""Training-state checkpoints with Orbax: asynchronous, atomic, multi-process safe.

A checkpoint is the whole `runtime.step.TrainState` (params, batch stats, optimiser
state including the sparsity controller's, step) plus a JSON ``meta`` item: the epochs
completed (the data position: batches are a function of (seed, epoch, index)), the
seed, the per-epoch history and the best score. There is no PRNG key to keep: the step
draws no random numbers and augmentation is seeded by (seed, epoch, index).

Orbax writes each step into a temporary folder and renames it when every process has
finished (atomic: a run killed mid-save leaves the previous checkpoint as the latest),
while training goes on (asynchronous). Every process calls `Checkpointer.save`; each
writes the shards it owns and process 0 the metadata. Arrays are restored onto the
shardings of the current mesh, so a run saved by N processes resumes on M.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

CHECKPOINTS = "checkpoints"


class TrainStateError(ValueError):
    """A training checkpoint that cannot be restored into this run: the message names
    the checkpoint folder, what was found and what was expected."""


def _abstract(tree, mesh: Mesh | None):
    sharding = (NamedSharding(mesh, PartitionSpec()) if mesh is not None
                else SingleDeviceSharding(jax.local_devices()[0]))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        np.shape(a), getattr(a, "dtype", None) or np.asarray(a).dtype, sharding=sharding),
        tree)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the array leaves of a state dict (or its Orbax metadata)."""
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in leaves}


class Checkpointer:
    """The checkpoints of one run folder, ``directory`` (``out/checkpoints``), one per
    epoch, the newest ``keep`` kept. Use it as a context manager, so the last
    asynchronous save is waited for::

        with Checkpointer(out / "checkpoints") as ckpt:
            ckpt.save(epoch, state, {"history": history})
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2,
                 asynchronous: bool = True) -> None:
        import orbax.checkpoint as ocp  # lazily: `import runtime` stays light

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=asynchronous)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    @staticmethod
    def find_latest(directory: str | os.PathLike) -> int | None:
        """The newest complete checkpoint's epoch in ``directory`` without opening a
        manager (Orbax renames a step's folder to its number once complete)."""
        folder = Path(directory)
        steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] \
            if folder.is_dir() else []
        return max(steps, default=None)

    def latest_epoch(self) -> int | None:
        """The newest complete checkpoint's epoch count, or None."""
        return self._manager.latest_step()

    def save(self, epoch: int, state: Any, meta: dict) -> None:
        """Start writing ``state`` (a pytree of arrays) and ``meta`` (JSON-able) as
        epoch ``epoch``; returns before the bytes are on disk (`wait` waits)."""
        ocp, tree = self._ocp, flax.serialization.to_state_dict(state)
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))

    def restore(self, template: Any, mesh: Mesh | None = None,
                epoch: int | None = None) -> tuple[Any, dict]:
        """The state of ``epoch`` (default: the latest) in the structure of
        ``template``, replicated over ``mesh`` (or on the first local device), and its
        meta.

        Raises:
            TrainStateError: no checkpoint, or one of another network, optimiser or
                sparsity setting (the trees or shapes differ).
        """
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise TrainStateError(f"{self.directory}: no complete checkpoint to resume "
                                  "from: expected a folder written by `darkslim train`")
        ocp, target = self._ocp, _abstract(flax.serialization.to_state_dict(template), mesh)
        # Compare with what is on disk before reading anything: a refused restore must
        # not leave Orbax's readers half-way.
        try:
            found = self._manager.item_metadata(epoch)["state"]
        except (KeyError, ValueError, TypeError, FileNotFoundError) as exc:
            raise TrainStateError(f"{self.directory}/{epoch}: unreadable checkpoint "
                                  f"metadata: {str(exc)[:300]}") from exc
        want, have = _shapes(target), _shapes(getattr(found, "tree", found))
        if want.keys() != have.keys():
            missing = sorted(want.keys() - have.keys())[:3]
            extra = sorted(have.keys() - want.keys())[:3]
            raise TrainStateError(
                f"{self.directory}/{epoch}: the saved training state has another "
                f"structure (missing {missing}, unexpected {extra}): expected a "
                "checkpoint of this cfg with the same optimiser and sparsity options")
        wrong = [(k, have[k], want[k]) for k in want if have[k] != want[k]]
        if wrong:
            key, found_shape, expected = wrong[0]
            raise TrainStateError(f"{self.directory}/{epoch}: {key} has shape "
                                  f"{found_shape}, expected {expected}: expected a "
                                  "checkpoint of the same network")
        restored = self._manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        state = flax.serialization.from_state_dict(template, restored["state"])
        return state, dict(restored["meta"])

    def wait(self) -> None:
        """Block until the last `save` is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
