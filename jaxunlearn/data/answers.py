"""Answer positions of a batch: the host-side ``answer_index`` every pipeline batch carries.

A batch's ``answer_index`` [B, A] (int32) lists, per row, the logit positions p whose next
token p + 1 is an answer token, in order, padded with -1. Losses
(:func:`jaxunlearn.objectives.nll.gather_answer_states`) then project only those A hidden
states onto the vocabulary instead of all T. A is a static bucket, so batches share a few
compiled shapes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def answer_index(loss_mask: np.ndarray, buckets: Sequence[int] | None = None) -> np.ndarray:
    """Host side: [B, A] logit positions of answer tokens, -1 padded.

    A is the smallest entry of `buckets` that holds the longest row; without buckets, the
    next power of two (at least 8, at most T - 1), so batches share a few compiled shapes."""
    targets = np.asarray(loss_mask)[:, 1:] > 0
    counts = targets.sum(axis=1)
    need = max(int(counts.max(initial=0)), 1)
    if buckets is None:
        width = min(max(8, 1 << (need - 1).bit_length()), targets.shape[1])
    else:
        fitting = [int(b) for b in buckets if b >= need]
        if not fitting:
            raise ValueError(f"a row has {need} answer tokens, more than the answer_index widths "
                             f"{sorted(buckets)}; raise PipelineConfig.answer_tokens")
        width = min(fitting)
    out = np.full((targets.shape[0], width), -1, np.int32)
    for row, hit in enumerate(targets):
        pos = np.flatnonzero(hit)
        out[row, : len(pos)] = pos
    return out
