"""The training loop: epochs over a batch iterator, a progress bar with loss and throughput,
a JSONL metrics log, periodic evaluation, checkpoints and resume."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxunlearn.checkpoint.state import Checkpointer


def run_epochs(step_fn: Callable, state: Any, frozen: Any,
               make_batches: Callable[[int], Iterable[dict]], *, epochs: int,
               place: Callable[[dict], dict] = lambda b: b, log_path: str | Path | None = None,
               eval_fn: Callable[[Any, int], dict] | None = None, eval_every: int = 0,
               checkpointer: Checkpointer | None = None, desc: str = "train",
               max_steps: int | None = None, progress: bool = True) -> tuple[Any, list[dict]]:
    """Run `epochs` passes of `make_batches(epoch)` through `step_fn(state, frozen, batch)`.

    Metrics are pulled to the host once per step (a few scalars), appended to `log_path`
    as JSON lines and shown on the bar. With a checkpointer the run resumes from its latest
    step (batches already consumed in that epoch are skipped) and saves every
    `checkpointer.every` steps and at the end.
    """
    history: list[dict] = []
    start_step = 0
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state, _ = checkpointer.restore(state)
        start_step = int(jax.device_get(state.step))
    log = open(log_path, "a") if log_path else None
    step = 0
    try:
        import sys

        # redraw at most every 5 s when the output is a log file rather than a terminal
        bar = tqdm(total=max_steps, desc=desc, disable=not progress, unit="step",
                   mininterval=0.1 if sys.stderr.isatty() else 5.0)
        done = False
        for epoch in range(epochs):
            for batch in make_batches(epoch):
                if step < start_step:  # already trained before the interruption
                    step += 1
                    bar.update(1)
                    continue
                t0 = time.perf_counter()
                state, metrics = step_fn(state, frozen, place(batch))
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                dt = time.perf_counter() - t0
                step += 1
                tokens = int(np.sum(batch["attention_mask"])) if "attention_mask" in batch else 0
                rec = {"step": step, "epoch": epoch, **metrics, "seconds": dt,
                       "tokens_per_s": tokens / dt if dt > 0 else 0.0}
                if eval_fn is not None and eval_every and step % eval_every == 0:
                    rec.update({f"eval/{k}": v for k, v in eval_fn(state, step).items()})
                history.append(rec)
                if log:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                                tok_s=f"{rec['tokens_per_s']:.0f}")
                bar.update(1)
                if checkpointer is not None and checkpointer.should_save(step):
                    checkpointer.save(step, state)
                if max_steps is not None and step >= max_steps:
                    done = True
                    break
            if done:
                break
        bar.close()
        if (checkpointer is not None and step > start_step
                and checkpointer.latest_step() != step):
            checkpointer.save(step, state)
    finally:
        if log:
            log.close()
    return state, history
