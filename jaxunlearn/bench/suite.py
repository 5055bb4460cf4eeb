"""`jaxunlearn bench`: every speed comparison against HF PyTorch in one run, then a summary
table of ratios (and MFU for the train step); or, with `--plan PRESET`, compiled per-device
memory of the train steps without allocating weights.

The statistics and evaluation comparisons live in `scripts/bench_stats.py` and
`scripts/bench_eval.py` (run here as subprocesses, from a source checkout).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
ALL = ("generate", "train", "stats", "eval")


def _script(name: str, args: list[str]) -> str:
    path = SCRIPTS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `jaxunlearn bench` from a source checkout")
    out = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                         timeout=3600)
    if out.returncode:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def run_bench(plan: str | None = None, mesh: str = "", only: str = "", batch: int = 8,
              seq: int = 1024) -> list[dict]:
    if plan:
        return run_plan(plan, mesh, batch, seq)
    wanted = [w for w in (only.split(",") if only else ALL) if w]
    bad = set(wanted) - set(ALL)
    if bad:
        raise ValueError(f"unknown benchmark {sorted(bad)}; choose from {', '.join(ALL)}")
    rows = []
    if "generate" in wanted:
        from jaxunlearn.bench import generate

        r = generate.run()
        rows.append({"bench": "generate (new tok/s)", "jax": r["jax_tok_s"], "hf": r["hf_tok_s"],
                     "ratio": r["ratio"], "mfu": None})
        print(f"generate: jax {r['jax_tok_s']:.1f} tok/s, hf {r['hf_tok_s']:.1f} tok/s", flush=True)
    if "train" in wanted:
        from jaxunlearn.bench import train_step

        r = train_step.run()
        rows.append({"bench": "train step (tok/s)", "jax": r["jax_tok_s"], "hf": r["hf_tok_s"],
                     "ratio": r["ratio"], "mfu": (r["jax_mfu"], r["hf_mfu"])})
        print(f"train: jax {r['jax_tok_s']:.1f} tok/s, hf {r['hf_tok_s']:.1f} tok/s", flush=True)
    if "stats" in wanted:
        text = _script("bench_stats.py", ["--batches", "4", "--batch-size", "8"])
        print(text, flush=True)
        jax_t = float(re.search(r"jaxunlearn: ([\d.]+) s \(([\d,]+) tok/s", text).group(2)
                      .replace(",", ""))
        hf_t = float(re.search(r"HF torch \+ hooks: [\d.]+ s \(([\d,]+) tok/s", text).group(1)
                     .replace(",", ""))
        rows.append({"bench": "statistics pass (tok/s)", "jax": jax_t, "hf": hf_t,
                     "ratio": jax_t / hf_t, "mfu": None})
    if "eval" in wanted:
        text = _script("bench_eval.py", ["--questions", "32"])
        print(text, flush=True)
        for m in re.finditer(r"^(classification|generation)\s+(multi|text)\s+\d+\s+([\d.]+)\s+"
                             r"([\d.]+)\s+([\d.]+)", text, re.M):
            rows.append({"bench": f"eval {m.group(1)} {m.group(2)} (q/s)",
                         "jax": float(m.group(3)), "hf": float(m.group(4)),
                         "ratio": float(m.group(5)), "mfu": None})
    print(format_table(rows))
    return rows


def format_table(rows: list[dict]) -> str:
    import platform

    import jax

    head = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"jax {jax.__version__} on {jax.default_backend()}\n")
    lines = [head, "| benchmark | jaxunlearn | HF PyTorch | ratio | MFU jax / hf |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        mfu = f"{r['mfu'][0]:.1%} / {r['mfu'][1]:.1%}" if r["mfu"] else "-"
        lines.append(f"| {r['bench']} | {r['jax']:.1f} | {r['hf']:.1f} | {r['ratio']:.2f}x | {mfu} |")
    return "\n".join(lines)


def parse_meshes(text: str) -> list[dict]:
    meshes = []
    for part in text.split(";"):
        sizes = {}
        for item in part.split(","):
            if not item.strip():
                continue
            k, _, v = item.partition("=")
            sizes[k.strip()] = int(v)
        meshes.append(sizes)
    return meshes


def run_plan(preset_name: str, mesh: str, batch: int, seq: int) -> list[dict]:
    """Per-device memory of full / LoRA / vision-only train steps on each mesh."""
    import jax

    from jaxunlearn.bench.plan import MODES, fits, plan_train_step
    from jaxunlearn.modeling.presets import load_preset

    preset = load_preset(preset_name)
    meshes = parse_meshes(mesh)
    need = max(int(__import__("math").prod(m.values())) for m in meshes)
    if need > len(jax.devices()):
        raise ValueError(f"mesh needs {need} devices but {len(jax.devices())} are visible; on "
                         f"CPU set XLA_FLAGS=--xla_force_host_platform_device_count={need}")
    print(f"{preset_name}: batch {batch} x {seq} tokens, params {preset['param_dtype']}, "
          f"compute {preset['compute_dtype']}, remat {preset['remat']}, "
          f"compiled for {jax.default_backend()}")
    print(f"{'mode':<8}{'mesh':<36}{'args GiB':>10}{'temp GiB':>10}{'peak GiB':>10}  fits")
    rows = []
    for mode in MODES:
        for sizes in meshes:
            r = plan_train_step(preset, mode, sizes, batch=batch, seq=seq)
            rows.append(r)
            print(f"{mode:<8}{str(r['mesh']):<36}{r['argument_gib']:>10.2f}{r['temp_gib']:>10.2f}"
                  f"{r['peak_gib']:>10.2f}  {fits(r['peak_gib'])}", flush=True)
    return rows
