"""Every registered method runs through `jaxunlearn unlearn` (one step) and writes its typed
result; the methods are spread over the four families (each family runs three), so every
method runs through the CLI and every family through several methods. The finetune ->
unlearn -> evaluate -> export chain on all four families is tests/test_cli_families.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_fixtures import FAMILIES, save_tiny_family
from jaxunlearn.cli import main
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark
from jaxunlearn.methods.base import MethodResult, available, get_method

DATA = ["data.synthetic.n_profiles=10", "data.synthetic.n_celebrities=4",
        "data.synthetic.image_size=32", "data.batch_size=4", "data.max_length=256"]
TRAINING = ["train.batch_size=4", "train.progress=false", "train.max_steps=1", "train.lr=1e-3"]
# settings a method needs beyond the defaults (vkd keeps the LLM frozen)
EXTRA = {"vkd": ["train.subset=projector+vision_mlp", "train.deeper_half=true"]}
METHODS = available()


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    bench = generate_benchmark(SynthConfig(seed=0, n_profiles=10, n_celebrities=4,
                                           image_size=32))
    root = tmp_path_factory.mktemp("bases")
    return {f: save_tiny_family(f, root / f, bench=bench) for f in FAMILIES}


def test_every_method_is_covered():
    assert len(METHODS) >= 12 and {"ga", "npo", "manu", "vkd", "smfa", "mmunlearner"} <= set(METHODS)


@pytest.mark.parametrize("i", range(len(METHODS)), ids=lambda i: METHODS[i])
def test_method_through_the_cli(i, bases, tmp_path):
    method = METHODS[i]
    family = FAMILIES[i % len(FAMILIES)]
    spec = get_method(method)
    args = [*DATA, *(TRAINING if spec.trains else []), *EXTRA.get(method, [])]
    out = tmp_path / "run"
    assert main(["unlearn", "--method", method, "--model", str(bases[family]), *args,
                 f"output.dir={out}"]) == 0, (method, family)
    assert (out / "model" / "config.json").is_file()
    report = json.loads((out / "unlearn_report.json").read_text())
    assert report["method"] == method
    assert np.isfinite(report.get("losses") or []).all()
    if spec.trains:  # train.max_steps=1 was read (smfa: by both of its fine-tunes)
        steps = ([report["steps"]] if "steps" in report else
                 [v["steps"] for v in report.values() if isinstance(v, dict) and "steps" in v])
        assert steps and all(n == 1 for n in steps), steps
    result = MethodResult.load(out)
    assert result.report["method"] == method
