"""The demo's own report pieces: controls on the vanilla model, the rotation-robust table and
the target check.

Controls (is classification a measure of knowing the person?): the forget people's
multimodal classification questions asked with their image replaced by a black image
(`forget_black_image`) and by another (retain) person's image (`forget_other_image`). A model
that uses the image scores near chance (25%) there.

The demo table shows, per method, forget / retain / celebrity x (rotation-robust
classification by generated letter = `circular_accuracy`, cloze accuracy, generation ROUGE-L)
x (multimodal, text-only). The target:
for each method kind, some method of that kind lowers a forget metric of the table by at
least `TARGET_DROP` (absolute) in one modality while the same metric on retain and on
celebrity stays at or above `TARGET_KEEP` x vanilla.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from PIL import Image

from jaxunlearn.data.images import image_size
from jaxunlearn.eval.records import lookup, main_records
from jaxunlearn.eval.tasks import Tag, run_task

# method kind -> the demo methods of that kind
KINDS: dict[str, tuple[str, ...]] = {
    "gradient": ("ga", "grad_diff", "kl_min", "npo", "idk"),
    "neuron pruning": ("manu",),
    "vision-only": ("vkd",),
    "adapter sculpting": ("smfa",),
}
# (task, metric, label) of the demo table
METRICS: tuple[tuple[str, str, str], ...] = (
    ("classification", "circular_accuracy", "Class. (rot.)"),
    ("cloze", "accuracy", "Cloze"),
    ("generation", "rougeL", "Gen. ROUGE-L"),
)
# the metrics the target is defined on (the issue's: rotation-robust classification, cloze)
TARGET_METRICS = METRICS[:2]
TARGET_DROP = 0.25
TARGET_KEEP = 0.9
CONTROL_SETS = ("forget_black_image", "forget_other_image")


def control_records(evaluator, forget: Sequence, retain: Sequence,
                    method: str = "vanilla") -> list[dict]:
    """Multimodal classification records of `forget` with each image replaced by a black
    image (set `forget_black_image`) and by a retain person's image (`forget_other_image`)."""
    out = []
    for set_name in CONTROL_SETS:
        swapped = []
        for i, p in enumerate(forget):
            if set_name == "forget_black_image":
                height, width = image_size(p.image)
                image = Image.new("RGB", (width, height))
            else:
                image = retain[i % len(retain)].image
            swapped.append(dataclasses.replace(p, image=image))
        out += run_task("classification", evaluator, swapped,
                        Tag(method, set_name, "multi")).records
    return out


def _value(records, method, set_name, task, modality, metric):
    return lookup(records, method=method, set=set_name, task=task, modality=modality,
                  metric=metric)


def target_check(records: Sequence[Mapping], vanilla: str = "vanilla",
                 metrics: Sequence[tuple[str, str, str]] = TARGET_METRICS) -> dict[str, dict]:
    """Per method: its best (largest forget drop) qualifying (modality, metric) among
    `metrics` and whether it meets the target; per kind: met if any of its methods does."""
    recs = main_records(records)
    methods = [m for ms in KINDS.values() for m in ms
               if any(r["method"] == m for r in recs)]
    per_method: dict[str, dict] = {}
    for m in methods:
        best = None
        for modality in ("multi", "text"):
            for task, metric, label in metrics:
                v = {s: _value(recs, vanilla, s, task, modality, metric)
                     for s in ("forget", "retain", "celebrity")}
                a = {s: _value(recs, m, s, task, modality, metric)
                     for s in ("forget", "retain", "celebrity")}
                if None in v.values() or None in a.values():
                    continue
                drop = v["forget"] - a["forget"]
                keep = all(a[s] >= TARGET_KEEP * v[s] - 1e-9 for s in ("retain", "celebrity"))
                cand = {"modality": modality, "metric": label, "drop": drop, "keeps": keep,
                        "met": keep and drop >= TARGET_DROP - 1e-9}
                key = (cand["met"], drop, keep)  # met first, else the largest drop
                if best is None or key > (best["met"], best["drop"], best["keeps"]):
                    best = cand
        if best is not None:
            per_method[m] = best
    kinds = {k: {"met": any(per_method.get(m, {}).get("met", False) for m in ms),
                 "methods": [m for m in ms if m in per_method]}
             for k, ms in KINDS.items() if any(m in per_method for m in ms)}
    return {"methods": per_method, "kinds": kinds}


