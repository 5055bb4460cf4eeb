"""CLEAR's ``mm/eval.py`` run on a model through the evaluator (rules in
:mod:`jaxunlearn.eval.clear_rules`).

Per task (``config/mm/eval.yaml``; the first ``max_rows`` rows, ``ds_size: 300``):

- rows: ``real_faces``, ``real_world``, ``forgetNN_perturbed`` (Forget, Forget FaceRec; NN
  from the forget split) and ``retain_perturbed`` (Retain, Retain FaceRec);
- question: caption tasks a caption question (the authors draw ``random.choice`` of
  ``IMAGE_CAPTION_QUESTIONS`` unseeded, per pass; here one seeded draw per row, shared by
  the three passes), face tasks ``"The name of the person on the image is "``, real world its
  ``question`` column; asked in the family's chat template with the image;
- losses: mean answer-token NLL (``get_batch_loss`` / label tokens, the family's end token
  counted like the template's tokens after the answer) of the answer, the paraphrased answer
  and each perturbed answer, with the image;
- generation: greedy, ``max_new_tokens`` (300); ``mm/eval.py`` re-tokenises the decoded
  prompt text, so its generation never sees the image: ``generate_with_image: false``
  (default) asks the question text-only in the family's template, ``true`` with the image;
- scoring: ROUGE recall, Prob., Truth Ratio, Model Utility, the grouped metrics, and with a
  gold model's log the forget quality (KS p-value, JS distance).

The per-task logs are written with the authors' keys and file names
(``eval_log_forget.json`` ... and ``eval_log_aggregated.json``), so a gold model's
aggregated log from this module or from ``mm/eval.py`` gives the forget quality.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxunlearn.data import templates as T
from jaxunlearn.data.clear import IMAGE_CAPTION_QUESTIONS, NAME_QUESTION
from jaxunlearn.data.schema import Benchmark, Profile
from jaxunlearn.eval import clear_rules as R
from jaxunlearn.eval._atomic import atomic_write_text
from jaxunlearn.eval.evaluate import Evaluator
from jaxunlearn.eval.records import make_record
from jaxunlearn.eval.tasks import answer_logprobs, generate_answers

RECORD_TASK = "clear"


@dataclasses.dataclass(frozen=True)
class ClearItem:
    """One evaluated row: question, answer, paraphrased answer, perturbed answers, image."""

    profile_id: str
    question: str
    answer: str
    base: str
    perturbed: tuple[str, ...]
    image: Any


def task_config(task: str, forget_split: str) -> str:
    """The config folder a task reads (``forgetNN_perturbed`` for the forget tasks)."""
    if task in ("real_faces", "real_world"):
        return task
    if task.startswith("retain"):
        return "retain_perturbed"
    pct = forget_split.removeprefix("forget").removesuffix("+tofu")
    return f"forget{pct}_perturbed"


def _column(p: Profile, key: str, task: str, config: str) -> str:
    if key == "name":
        value = p.name
    else:
        value = p.columns.get(key)
    if not value:
        raise ValueError(f"CLEAR task {task}: row {p.id} of {config} has no {key!r}; the "
                         f"task needs it (drop {task} from protocol.options.tasks)")
    return value


def _list(p: Profile, key: str, task: str, config: str) -> tuple[str, ...]:
    raw = p.columns.get(key)
    values = json.loads(raw) if raw else []
    if not values:
        raise ValueError(f"CLEAR task {task}: row {p.id} of {config} has no {key!r}; the "
                         f"task needs it (drop {task} from protocol.options.tasks)")
    return tuple(values)


def task_items(bench: Benchmark, task: str, forget_split: str, *, seed: int = 0,
               max_rows: int | None = R.DS_SIZE) -> list[ClearItem]:
    """The items of one task (``eval.yaml``'s columns and question strategy)."""
    config = task_config(task, forget_split)
    if config not in bench.splits:
        raise ValueError(f"CLEAR task {task} needs the folder {config}/ in data.dir; download "
                         f"it or drop {task} from protocol.options.tasks")
    rows = bench.split(config)
    rows = rows[:max_rows] if max_rows else rows
    rng = random.Random(f"{seed}:{task}")
    ans_key, base_key, pert_key = R.COLUMNS[task]
    items = []
    for p in rows:
        if task in ("forget", "retain"):
            question = rng.choice(IMAGE_CAPTION_QUESTIONS)
        elif task == "real_world":
            question = _column(p, "question", task, config)
        else:
            question = NAME_QUESTION
        items.append(ClearItem(p.id, question, _column(p, ans_key, task, config),
                               _column(p, base_key, task, config),
                               _list(p, pert_key, task, config), p.image))
    return items


def _record(family: str, item: ClearItem, answer: str | None, *, image: bool = True,
            **kw: Any) -> dict:
    has = image and item.image is not None
    return {"prompt": T.training_prompt(family, item.question, has, **kw), "answer": answer,
            "image": item.image if has else None, "modality": "multi" if has else "text",
            "profile_id": item.profile_id, "kind": "clear"}


def task_log(ev: Evaluator, items: Sequence[ClearItem], *, max_new_tokens: int = R.MAX_NEW_TOKENS,
             generate_with_image: bool = False) -> dict:
    """The authors' per-item log of one task (keys as in ``mm/eval.py``, items by index)."""
    family, kw = ev.pipeline.family, ev.settings.prompt_kw()
    pipe, bs = ev.task_pipeline, ev.settings.batch_size
    scored = []
    for it in items:
        scored += [_record(family, it, it.answer, **kw), _record(family, it, it.base, **kw)]
        scored += [_record(family, it, a, **kw) for a in it.perturbed]
    logp, count = answer_logprobs(ev.model, ev.tokenizer, scored, pipe, batch_size=bs,
                                  progress=ev.settings.progress)
    prompts = [_record(family, it, None, image=generate_with_image, **kw) for it in items]
    gens = generate_answers(ev.model, ev.tokenizer, prompts, pipe,
                            max_new_tokens=max_new_tokens, batch_size=bs,
                            generate_fn=ev.generate_fn, progress=ev.settings.progress)
    log: dict[str, dict] = {k: {} for k in (
        "avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "generated_text",
        "rouge1_recall", "rougeL_recall")}
    k = 0
    for i, (it, gen) in enumerate(zip(items, gens)):
        n = 2 + len(it.perturbed)
        losses = [R.per_token_loss(logp[k + j], int(count[k + j])) for j in range(n)]
        k += n
        key = str(i)
        log["avg_gt_loss"][key] = losses[0]
        log["avg_paraphrased_loss"][key] = losses[1]
        log["average_perturb_loss"][key] = losses[2:]
        log["generated_text"][key] = [it.question, gen, it.answer]
        for name, v in R.rouge_recall(it.answer, gen).items():
            log[name][key] = v
    return log


@dataclasses.dataclass
class ClearResult:
    """Per-task logs (by task), per-task metrics and the summary metrics of one model."""

    logs: dict[str, dict]
    metrics: dict[str, dict[str, float]]
    summary: dict[str, float]

    def aggregated(self) -> dict:
        """``eval_log_aggregated.json``: the logs under the authors' file names."""
        return {R.TASK_FILES[t]: log for t, log in self.logs.items()}


def evaluate_clear(ev: Evaluator, bench: Benchmark, forget_split: str, *,
                   tasks: Sequence[str] = R.TASKS, seed: int = 0,
                   max_rows: int | None = R.DS_SIZE, max_new_tokens: int = R.MAX_NEW_TOKENS,
                   generate_with_image: bool = False,
                   gold: Mapping[str, Any] | None = None) -> ClearResult:
    """CLEAR's evaluation of ``ev.model`` (module docstring); ``gold``: the gold model's
    aggregated log (forget quality needs its ``eval_log_forget.json`` entry)."""
    logs, metrics = {}, {}
    for task in tasks:
        items = task_items(bench, task, forget_split, seed=seed, max_rows=max_rows)
        if not items:
            raise ValueError(f"CLEAR task {task}: {task_config(task, forget_split)} has no rows")
        logs[task] = task_log(ev, items, max_new_tokens=max_new_tokens,
                              generate_with_image=generate_with_image)
        metrics[task] = R.task_metrics(task, logs[task])
    summary: dict[str, float] = {}
    if any("Forget" not in R.TASK_NAMES[t] for t in metrics):
        summary["model_utility"] = R.model_utility(metrics)
    summary.update(R.group_metrics(metrics))
    if gold is not None and "forget" in logs:
        name = R.TASK_FILES["forget"]
        if name not in gold:
            raise ValueError(f"the gold model's log has no {name!r} entry; evaluate the gold "
                             "model with the forget task")
        summary.update(R.forget_quality(logs["forget"], gold[name]))
    return ClearResult(logs, metrics, summary)


def load_gold(path: str | Path) -> dict:
    """A gold model's ``eval_log_aggregated.json`` (this module's or ``mm/eval.py``'s)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"protocol.options.retain_result {p} does not exist; evaluate "
                                "the gold (retain-trained) model with `protocol clear` "
                                "(unlearn: false) and pass its eval_log_aggregated.json")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON ({e}); pass an eval_log_aggregated.json") \
            from None
    if not isinstance(data, dict):
        raise ValueError(f"{p} is not a JSON object of task logs")
    return data


def clear_records(result: ClearResult, method: str, *, protocol: str | None = None,
                  step: int | None = None) -> list[dict]:
    """Records: per task (set = task) ``prob``, ``rougeL_recall``, ``truth_ratio``; set
    ``all``: ``model_utility``, ``real_metric`` ..., ``ks_pvalue``, ``js``,
    ``forget_quality``."""
    out = []
    for task, ms in result.metrics.items():
        n = len(result.logs[task]["avg_gt_loss"])
        for metric, v in ms.items():
            out.append(make_record(method, task, RECORD_TASK, "multi", metric, v, n,
                                   protocol=protocol, step=step))
    n_forget = len(result.logs.get("forget", {}).get("avg_gt_loss", {}))
    for metric, v in result.summary.items():
        n = n_forget if metric in ("ks_pvalue", "ks_stat", "js", "forget_quality") else sum(
            len(log["avg_gt_loss"]) for log in result.logs.values())
        out.append(make_record(method, "all", RECORD_TASK, "multi", metric, v, n,
                               protocol=protocol, step=step))
    return out


def markdown(results: Mapping[str, ClearResult]) -> str:
    """One row per (task, metric) and summary metric, one column per model."""
    labels = list(results)
    lines = ["| Task | Metric | n | " + " | ".join(labels) + " |",
             "|---|---|---:|" + "---:|" * len(labels)]
    first = results[labels[0]]
    for task in R.TASKS:
        if task not in first.metrics:
            continue
        for m in R.METRICS:
            cells = [f"{r.metrics[task][m]:.4f}" if task in r.metrics else "–"
                     for r in results.values()]
            lines.append(f"| {R.TASK_NAMES[task]} | {R.METRIC_NAMES[m]} | "
                         f"{len(first.logs[task]['avg_gt_loss'])} | " + " | ".join(cells) + " |")
    keys = list(dict.fromkeys(k for r in results.values() for k in r.summary))
    for k in keys:
        cells = [f"{r.summary[k]:.4f}" if k in r.summary else "–" for r in results.values()]
        lines.append(f"| all | {k} | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_logs(out_dir: str | Path, label: str, result: ClearResult) -> dict[str, Path]:
    """``<label>/eval_*.json`` per task and ``<label>/eval_log_aggregated.json``."""
    out = Path(out_dir) / label
    paths = {}
    for task, log in result.logs.items():
        p = atomic_write_text(out / R.TASK_FILES[task], json.dumps(log, indent=1))
        paths[f"{label}/{p.name}"] = p
    p = atomic_write_text(out / "eval_log_aggregated.json", json.dumps(result.aggregated(),
                                                                       indent=1))
    paths[f"{label}/{p.name}"] = p
    return paths


__all__ = ["ClearItem", "ClearResult", "clear_records", "evaluate_clear", "load_gold",
           "markdown", "task_config", "task_items", "task_log", "write_logs"]
