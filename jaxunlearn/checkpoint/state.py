"""Orbax checkpoints of the full train state (params, optimizer state, step, RNG) plus the
data iterator's state, every N steps and at the end, keeping the last K; resume restores
arrays with the shardings of a template state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the project's two items."""

    def __init__(self, directory: str | Path, *, keep: int = 3, every: int = 0):
        self.directory = Path(directory).absolute()
        self.every = int(every)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def should_save(self, step: int) -> bool:
        return self.every > 0 and step > 0 and step % self.every == 0

    def save(self, step: int, state: Any, data_state: dict | None = None,
             metadata: dict | None = None) -> None:
        """Write step `step` (asynchronously finished before the next save or `close`)."""
        items = {"state": ocp.args.StandardSave(state),
                 "data": ocp.args.JsonSave({"iterator": data_state, "meta": metadata or {}})}
        self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, template_state: Any, step: int | None = None) -> tuple[Any, dict | None]:
        """(state, data iterator state) of `step` (default: latest), placed like the template."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
        out = self.manager.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return out["state"], (out["data"] or {}).get("iterator")

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
