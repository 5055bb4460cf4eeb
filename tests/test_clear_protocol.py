"""CLEAR's own evaluation: the metric rules on canned per-item logs equal the authors' formulas
(``somvy/multimodal_unlearning`` ``mm/calculate_metrics.py`` ``compute_model_utility`` /
``evaluate_forget_quality``, ``mm/eval.py`` ``eval_rouge_recall``, ``mm/build_mod_table.py``),
and ``jaxunlearn unlearn`` + ``evaluate`` + ``protocol clear`` run on the CLEAR fixture
(``tests/clear_fixture.py``) with a tiny LLaVA and a tiny Qwen2-VL."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clear_fixture import write_clear
from jaxunlearn.data.clear import load_clear
from jaxunlearn.eval import clear_rules as R

# canned logs: 2 items, 2 perturbed answers each (per-token losses)
GT = {"0": 0.5, "1": 1.0}
PARA = {"0": 0.7, "1": 1.2}
PERT = {"0": [1.0, 2.0], "1": [1.5, 0.5]}


def test_prob_rules():
    # caption tasks ("eval_log" in the file name): mean exp(-loss)
    assert R.prob("forget", GT, PERT) == pytest.approx((math.exp(-0.5) + math.exp(-1.0)) / 2)
    assert R.prob("retain", GT) == pytest.approx((math.exp(-0.5) + math.exp(-1.0)) / 2)
    # other tasks: p_true / (p_true + sum p_perturbed)
    want = np.mean([math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.0) + math.exp(-2.0)),
                    math.exp(-1.0) / (math.exp(-1.0) + math.exp(-1.5) + math.exp(-0.5))])
    for task in ("forget_facerec", "retain_facerec", "real_faces", "real_world"):
        assert R.prob(task, GT, PERT) == pytest.approx(want)


def test_truth_ratio_rules():
    mean_pert = (1.0 + 2.0 + 1.5 + 0.5) / 4  # scalar mean over all items and options
    tr = np.array([math.exp(mean_pert - 0.7), math.exp(mean_pert - 1.2)])
    np.testing.assert_allclose(R.truth_ratios(PARA, PERT), tr)
    want_forget = np.mean(np.minimum(tr, 1 / tr))
    want_other = np.mean(np.maximum(0, 1 - 1 / tr))
    assert R.truth_ratio("forget", PARA, PERT) == pytest.approx(want_forget)
    assert R.truth_ratio("forget_facerec", PARA, PERT) == pytest.approx(want_forget)
    for task in ("retain", "retain_facerec", "real_faces", "real_world"):
        assert R.truth_ratio(task, PARA, PERT) == pytest.approx(want_other)


def test_rouge_and_utility():
    r = R.rouge_recall("the red door", "a red door opens")
    assert r["rougeL_recall"] == pytest.approx(2 / 3) and r["rouge1_recall"] == pytest.approx(2 / 3)
    assert R.rouge_recall("running dogs", "dog runs")["rouge1_recall"] == 1.0  # stemmer
    log = {"avg_gt_loss": GT, "avg_paraphrased_loss": PARA, "average_perturb_loss": PERT,
           "generated_text": {"0": ["q", "the red door", "the red door"],
                              "1": ["q", "nothing", "the red door"]}}
    m = R.task_metrics("retain", log)  # ROUGE recomputed from generated_text
    assert m["rougeL_recall"] == pytest.approx(0.5)
    metrics = {"real_faces": {"prob": 0.5, "rougeL_recall": 0.25, "truth_ratio": 1.0},
               "retain": {"prob": 0.2, "rougeL_recall": 0.4, "truth_ratio": 0.5},
               "forget": {"prob": 0.01, "rougeL_recall": 0.01, "truth_ratio": 0.01}}
    vals = [0.5, 0.25, 1.0, 0.2, 0.4, 0.5]  # every metric of the non-Forget tasks
    assert R.model_utility(metrics) == pytest.approx(len(vals) / sum(1 / v for v in vals))
    metrics["real_world"] = {"prob": 0.0, "rougeL_recall": 0.3, "truth_ratio": 0.3}
    assert R.model_utility(metrics) == 0.0  # scipy hmean with a zero
    metrics["retain_facerec"] = {"prob": 0.5, "rougeL_recall": 0.3, "truth_ratio": 0.5}
    g = R.group_metrics(metrics)
    assert g["retain_metric"] == pytest.approx(4 / (1 / 0.2 + 1 / 0.5 + 1 / 0.5 + 1 / 0.5))
    assert g["real_metric"] == 0.0 and "forget_metric" not in g


def test_forget_quality():
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp

    gold = {"avg_paraphrased_loss": {"0": 0.9, "1": 0.4}, "average_perturb_loss":
            {"0": [0.8, 1.1], "1": [0.9, 1.0]}}
    un = {"avg_paraphrased_loss": PARA, "average_perturb_loss": PERT}
    tr_u = np.exp(np.mean([1.0, 2.0, 1.5, 0.5]) - np.array([0.7, 1.2]))
    tr_g = np.exp(np.mean([0.8, 1.1, 0.9, 1.0]) - np.array([0.9, 0.4]))
    fq = R.forget_quality(un, gold)
    assert fq["ks_pvalue"] == pytest.approx(ks_2samp(tr_u, tr_g).pvalue)
    assert fq["js"] == pytest.approx(float(jensenshannon(tr_u, tr_g)))
    assert fq["forget_quality"] == pytest.approx(1 - fq["js"])
    with pytest.raises(ValueError, match="same forget split"):
        R.forget_quality(un, {"avg_paraphrased_loss": {"0": 1.0}, "average_perturb_loss":
                              {"0": [1.0]}})


def test_protocol_options_errors():
    from jaxunlearn.eval.protocols import resolve_protocol

    spec, opts = resolve_protocol("clear", {"forget_split": "forget05", "max_rows": 3})
    assert spec.name == "clear" and opts.forget_split == "forget05" and opts.max_rows == 3
    with pytest.raises(ValueError, match="protocol.options.tasks names 'cloze'"):
        resolve_protocol("clear", {"tasks": ["cloze"]})
    with pytest.raises(ValueError, match="forget_split 'full' is not a CLEAR forget split"):
        resolve_protocol("clear", {"forget_split": "full"})


DATA = ["data.batch_size=4", "data.max_length=256", "data.forget_split=forget10"]
TRAIN = ["train.batch_size=4", "train.progress=false", "train.max_steps=1", "train.lr=1e-3"]
EVAL = ["eval.sets=[forget,retain,celebrity]", "eval.max_questions=2", "eval.batch_size=4",
        "eval.classification_tokens=2", "eval.generation_tokens=3", "eval.cloze_tokens=3",
        "eval.bucket_size=256", "eval.progress=false"]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_cli_on_clear(family, tmp_path):
    from hf_fixtures import save_tiny_family
    from jaxunlearn.cli import main

    root = write_clear(tmp_path / "CLEAR")
    base = save_tiny_family(family, tmp_path / "base", bench=load_clear(root))
    data = [f"data.dir={root}", *DATA]
    out = tmp_path / "ga"
    assert main(["unlearn", "--method", "ga", "--model", str(base), *data, *TRAIN,
                 f"output.dir={out}"]) == 0
    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(out / "model"), *data, *EVAL,
                 f"output.dir={ev}"]) == 0
    report = json.loads((ev / "report.json").read_text())
    sets = {r["set"] for r in report["records"]}
    assert sets == {"forget", "retain", "celebrity"}
    assert all(np.isfinite(r["value"]) for r in report["records"])
    proto = tmp_path / "proto"
    assert main(["protocol", "clear", "--model", str(base), f"data.dir={root}",
                 "data.batch_size=4", "data.max_length=256", *TRAIN, "eval.batch_size=4",
                 "eval.bucket_size=256", "eval.progress=false",
                 "protocol.options.max_rows=2", "protocol.options.max_new_tokens=2",
                 f"output.dir={proto}"]) == 0
    report = json.loads((proto / "report.json").read_text())
    recs = report["records"]
    got = {(r["set"], r["metric"], r["step"]) for r in recs}
    for step in (0, 1):
        for task in R.TASKS:
            for metric in R.METRICS:
                assert (task, metric, step) in got
        assert ("all", "model_utility", step) in got
    assert all(np.isfinite(r["value"]) for r in recs)
    assert {r["protocol"] for r in recs} == {"clear/forget10"}
    logs = json.loads((proto / "vanilla" / "eval_log_aggregated.json").read_text())
    assert set(logs) == set(R.TASK_FILES.values())
    forget = logs["eval_log_forget.json"]
    assert len(forget["avg_gt_loss"]) == 2 and len(forget["average_perturb_loss"]["0"]) == 3
    # the vanilla log serves as a gold model's: forget quality of the unlearned model
    gold = tmp_path / "gold"
    assert main(["protocol", "clear", "--model", str(base), f"data.dir={root}",
                 "data.batch_size=4", "data.max_length=256", *TRAIN, "eval.batch_size=4",
                 "eval.bucket_size=256", "eval.progress=false", "protocol.options.unlearn=false",
                 "protocol.options.tasks=[forget]", "protocol.options.max_rows=2",
                 "protocol.options.max_new_tokens=2",
                 f"protocol.options.retain_result={proto / 'vanilla' / 'eval_log_aggregated.json'}",
                 f"output.dir={gold}"]) == 0
    recs = json.loads((gold / "report.json").read_text())["records"]
    fq = {r["metric"]: r["value"] for r in recs if r["set"] == "all"}
    assert fq["js"] == pytest.approx(0.0, abs=1e-6) and fq["ks_pvalue"] == pytest.approx(1.0)
