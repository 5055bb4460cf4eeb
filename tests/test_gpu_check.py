"""scripts/gpu_check.py at toy size on CPU, without the wheels the GPU machine lacks: every
row in the table and the JSON, finite numbers, fp32 parity of the four families; and a
time-boxed run still writes its JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
FAMILIES = ("llava", "llava_onevision", "qwen2_vl", "qwen2_5_vl")
ROWS = {
    **{f"parity/{f}/{d}": f"parity {f} {d}" for f in FAMILIES for d in ("fp32", "bf16")},
    "speed/train_lora": "train LoRA r16 LLM linears 2x64 (tok/s)",
    "speed/train_vision": "train vision-only VKD subset 2x64 (tok/s)",
    "speed/stats": "neuron stats 8 x 2x64 (tok/s)",
    "speed/generate": "greedy generate b2 8 new (new tok/s)",
    "memory/lora": "LoRA step 1x64 peak",
    "memory/vision": "vision-only step 2x64 peak",
}


# run the script as on the GPU machine, where grain, datasets, rouge-score and nltk are absent
WITHOUT_WHEELS = """
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("grain", "datasets", "rouge_score", "nltk"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", WITHOUT_WHEELS, str(SCRIPT), "--size", "toy",
                           "--out", str(out), *args], capture_output=True, text=True, env=env,
                          timeout=900, cwd=tmp_path)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def _numbers(row: dict):
    for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield k, v
        elif isinstance(v, dict):
            yield from ((f"{k}.{a}", b) for a, b in _numbers(v))


def test_toy_run_has_every_row(tmp_path):
    proc, data = _run(tmp_path)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    first = proc.stdout.splitlines()[0]
    assert first.startswith("start-up: ") and ": ok; not needed here: grain" in first, first
    assert "(absent: grain, datasets, rouge-score, nltk)" in first, first
    assert data["complete"] is True
    rows = {r["row"]: r for r in data["rows"]}
    assert list(rows) == list(ROWS)
    table = proc.stdout.split("| row | jax | hf |", 1)[1]
    for key, label in ROWS.items():
        row = rows[key]
        assert row["status"] == "ok", (key, row["status"])
        assert f"| {label} |" in table, label
        for name, value in _numbers(row):
            assert math.isfinite(value), (key, name, value)
    for fam in FAMILIES:
        fp32 = rows[f"parity/{fam}/fp32"]
        assert fp32["max_abs_dlogits"] <= 1e-4, (fam, fp32)
        assert fp32["greedy_equal"] is True and fp32["greedy_agreement"] == 1.0, (fam, fp32)
        assert rows[f"parity/{fam}/bf16"]["max_abs_dlogits"] < 0.1
    for key in ("speed/train_lora", "speed/train_vision", "speed/stats", "speed/generate"):
        row = rows[key]
        assert row["jax_tok_s"] > 0 and row["hf_tok_s"] > 0 and row["ratio"] > 0, row
    lora, vision = rows["speed/train_lora"], rows["speed/train_vision"]
    assert lora["jax_trainable"] == lora["hf_trainable"]  # same LoRA on both sides
    assert vision["jax_trainable"] == vision["hf_trainable"]  # same VKD subset
    assert rows["speed/generate"]["new_tokens_jax"] == rows["speed/generate"]["new_tokens_hf"]
    assert rows["memory/lora"]["jax_compiled_peak_gib"] > 0
    assert len(data["targets"]) == 5
    assert "targets:" in proc.stdout


def test_deadline_still_writes_every_row(tmp_path):
    proc, data = _run(tmp_path, "--deadline", "1", "--section-timeout", "1")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert data["complete"] is True
    rows = {r["row"]: r for r in data["rows"]}
    assert list(rows) == list(ROWS)
    assert all(r["status"].startswith("skipped") for r in rows.values()), rows
