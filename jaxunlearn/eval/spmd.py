"""Evaluation across the processes of a multi-process run.

With several processes and a command mesh (``parallel.mesh.current()``), each evaluation batch
(generation, likelihood and NLL forwards) is one SPMD computation over the global batch
instead of every process computing every row:

- the parameters are placed on the mesh by the logical-axis rules once per evaluation
  (:class:`~jaxunlearn.eval.evaluate.Evaluator` does it; :func:`on_mesh`);
- a batch's rows are split over the mesh's ('data', 'fsdp') devices; the batch size is
  rounded up to a multiple of their number (the extra rows are copies whose outputs are
  dropped, as for a short final batch). When this process's devices hold one block of rows
  (``parallel.mesh.process_rows``), the process reads and preprocesses the images of those
  rows only (``ProcessRows``): LLaVA (one image per row) prepares those rows only; Qwen-VL /
  OneVision prepare the whole batch's text and image layout (grids, M-RoPE positions, slots,
  from the image sizes in the file headers), decode the images of their rows
  (``data.pipeline.row_images``) and join the pixels of every process when the batch is
  placed (``parallel.mesh.LocalUnits``). Otherwise every process prepares the whole batch and
  contributes its devices' shards;
- per-example outputs (answer log-probs and token counts, generated tokens) are gathered so
  that every process holds the same results; process 0 writes the report;
- the judge is asked by process 0 alone and its scores are sent to the others
  (``parallel.distributed.from_primary``).

Each batch-running call logs to stderr how many rows of every global batch this process's
devices computed (``eval NAME: rows R of G per batch in this process``). With one process
nothing here is used: evaluation runs on the default device as before.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import numpy as np

from jaxunlearn.parallel import distributed
from jaxunlearn.parallel import mesh as mesh_lib


@dataclasses.dataclass
class Spread:
    """How one evaluation call's batches go over the processes: ``batch_size`` global rows
    per batch, ``rows`` this process's block of them (None: every process prepares all),
    ``images`` the decoded images of those rows of the current batch when its pixel entry
    is batch-wide (set by the batching, ``eval.tasks._batches``), and the rows of each batch
    that this process's devices held (for the log)."""

    mesh: Any
    batch_size: int
    rows: tuple[int, int] | None
    held: list[int] = dataclasses.field(default_factory=list)
    images: Any = None  # data.pipeline.RowImages | None

    def local(self, inputs: dict) -> dict:
        """This process's part of host-prepared inputs: with ``rows``, a ``ProcessRows`` of
        those rows. Inputs of the whole global batch (``batch_size`` rows: Qwen-VL /
        OneVision, whose entries not indexed by row are the batch's) keep those entries whole
        and have the others cut to the rows; their pixels become this process's images
        (``images``), joined across processes when placed."""
        if self.rows is None:
            return inputs
        from jaxunlearn.modeling.model import shared_input_keys

        start, stop = self.rows
        if int(np.shape(inputs["input_ids"])[0]) == self.batch_size:
            shared = set(shared_input_keys(inputs))
            inputs = {k: v if k in shared else v[start:stop] for k, v in inputs.items()}
            if self.images is not None:
                inputs["pixel_values"] = self.images.local(inputs["pixel_values"])
        return mesh_lib.ProcessRows(inputs, start, stop, self.batch_size)

    def place(self, inputs: dict) -> dict:
        """Host-prepared inputs (this process's rows, or the global batch) as global arrays
        on the mesh, rows over ('data', 'fsdp') (:meth:`local`, then
        ``parallel.mesh.place_batch``: a collective)."""
        placed = mesh_lib.place_batch(self.local(inputs), self.mesh)
        ids = placed["input_ids"]
        n = ids.shape[0]
        self.held.append(len({i for s in ids.addressable_shards
                              for i in range(*s.index[0].indices(n))}))
        return placed

    def host(self, tree: Any) -> Any:
        """Numpy copies of (row-sharded) outputs, the whole global value in every process."""
        return distributed.to_host(tree)

    def log(self, name: str) -> None:
        """One stderr line: rows of every global batch that this process computed."""
        if not self.held:
            return
        lo, hi = min(self.held), max(self.held)
        share = str(lo) if lo == hi else f"{lo}-{hi}"
        print(f"eval {name}: rows {share} of {self.batch_size} per batch in this process "
              f"({len(self.held)} batches, process {jax.process_index()} of "
              f"{jax.process_count()})", file=sys.stderr, flush=True)


def spread_for(batch_size: int) -> Spread | None:
    """The :class:`Spread` of one evaluation call with batches of ``batch_size`` questions,
    or None with one process or without a command mesh (evaluation as on one process)."""
    mesh = mesh_lib.current()
    if mesh is None or jax.process_count() == 1:
        return None
    per = mesh.shape["data"] * mesh.shape["fsdp"]
    size = -(-int(batch_size) // per) * per
    return Spread(mesh, size, mesh_lib.process_rows(mesh, size))


def on_mesh(model: Any) -> Any:
    """``model`` with its parameters on the command mesh by the logical-axis rules when
    evaluation is spread over several processes (already placed parameters stay as they
    are); otherwise ``model`` itself."""
    mesh = mesh_lib.current()
    if mesh is None or jax.process_count() == 1 or model is None:
        return model
    return model.replace(params=mesh_lib.place_params(model.params, model.logical_axes, mesh))


def host_rows(spread: Spread | None, x: Any) -> np.ndarray:
    """Per-example outputs as numpy: gathered over processes when ``spread``."""
    return spread.host(x) if spread is not None else np.asarray(x)
