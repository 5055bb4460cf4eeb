"""The shared fine-tuned tiny LLaVA (built once per test session, across xdist workers)."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock

from jaxunlearn.demo.tiny import TinyWorldConfig
from jaxunlearn.demo.vanilla import build_vanilla

WORLD = TinyWorldConfig()


def finetuned_tiny(tmp_path_factory):
    """(model, tokenizer, benchmark, pipeline config): a tiny LLaVA fine-tuned on the training
    QA of 20 synthetic profiles (~97% answer-token accuracy). Built once, cached on disk."""
    # one directory per pytest run: under xdist the workers' temp dirs share the run's parent;
    # without xdist the run's own base temp (never the user-wide parent, which outlives runs)
    base = Path(tmp_path_factory.getbasetemp())
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    target = root / "tiny_vanilla_llava"
    with FileLock(str(root / "tiny_vanilla_llava.lock")):
        return build_vanilla(target, WORLD)