def demo_table(records: Sequence[Mapping], settings: Mapping[str, Mapping],
               notes: Mapping[str, str], vanilla: str = "vanilla") -> str:
    """Markdown: the rotation-robust table (%), the controls, the target check and every
    method's setting with how it was chosen."""
    recs = main_records(records)
    methods = list(dict.fromkeys(r["method"] for r in recs))
    methods = [vanilla] + [m for m in methods if m != vanilla]
    cols = [(s, mod, task, metric, label) for mod in ("multi", "text")
            for s in ("forget", "retain", "celebrity") for task, metric, label in METRICS]
    short = {"multi": "MM", "text": "Text"}
    lines = ["| Method | " + " | ".join(f"{short[mod]} {s.capitalize()} {label}"
                                        for s, mod, _, _, label in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for m in methods:
        cells = []
        for s, mod, task, metric, _ in cols:
            v = _value(recs, m, s, task, mod, metric)
            cells.append("–" if v is None else f"{100 * v:.0f}")  # ROUGE-L F x 100 too
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    out = ["## Demo table: rotation-robust classification and cloze", "",
           "Accuracy in %, ROUGE-L F-measure x 100. Class. (rot.) (generated letter) "
           "counts a question only when the answer is right in all 4 cyclic rotations of "
           "the options (MMBench's circular evaluation); the benchmark's own single-order "
           "accuracy is in the tables below.",
           "", *lines, ""]
    ctrl = []
    for set_name in CONTROL_SETS:
        for metric in ("accuracy", "rotated_accuracy", "circular_accuracy"):
            v = _value(recs, vanilla, set_name, "classification", "multi", metric)
            if v is not None:
                chance = "0.4%" if metric == "circular_accuracy" else "25%"
                ctrl.append(f"- vanilla, {set_name.replace('_', ' ')}: multimodal "
                            f"classification {metric} {100 * v:.0f}% (chance {chance})")
    if ctrl:
        out += ["Controls (forget people's multimodal classification with their image "
                "replaced):", "", *ctrl, ""]
    for title, metrics in (("rotation-robust classification or cloze", TARGET_METRICS),
                           ("generation ROUGE-L x 100, for comparison", METRICS[2:])):
        check = target_check(records, vanilla, metrics)
        if not check["methods"]:
            continue
        out += [f"Target on {title}: per method kind, a forget drop >= "
                f"{100 * TARGET_DROP:.0f} points in one modality with retain and celebrity "
                f">= {100 * TARGET_KEEP:.0f}% of vanilla on the same metric.", "",
                "| Kind | Met | Method | Best modality / metric | Forget drop | "
                "Retain + celebrity kept |", "|---|---|---|---|---:|---|"]
        for kind, info in check["kinds"].items():
            for m in info["methods"]:
                b = check["methods"][m]
                out.append(f"| {kind} | {'yes' if info['met'] else 'no'} | {m} | "
                           f"{short[b['modality']]} {b['metric']} | {100 * b['drop']:.0f} | "
                           f"{'yes' if b['keeps'] else 'no'} |")
        out.append("")
    if settings:
        out += ["## Method settings", "", "| Method | Setting | How it was chosen |",
                "|---|---|---|"]
        for m, cfg in settings.items():
            text = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "progress")
            out.append(f"| {m} | {text} | {notes.get(m, 'the method defaults')} |")
        out.append("")
    return "\n".join(out)
