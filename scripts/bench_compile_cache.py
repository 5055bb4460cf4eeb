"""XLA compile time of a CLI command, first run vs an identical rerun (persistent cache).

Runs `jaxunlearn unlearn` twice in fresh processes against one empty
`JAXUNLEARN_COMPILE_CACHE` directory, each with its own `JAXUNLEARN_COMPILE_LOG`, and prints
per run: programs compiled, cache hits, total backend compile seconds (on a hit: the cache
read), the slowest programs, and the rerun / first-run ratio. Without `--model` it builds a
tiny random LLaVA checkpoint (the demo's world) in a temporary directory.

    python scripts/bench_compile_cache.py
    python scripts/bench_compile_cache.py --model /path/to/llava-1.5-7b-hf --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def tiny_llava(out: Path) -> Path:
    """A tiny random LLaVA-1.5 directory (config, weights, tokenizer) under `out`."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from jaxunlearn.demo.tiny import TinyWorldConfig, build_world

    _, _, hf, _ = build_world(TinyWorldConfig(), tokenizer_dir=out)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(LlavaConfig(**hf)).save_pretrained(out)
    return out


def run_once(model: Path, cache: Path, log: Path, out: Path, args) -> Path:
    """One `jaxunlearn unlearn` process; returns its compile log."""
    cmd = [sys.executable, "-m", "jaxunlearn.cli", "unlearn", "--method", args.method,
           "--model", str(model), f"train.max_steps={args.steps}", "train.progress=false",
           "output.export_hf=false", f"output.dir={out}", *args.overrides]
    env = {**os.environ, "JAXUNLEARN_COMPILE_CACHE": str(cache),
           "JAXUNLEARN_COMPILE_LOG": str(log)}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {run.returncode}:\n{run.stderr[-3000:]}")
    return log


def summarize(name: str, log: Path, top: int) -> float:
    """Print one run's totals (`compile_cache.read_log`) and slowest programs; returns its
    compile seconds."""
    from jaxunlearn.compile_cache import BACKEND_COMPILE, read_log

    totals = read_log(log)
    print(f"{name}: {totals['compiles']} programs, {totals['cache_hits']} cache hits, "
          f"{totals['seconds']:.3f} s compiling")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    compiles = [r for r in records if r["event"] == BACKEND_COMPILE]
    for r in sorted(compiles, key=lambda r: -r["seconds"])[:top]:
        print(f"    {r['seconds']:8.3f} s  {r['fun_name']}")
    return totals["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="an HF checkpoint directory (default: tiny "
                    "random LLaVA)")
    ap.add_argument("--method", default="ga")
    ap.add_argument("--steps", type=int, default=1, help="train.max_steps per run")
    ap.add_argument("--top", type=int, default=5, help="slowest programs listed per run")
    ap.add_argument("overrides", nargs="*", help="extra key=value settings for both runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or tiny_llava(root / "model")
        first = run_once(model, root / "cache", root / "log0.jsonl", root / "run0", args)
        second = run_once(model, root / "cache", root / "log1.jsonl", root / "run1", args)
        a = summarize("first run", first, args.top)
        b = summarize("rerun", second, args.top)
        print(f"rerun / first compile time: {b / a:.3f}")


if __name__ == "__main__":
    main()
