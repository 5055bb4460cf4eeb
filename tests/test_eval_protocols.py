"""Protocols end to end on the tiny model: sustainability (K=3), relearning, reports."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest

from jaxunlearn.eval import protocols as P
from jaxunlearn.eval.records import lookup, select
from jaxunlearn.eval.tasks import EvalConfig
from jaxunlearn.methods import base
from jaxunlearn.train.finetune import TrainConfig
from jaxunlearn.train.subsets import trainable_mask

FAST = EvalConfig(batch_size=8, classification_tokens=8, generation_tokens=8, cloze_tokens=8,
                  bucket_size=128)
PNG = b"\x89PNG\r\n\x1a\n"
CALLS: list[list[str]] = []


@base.register("test_noise", {"scale": 0.05, "subset": "llm", "seed": 0}, needs_retain=True)
def _test_noise(model, data, cfg):
    """Test-only 'unlearning': Gaussian noise on the chosen subset (cheap, no compilation)."""
    CALLS.append([p.id for p in data.forget])
    mask = trainable_mask(model.params, cfg["subset"])
    key = jax.random.key(cfg["seed"] + len(CALLS))
    new = {}
    for i, (name, v) in enumerate(sorted(model.params.items())):
        if mask[name] and jnp.issubdtype(v.dtype, jnp.floating):
            v = v + cfg["scale"] * jax.random.normal(jax.random.fold_in(key, i), v.shape, v.dtype)
        new[name] = v
    return base.MethodResult(new, {"forget_ids": CALLS[-1]})


@pytest.fixture(autouse=True)
def _only_test_method(monkeypatch):
    """Do not import the (concurrently developed) real methods: these tests are about protocols."""
    monkeypatch.setattr(base, "_import_all", lambda: None)
    CALLS.clear()


def test_sequential_k3_reports_k_plus_1_rows(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    recs = P.pulse_sequential(model, tok, bench, pipe, "test_noise", k=3, cfg=FAST,
                              max_profiles=1, out_dir=tmp_path)
    parts = [bench.split(f"pulse_seq_{i}") for i in range(1, 6)]
    pool = [p.id for part in parts for p in part]
    assert [c for call in CALLS for c in call] == pool and len(CALLS) == 3
    steps = sorted({r["step"] for r in recs})
    assert steps == [0, 1, 2, 3]
    assert all(r["protocol"] == "sequential" for r in recs)
    for step in steps:
        for mod in ("multi", "text"):
            assert lookup(recs, step=step, set="forget", modality=mod, task="classification",
                          metric="likelihood_accuracy") is not None
        assert lookup(recs, step=step, set="generality", task="image_understanding",
                      metric="rougeL") is not None
    assert lookup(recs, step=0, set="forgotten", modality="multi", metric="nll") is None
    assert select(recs, step=3, set="forgotten", metric="nll")[0]["n"] > 0
    # noise accumulates: forget NLL grows over requests
    nll = [lookup(recs, step=s, set="forget", modality="text", metric="nll") for s in steps]
    assert nll[-1] > nll[0]
    md = (tmp_path / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split("|")[1]) for line in rows[:4]] == [0, 1, 2, 3]
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["records"]) == len(recs)
    assert report["config"]["protocol"] == "sequential"
    png = tmp_path / "sequential_multi_likelihood_accuracy.png"
    assert png.read_bytes()[:8] == PNG


def test_relearning_reports_epochs_and_gain(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    pipe = dataclasses.replace(pipe, bucket_size=128)  # one training shape per modality
    forget = bench.split("forget_10")
    unlearned, _ = P.unlearn("test_noise", model, tok, pipe, forget, bench.split("retain_90"),
                             overrides={"scale": 0.1})
    recs, relearned = P.relearning_attack(
        unlearned, tok, forget, pipe, method="test_noise", fraction=0.5, epochs=2,
        train_cfg=TrainConfig(lr=3e-3, schedule="constant"), cfg=FAST, out_dir=tmp_path)
    for mod in ("multi", "text"):
        for metric in ("accuracy", "likelihood_accuracy"):
            curve = [lookup(recs, step=e, set="forget", modality=mod, metric=metric)
                     for e in (0, 1, 2)]
            assert None not in curve
            name = "AG" if metric == "accuracy" else "AG_likelihood_accuracy"
            ag = lookup(recs, set="forget", modality=mod, metric=name)
            assert ag == pytest.approx(curve[2] - curve[0])
    # relearning on forget QA lowers the forget NLL again
    nll = [lookup(recs, step=e, set="forget", modality="text", metric="nll") for e in (0, 2)]
    assert nll[1] < nll[0], nll
    assert relearned.params is not unlearned.params
    md = (tmp_path / "report.md").read_text()
    assert "AG multi" in md and "| Epoch |" in md
    data = P.R.plot_relearning(recs, tmp_path / "check.png", modality="text",
                               metric="likelihood_accuracy")
    assert data["test_noise"]["x"] == [0, 1, 2]
    assert (tmp_path / "relearn_multi_accuracy.png").read_bytes()[:8] == PNG
    assert json.loads((tmp_path / "report.json").read_text())["config"]["epochs"] == 2


def test_mllmu_and_update_target_protocols(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    recs = P.mllmu_protocol(model, tok, bench, pipe, "test_noise", forget_splits=("forget_5",),
                            tasks=("classification",), cfg=FAST, max_profiles=1,
                            out_dir=tmp_path / "mllmu")
    assert {r["protocol"] for r in recs} == {"mllmu/forget_5"}
    assert {r["set"] for r in recs} == {"forget", "test", "retain", "celebrity"}
    assert {r["method"] for r in recs} == {"vanilla", "test_noise"}
    md = (tmp_path / "mllmu" / "report.md").read_text()
    assert "## forget_5" in md and "| test_noise |" in md
    assert (tmp_path / "mllmu" / "tradeoff_forget_5.png").read_bytes()[:8] == PNG
    recs = P.update_target_sweep(model, tok, bench, pipe, "test_noise",
                                 targets=("llm", "vision"), tasks=("classification",),
                                 cfg=FAST, max_profiles=1, out_dir=tmp_path / "ut")
    assert {r["method"] for r in recs} == {"vanilla", "test_noise[llm]", "test_noise[vision]"}
    assert (tmp_path / "ut" / "modality_forget.png").read_bytes()[:8] == PNG


def test_smllmun_and_pulse_pretrained(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    recs = P.smllmun_protocol(model, tok, bench, pipe, "test_noise", forget_split="forget_5",
                              cfg=FAST, max_profiles=1, out_dir=tmp_path / "s")
    tasks = {(r["task"], r["metric"]) for r in recs}
    for t in ("image_memory", "text_memory", "image_understanding"):
        assert {(t, "rougeL"), (t, "degeneration")} <= tasks
    before = lookup(recs, step=0, set="forget", task="text_memory", metric="rougeL")
    assert before > 0.5  # the vanilla model recites its training answers
    assert (tmp_path / "s" / "report.json").is_file()
    # pre-trained knowledge: selection by per-profile accuracy, then unlearn half
    known, acc = P.select_known_profiles(model, tok, bench.profiles[:4], pipe, threshold=0.0,
                                         cfg=FAST)
    assert len(known) == 4 and set(acc) == {p.id for p in bench.profiles[:4]}
    with pytest.raises(ValueError, match="lower threshold"):
        P.pulse_pretrained(model, tok, bench, pipe, "test_noise", threshold=1.01,
                           candidates=bench.profiles[:2], cfg=FAST)


def test_protocol_configs_name_real_parameters():
    """configs/{pulse,smllmun,relearn}-*.yaml load through the CLI's schema and name only
    options the protocol functions accept."""
    from pathlib import Path

    from jaxunlearn.commands import eval_config, protocol_function
    from jaxunlearn.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    names = {"pulse": "pulse", "smllmun": "smllmun", "relearn": "relearn"}
    paths = [p for pat in names for p in sorted(root.glob(f"{pat}-*.yaml"))]
    assert len(paths) >= 6
    for path in paths:
        cfg = load_config(path)
        protocol_function(names[path.name.split("-")[0]], cfg["protocol"]["options"])
        eval_config(cfg)
