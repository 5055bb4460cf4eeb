"""CLEAR's own evaluation rules (``somvy/multimodal_unlearning``) as pure functions.

Restated from ``mm/eval.py`` (per-item losses, generation, ROUGE recall),
``config/mm/eval.yaml`` (the six tasks, their questions and answer columns) and
``mm/calculate_metrics.py`` (``compute_model_utility``, ``evaluate_forget_quality``), plus the
grouped metrics of ``mm/build_mod_table.py``; facts with citations in
``docs/sources/clear.md``. Nothing here runs a model: inputs are the per-item logs the authors write
(``avg_gt_loss``, ``avg_paraphrased_loss``, ``average_perturb_loss``, ``generated_text``), keyed
by item index, per task file (``eval_log_forget.json`` ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# task -> (config folder rule, question strategy, answer / base / perturbed columns)
TASKS = ("real_faces", "real_world", "retain", "retain_facerec", "forget", "forget_facerec")
TASK_FILES = {"real_faces": "eval_real_faces_wo_options.json",
              "real_world": "eval_real_world_wo_options.json",
              "retain": "eval_log.json", "retain_facerec": "eval_retain_facerec.json",
              "forget": "eval_log_forget.json", "forget_facerec": "eval_forget_facerec.json"}
TASK_NAMES = {"real_faces": "Real Faces", "real_world": "Real World", "retain": "Retain",
              "retain_facerec": "Retain FaceRec", "forget": "Forget",
              "forget_facerec": "Forget FaceRec"}
COLUMNS = {  # eval.yaml: answer_key, base_answer_key, perturbed_answer_key
    "real_faces": ("answer", "answer", "options"),
    "real_world": ("answer", "answer", "options"),
    "retain": ("caption", "paraphrased_caption", "perturbed_captions"),
    "forget": ("caption", "paraphrased_caption", "perturbed_captions"),
    "retain_facerec": ("name", "name", "perturbed_names"),
    "forget_facerec": ("name", "name", "perturbed_names"),
}
MAX_NEW_TOKENS = 300  # eval.yaml generation.max_new_tokens
DS_SIZE = 300         # eval.yaml ds_size: first rows of each task
METRICS = ("prob", "rougeL_recall", "truth_ratio")
METRIC_NAMES = {"prob": "Prob.", "rougeL_recall": "ROUGE", "truth_ratio": "Truth Ratio"}
GROUPS = {"real_metric": ("real_faces", "real_world"),
          "retain_metric": ("retain", "retain_facerec"),
          "forget_metric": ("forget", "forget_facerec")}

_SCORER = None


def _values(d: Mapping | Sequence) -> list:
    """``dict_values_to_array``: the values of an index-keyed dict in insertion order."""
    return list(d.values()) if isinstance(d, Mapping) else list(d)


def rouge_recall(reference: str, generated: str) -> dict[str, float]:
    """``RougeScorer(["rouge1", "rougeL"], use_stemmer=True).score(gt, gen)`` recalls."""
    global _SCORER
    if _SCORER is None:
        from rouge_score.rouge_scorer import RougeScorer

        _SCORER = RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    s = _SCORER.score(reference, generated)
    return {"rouge1_recall": s["rouge1"].recall, "rougeL_recall": s["rougeL"].recall}


def per_token_loss(logprob_sum: float, n_tokens: int) -> float:
    """``get_batch_loss`` / number of label tokens: the mean answer-token NLL."""
    if n_tokens <= 0:
        raise ValueError("an answer with no tokens has no loss; every CLEAR answer needs text")
    return float(-logprob_sum / n_tokens)


def plain_prob(task: str) -> bool:
    """``"eval_log" in task_file``: the caption tasks use mean exp(-loss), the others the
    probability normalised over the answer and its perturbations."""
    return "eval_log" in TASK_FILES[task]


def prob(task: str, avg_gt_loss: Mapping | Sequence,
         average_perturb_loss: Mapping | Sequence | None = None) -> float:
    """``compute_model_utility``'s Prob. of one task."""
    true = np.exp(-np.asarray(_values(avg_gt_loss), float))
    if plain_prob(task):
        return float(np.mean(true))
    false = np.exp(-np.asarray(_values(average_perturb_loss), float))
    return float(np.mean(true / (true + false.sum(-1))))


def truth_ratios(avg_paraphrased_loss: Mapping | Sequence,
                 average_perturb_loss: Mapping | Sequence) -> np.ndarray:
    """Per item ``exp(mean(average_perturb_loss) - avg_paraphrased_loss)``, the mean taken over
    all items and perturbations (``dict_values_to_array(...).mean()``, a scalar)."""
    para = np.asarray(_values(avg_paraphrased_loss), float)
    pert = np.concatenate([np.atleast_1d(np.asarray(v, float))
                           for v in _values(average_perturb_loss)])
    return np.exp(pert.mean() - para)


def truth_ratio(task: str, avg_paraphrased_loss: Mapping | Sequence,
                average_perturb_loss: Mapping | Sequence) -> float:
    """Truth Ratio of one task: forget tasks ``mean(min(tr, 1/tr))``, the others
    ``mean(max(0, 1 - 1/tr))``."""
    tr = truth_ratios(avg_paraphrased_loss, average_perturb_loss)
    if "forget" in TASK_FILES[task]:
        return float(np.mean(np.minimum(tr, 1 / tr)))
    return float(np.mean(np.maximum(0, 1 - 1 / tr)))


def task_metrics(task: str, log: Mapping[str, Any]) -> dict[str, float]:
    """Prob., ROUGE (mean ROUGE-L recall) and Truth Ratio of one task's log; the ROUGE recall
    is computed from ``generated_text`` (question, generation, answer) when the log has none,
    as ``compute_model_utility`` does."""
    rouge = log.get("rougeL_recall") or {
        k: rouge_recall(v[2], v[1])["rougeL_recall"]
        for k, v in dict(log["generated_text"]).items()}
    return {"prob": prob(task, log["avg_gt_loss"], log.get("average_perturb_loss")),
            "rougeL_recall": float(np.mean(_values(rouge))),
            "truth_ratio": truth_ratio(task, log["avg_paraphrased_loss"],
                                       log["average_perturb_loss"])}


def hmean(values: Sequence[float]) -> float:
    """``scipy.stats.hmean`` (0 when a value is 0)."""
    from scipy.stats import hmean as _hmean

    v = np.asarray(values, float)
    if np.any(v == 0):
        return 0.0
    return float(_hmean(v))


def model_utility(metrics: Mapping[str, Mapping[str, float]]) -> float:
    """``Model Utility``: harmonic mean of every metric of the tasks whose name lacks
    ``Forget`` (real faces, real world, retain, retain face recognition)."""
    vals = [v for task, ms in metrics.items() if "Forget" not in TASK_NAMES[task]
            for v in ms.values()]
    if not vals:
        raise ValueError("model utility needs at least one non-forget task")
    return hmean(vals)


def group_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``build_mod_table``: Real / Retain / Forget metric = harmonic mean of Prob. and Truth
    Ratio of the group's two tasks (only groups with both tasks)."""
    out = {}
    for name, tasks in GROUPS.items():
        if all(t in metrics for t in tasks):
            out[name] = hmean([metrics[t][m] for t in tasks for m in ("prob", "truth_ratio")])
    return out


def forget_quality(unlearned: Mapping[str, Any], gold: Mapping[str, Any]) -> dict[str, float]:
    """``evaluate_forget_quality`` on the forget-task logs (``eval_log_forget.json``) of the
    unlearned and the gold (retain-trained) model: KS test p-value and statistic, the
    Jensen-Shannon distance of the truth ratios, and ``build_mod_table``'s Forget Quality =
    1 - JS."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import ks_2samp

    u = truth_ratios(unlearned["avg_paraphrased_loss"], unlearned["average_perturb_loss"])
    g = truth_ratios(gold["avg_paraphrased_loss"], gold["average_perturb_loss"])
    if len(u) != len(g):
        raise ValueError(f"forget quality: the gold model's forget log has {len(g)} items, "
                         f"this model's {len(u)}; evaluate both on the same forget split")
    ks = ks_2samp(u, g)
    js = float(jensenshannon(u, g))
    return {"ks_pvalue": float(ks.pvalue), "ks_stat": float(ks.statistic), "js": js,
            "forget_quality": 1.0 - js}


__all__ = ["COLUMNS", "DS_SIZE", "GROUPS", "MAX_NEW_TOKENS", "METRICS", "TASKS", "TASK_FILES",
           "TASK_NAMES", "forget_quality", "group_metrics", "hmean", "model_utility",
           "per_token_loss", "plain_prob", "prob", "rouge_recall", "task_metrics",
           "truth_ratio", "truth_ratios"]
