"""General-utility benchmarks: MMBench, MMMU, MM-Vet and LLaVA-Bench (In-the-Wild).

Each benchmark is read from its published local files (:mod:`jaxunlearn.data.utility_sets`)
and scored by its authors' rule (facts with citations in docs/sources/utility-benchmarks.md):

- MMBench: VLMEvalKit's prompt (hint, question, lettered options, instruction); answers
  matched to a letter by VLMEvalKit's exact matching (``can_infer``: option letter, else a
  unique option text); circular evaluation: a question counts only when every rotation of its
  options is answered correctly (no LLM answer matcher: an unmatched rotation is wrong, as
  VLMEvalKit's ``exact_matching`` policy scores it).
- MMMU: the authors' LLaVA prompts (``configs/llava1.5.yaml``) with ``image_1`` (their LLaVA
  script's choice; questions with several images are counted), multiple-choice answers parsed
  by ``parse_multi_choice_response`` (an unparsable answer gets a random letter from a
  generator seeded with ``seed``, as the authors' seeded ``random.choice``), open answers by
  ``parse_open_response`` + ``eval_open``; accuracy over all questions.
- MM-Vet: the published few-shot grading prompt, judge at temperature 0 with 3 new tokens,
  score = first word of the reply in [0, 1] (else re-asked with the digit suffix at rising
  temperature, 0.0 after 5 tries, as ``mm-vet_evaluator.py``); score = 100 * mean, also per
  capability.
- LLaVA-Bench: the judge compares the reference answer (Assistant 1, ``answers_gpt4.jsonl``)
  and the model's (Assistant 2) given the image caption, with the rule of
  ``table/rule.json``; relative score = 100 * mean(model) / mean(reference), per category
  and overall.

Judge-scored benchmarks run only with a judge (:mod:`jaxunlearn.eval.judge`); without one
they raise a single error saying so. Every score is reported with its n.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxunlearn.data import templates as T
from jaxunlearn.data import utility_sets as U
from jaxunlearn.eval.records import make_record
from jaxunlearn.eval.tasks import generate_answers
from jaxunlearn.parallel import distributed
from jaxunlearn.train.typed import field

BENCHMARKS = ("mmbench", "mmmu", "mmvet", "llava_bench")
JUDGED = ("mmvet", "llava_bench")
UTILITY_SET = "utility"
JUDGE_NEEDED = ("{bench} is scored by an LLM judge and none is configured: set eval.judge: "
                "{{base_url: ..., model: ...}} (or JAXUNLEARN_JUDGE_URL and "
                "JAXUNLEARN_JUDGE_MODEL; pip install 'jaxunlearn[judge]'), or drop {bench} "
                "from protocol.options.benchmarks")


PATH_OPTION = {"mmbench": "mmbench_tsv", "mmmu": "mmmu_dir", "mmvet": "mmvet_dir",
               "llava_bench": "llava_bench_dir"}


# ------------------------------------------------------------------------ options

@dataclasses.dataclass(frozen=True)
class UtilityOptions:
    benchmarks: tuple[str, ...] = field((), "benchmarks to run: mmbench, mmmu, mmvet, "
                                        "llava_bench (the last two need a judge); empty = each "
                                        "one whose path option is set")
    mmbench_tsv: str | None = field(None, "MMBench TSV of VLMEvalKit (e.g. MMBench_DEV_EN.tsv)")
    mmmu_dir: str | None = field(None, "MMMU/MMMU folder: <Subject>/<split>-*.parquet")
    mmmu_split: str = field("validation", "MMMU split (dev, validation; test has no answers)")
    mmmu_subjects: tuple[str, ...] = field((), "MMMU subjects (folder names); empty = all")
    mmvet_dir: str | None = field(None, "unzipped mm-vet.zip: mm-vet.json and images/")
    llava_bench_dir: str | None = field(None, "llava-bench-in-the-wild: questions.jsonl, "
                                        "context.jsonl, answers_gpt4.jsonl, images/")
    max_questions: int | None = field(None, "cap on questions per benchmark (MMBench: "
                                      "original questions, with all their rotations); null = all")
    choice_max_new_tokens: int = field(32, "new tokens of MMBench / MMMU answers, greedy")
    open_max_new_tokens: int = field(256, "new tokens of MM-Vet / LLaVA-Bench answers, greedy")
    seed: int = field(42, "seed of MMMU's random letter for an unparsable answer (the "
                          "authors seed 42)")

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> None:
            raise ValueError(f"protocol.options.{key} {msg}")
        for b in self.benchmarks:
            if b not in BENCHMARKS:
                bad("benchmarks", f"names {b!r}; use {', '.join(BENCHMARKS)}")
        for b in self.benchmarks:
            if not getattr(self, PATH_OPTION[b]):
                bad(PATH_OPTION[b], f"is needed for benchmark {b}: the path of its local "
                                    "files (README: General utility benchmarks)")
        if self.max_questions is not None and self.max_questions < 1:
            bad("max_questions", f"must be at least 1 or null, got {self.max_questions}")
        for key in ("choice_max_new_tokens", "open_max_new_tokens"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")

    def selected(self) -> tuple[str, ...]:
        """The benchmarks to run (``benchmarks``, or each one with its path set)."""
        chosen = self.benchmarks or tuple(b for b in BENCHMARKS if getattr(self, PATH_OPTION[b]))
        if not chosen:
            raise ValueError("protocol.options: no utility benchmark to run; set the path of at "
                             "least one (mmbench_tsv, mmmu_dir, mmvet_dir, llava_bench_dir)")
        return chosen


# ------------------------------------------------------------------------ MMBench rules

_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")
_VERBOSE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def mmbench_prompt(item: U.McqItem) -> str:
    """VLMEvalKit's MMBench user text: optional hint, question, options, instruction."""
    text = f"Hint: {item.hint}\n" if item.hint is not None else ""
    text += f"Question: {item.question}\nOptions:\n"
    text += "".join(f"{k}. {v}\n" for k, v in item.options.items())
    return text + "Please select the correct answer from the options above. \n"


def match_option(answer: str, options: Mapping[str, str]) -> str | None:
    """The letter VLMEvalKit's exact matching reads from ``answer`` (``Z`` = refusal / none
    of them), or None when it cannot tell."""
    for refusal in _REFUSALS:
        if refusal in answer:
            return "Z"
    words = answer
    for ch in ".()[],:;!*#{}":
        words = words.replace(ch, " ")
    tokens = words.split()
    found = [c for c in options if c in tokens]
    if len(found) == 1:
        if tokens.index(found[0]) > len(tokens) - 5:
            return found[0]
    elif not found and "Z" in tokens:
        return "Z"
    m = _VERBOSE.search(answer)
    if m and m.group(1).upper() in options:
        return m.group(1).upper()
    low = answer.lower()
    if len(low) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    hits = [c for c, v in options.items() if str(v).lower() in low]
    return hits[0] if len(hits) == 1 else None


def circular_hit(rows: Sequence[U.McqItem], answers: Sequence[str]) -> bool:
    """MMBench circular evaluation of one question: every rotation's answer matches its
    correct letter (an unmatched answer is wrong without an LLM matcher)."""
    return all(match_option(a, r.options) == r.answer for r, a in zip(rows, answers))


# ------------------------------------------------------------------------ MMMU rules

def mmmu_prompt(item: U.MmmuItem) -> str:
    """The MMMU authors' LLaVA prompt (``configs/llava1.5.yaml``, ``construct_prompt``)."""
    if item.question_type == "multiple-choice":
        example = "".join(f"({chr(65 + i)}) {o}\n" for i, o in enumerate(item.options))
        return (f"{item.question}\n{example}\n"
                "Answer with the option's letter from the given choices directly.")
    return f"{item.question}\nAnswer the question using a single word or phrase."


def parse_choice(response: str, options: Sequence[str], rng: random.Random) -> str:
    """The letter MMMU's ``parse_multi_choice_response`` reads from ``response``."""
    letters = [chr(65 + i) for i in range(len(options))]
    index2ans = dict(zip(letters, options))
    for ch in ",.!?;:'":
        response = response.strip(ch)
    response = f" {response} "
    cands = [c for c in letters if f"({c})" in response]
    bracket, by_letter = bool(cands), True
    if not cands:
        cands = [c for c in letters if f" {c} " in response]
    if not cands and len(response.split()) > 5:
        cands = [c for c in letters if index2ans[c].lower() in response.lower()]
        by_letter = False
    if not cands:
        return rng.choice(letters)
    if len(cands) == 1:
        return cands[0]
    if by_letter:
        pos = [response.rfind(f"({c})" if bracket else f" {c} ") for c in cands]
    else:
        pos = [response.lower().rfind(index2ans[c].lower()) for c in cands]
    return cands[int(np.argmax(pos))]


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def _normalize(s: str) -> list:
    s = s.strip()
    if _is_number(s):
        return [round(float(s.replace(",", "")), 2)]
    s = s.lower()
    return [" " + s, s + " "] if len(s) == 1 else [s]


_NUMBERS = (r"-?\b\d{1,3}(?:,\d{3})+\b", r"-?\d+(?:\.\d+)?[eE][+-]?\d+",
            r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def parse_open(response: str) -> list:
    """MMMU's ``parse_open_response``: candidate strings and numbers (normalised)."""
    text = response.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", text)
    keys = []
    for i, part in enumerate(parts):
        indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ",
                      "result "] + (["="] if i == len(parts) - 1 else [])
        shortest = None  # the authors' loop: an empty tail counts as "none yet"
        for ind in indicators:
            if ind in part:
                tail = part.split(ind)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    keys = keys or [text]
    preds = list(keys)
    for k in keys:
        for pat in _NUMBERS:
            preds += re.findall(pat, k)
    out = []
    for p in preds:
        out += _normalize(p)
    return list(dict.fromkeys(out))


def open_correct(gold: Any, preds: Sequence) -> bool:
    """MMMU's ``eval_open``: a normalised gold string inside a predicted string, or a
    predicted number equal to a normalised gold number."""
    golds = []
    for g in (gold if isinstance(gold, list) else [gold]):
        golds += _normalize(str(g))
    for p in preds:
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in golds):
                return True
        elif p in golds:
            return True
    return False


def mmmu_correct(item: U.MmmuItem, response: str, rng: random.Random) -> tuple[Any, bool]:
    """(parsed prediction, correct) of one MMMU answer."""
    if item.question_type == "multiple-choice":
        pred = parse_choice(response, item.options, rng)
        gold = item.answer if isinstance(item.answer, list) else [item.answer]
        return pred, pred in gold
    preds = parse_open(response)
    return preds, open_correct(item.answer, preds)


# ------------------------------------------------------------------------ judged benchmarks

MMVET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""  # noqa: E501  (mm-vet_evaluator.py's published prompt, verbatim: a fact of the protocol)
MMVET_RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
MMVET_TRIES = 5

LLAVA_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
LLAVA_RULE = ("We would like to request your feedback on the performance of two AI assistants "
              "in response to the user question displayed above. The user asks the question on "
              "observing an image. For your reference, the visual content in the image is "
              "represented with a few sentences describing the image. \nPlease rate the "
              "helpfulness, relevance, accuracy, level of details of their responses. Each "
              "assistant receives an overall score on a scale of 1 to 10, where a higher score "
              "indicates better overall performance.\nPlease first output a single line "
              "containing only two values indicating the scores for Assistant 1 and 2, "
              "respectively. The two scores are separated by a space.\nIn the subsequent line, "
              "please provide a comprehensive explanation of your evaluation, avoiding any "
              "potential bias and ensuring that the order in which the responses were presented "
              "does not affect your judgment.")  # table/rule.json llava_bench_{conv,detail,complex}


def mmvet_query(item: U.OpenItem, prediction: str, retry: bool = False) -> str:
    """The grading request of one MM-Vet answer (a row completing the prompt's table)."""
    gt = item.answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    text = MMVET_PROMPT + "\n" + " | ".join([item.question, gt, prediction, ""])
    return text + (MMVET_RETRY_SUFFIX if retry else "")


def parse_mmvet(reply: str) -> float | None:
    """The first word of the reply as a score in [0, 1], else None."""
    try:
        value = float(reply.split(" ")[0].strip())
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def llava_query(item: U.OpenItem, prediction: str) -> str:
    """The review request of one LLaVA-Bench answer (reference = Assistant 1)."""
    return (f"[Context]\n{item.context}\n\n[Question]\n{item.question}\n\n"
            f"[Assistant 1]\n{item.answer}\n\n[End of Assistant 1]\n\n"
            f"[Assistant 2]\n{prediction}\n\n[End of Assistant 2]\n\n[System]\n{LLAVA_RULE}\n\n")


def parse_llava(reply: str) -> list[float] | None:
    """The two scores of the reply's first line (``a b`` or ``a, b``), else None."""
    parts = reply.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) != 2:
        return None
    try:
        return [float(parts[0]), float(parts[1])]
    except ValueError:
        return None


def mmvet_scores(judge: Any, items: Sequence[U.OpenItem], predictions: Sequence[str]
                 ) -> tuple[list[float | None], int]:
    """Per-question MM-Vet scores (None: the judge could not be reached) and the number of
    questions scored 0.0 after ``MMVET_TRIES`` unparsable replies."""
    scores: list[float | None] = []
    gave_up = 0
    for item, pred in zip(items, predictions):
        score = None
        for attempt in range(MMVET_TRIES):
            messages = [{"role": "user", "content": mmvet_query(item, pred, retry=attempt > 0)}]
            reply = judge.ask("mmvet", messages, parse_mmvet, temperature=0.5 * attempt,
                              max_tokens=3)
            if reply.value is not None:
                score = float(reply.value)
                break
            if reply.raw is None:  # transport failure, already retried by the judge
                break
        else:
            score, gave_up = 0.0, gave_up + 1
        scores.append(score)
    return scores, gave_up


def mmvet_summary(items: Sequence[U.OpenItem], scores: Sequence[float | None]
                  ) -> dict[str, tuple[float, int]]:
    """``total`` and per-capability (100 * mean score, n) over the scored questions."""
    sums: dict[str, list[float]] = {}
    for item, s in zip(items, scores):
        if s is None:
            continue
        for key in ("total", *sorted(set(item.category))):
            sums.setdefault(key, []).append(s)
    return {k: (100.0 * sum(v) / len(v), len(v)) for k, v in sums.items()}


def llava_pairs(judge: Any, items: Sequence[U.OpenItem], predictions: Sequence[str]
                ) -> list[list[float] | None]:
    """(reference score, model score) per question; None when unparsable or unreachable."""
    out = []
    for item, pred in zip(items, predictions):
        messages = [{"role": "system", "content": LLAVA_SYSTEM},
                    {"role": "user", "content": llava_query(item, pred)}]
        out.append(judge.ask("llava_bench", messages, parse_llava, temperature=0.2,
                             max_tokens=1024).value)
    return out


def llava_summary(items: Sequence[U.OpenItem], pairs: Sequence[list[float] | None]
                  ) -> dict[str, tuple[float, int]]:
    """``all`` and per-category relative score 100 * mean(model) / mean(reference), with n."""
    groups: dict[str, list[list[float]]] = {}
    for item, p in zip(items, pairs):
        if p is None:
            continue
        for key in ("all", f"llava_bench_{item.category}"):
            groups.setdefault(key, []).append(p)
    out = {}
    for k, v in groups.items():
        mean = np.asarray(v).mean(0)
        out[k] = (float(100.0 * mean[1] / mean[0]) if mean[0] else 0.0, len(v))
    return out


# ------------------------------------------------------------------------ running

@dataclasses.dataclass
class UtilityResult:
    """Records (set ``utility``, task = benchmark), per-question rows and notes per benchmark
    (e.g. questions refused for having several images)."""

    records: list[dict]
    rows: dict[str, list[dict]]
    notes: dict[str, str]


def _generate(ev: Any, texts: Sequence[str], images: Sequence[Any], max_new_tokens: int,
              desc: str) -> list[str]:
    family = ev.pipeline.family
    records = [{"prompt": T.format_prompt(family, t, im is not None,
                                          system=ev.settings.system_prompt),
                "answer": None, "image": im, "modality": "multi" if im is not None else "text",
                "profile_id": desc} for t, im in zip(texts, images)]
    return generate_answers(ev.model, ev.tokenizer, records, ev.task_pipeline,
                            max_new_tokens=max_new_tokens, batch_size=ev.settings.batch_size,
                            generate_fn=ev.generate_fn, progress=ev.settings.progress,
                            desc=desc)


def require_judge(opts: UtilityOptions, ev: Any) -> None:
    """ValueError when a judge-scored benchmark is asked for and ``ev`` has no judge."""
    missing_judge = [b for b in opts.selected() if b in JUDGED and ev.judge is None]
    if missing_judge:
        raise ValueError(JUDGE_NEEDED.format(bench=" and ".join(missing_judge)))


def run_utility(ev: Any, opts: UtilityOptions, *, method: str = "vanilla",
                protocol: str | None = "utility", step: int | None = 0) -> UtilityResult:
    """Every benchmark of ``opts`` on ``ev.model``: records with each score and its n."""
    require_judge(opts, ev)
    chosen = opts.selected()
    recs: list[dict] = []
    rows: dict[str, list[dict]] = {}
    notes: dict[str, str] = {}

    def rec(bench: str, metric: str, value: float, n: int) -> None:
        recs.append(make_record(method, UTILITY_SET, bench, "multi", metric, value, n,
                                protocol=protocol, step=step))

    cap = opts.max_questions
    if "mmbench" in chosen:
        groups = U.circular_groups(U.load_mmbench(opts.mmbench_tsv, limit=cap).items)
        flat = [r for g in groups.values() for r in g]
        answers = _generate(ev, [mmbench_prompt(r) for r in flat], [r.image for r in flat],
                            opts.choice_max_new_tokens, "mmbench")
        i, hits, bench_rows = 0, [], []
        for g, group in groups.items():
            ans = answers[i:i + len(group)]
            i += len(group)
            hit = circular_hit(group, ans)
            hits.append(hit)
            bench_rows += [{"index": r.index, "group": g, "answer": r.answer, "response": a,
                            "matched": match_option(a, r.options), "circular_hit": hit}
                           for r, a in zip(group, ans)]
        rows["mmbench"] = bench_rows
        rec("mmbench", "circular_accuracy", float(np.mean(hits)) if hits else 0.0, len(hits))
        notes["mmbench"] = f"{len(flat)} rotations of {len(hits)} questions"
    if "mmmu" in chosen:
        loaded = U.load_mmmu(opts.mmmu_dir, split=opts.mmmu_split,
                             subjects=tuple(opts.mmmu_subjects), limit=cap)
        items = loaded.items
        answers = _generate(ev, [mmmu_prompt(it) for it in items], [it.image for it in items],
                            opts.choice_max_new_tokens, "mmmu")
        rng = random.Random(opts.seed)
        bench_rows = []
        for it, a in zip(items, answers):
            pred, ok = mmmu_correct(it, a, rng)
            bench_rows.append({"id": it.id, "question_type": it.question_type,
                               "answer": it.answer, "response": a, "parsed": pred,
                               "correct": ok})
        rows["mmmu"] = bench_rows
        rec("mmmu", "accuracy", float(np.mean([r["correct"] for r in bench_rows]))
            if bench_rows else 0.0, len(bench_rows))
        notes["mmmu"] = (f"{loaded.first_image_only} questions with several images asked with "
                         f"image_1, {loaded.without_image} without image (as the authors' "
                         "LLaVA script; the model port takes one image per prompt)")
    for bench, loader, path in (("mmvet", U.load_mmvet, opts.mmvet_dir),
                                ("llava_bench", U.load_llava_bench, opts.llava_bench_dir)):
        if bench not in chosen:
            continue
        items = loader(path, limit=cap).items
        answers = _generate(ev, [it.question for it in items], [it.image for it in items],
                            opts.open_max_new_tokens, bench)
        # several processes: process 0 asks the judge, every process gets the replies
        if bench == "mmvet":
            scores, gave_up = distributed.from_primary(
                functools.partial(mmvet_scores, ev.judge, items, answers))
            summary = mmvet_summary(items, scores)
            head, metric = "total", "score"
            notes[bench] = f"{gave_up} scored 0.0 after {MMVET_TRIES} unparsable judge replies"
        else:
            scores = distributed.from_primary(
                functools.partial(llava_pairs, ev.judge, items, answers))
            summary = llava_summary(items, scores)
            head, metric = "all", "relative_score"
            notes[bench] = ""
        failed = sum(s is None for s in scores)
        notes[bench] = "; ".join(x for x in (notes[bench], f"{failed} judge failures "
                                             "(excluded from n)") if x)
        rows[bench] = [{"id": it.id, "response": a, "judge": s}
                       for it, a, s in zip(items, answers, scores)]
        if head in summary:
            rec(bench, metric, *summary[head])
        for key, (value, n) in summary.items():
            if key != head:
                rec(bench, f"{metric}/{key}", value, n)
    return UtilityResult(recs, rows, notes)


def utility_markdown(records: Sequence[Mapping], notes: Mapping[str, str] | None = None) -> str:
    """One row per (method, step, benchmark) headline score with its n."""
    notes = notes or {}
    heads = [r for r in records if r.get("set") == UTILITY_SET and "/" not in r["metric"]]
    if not heads:
        return ""
    lines = ["| method | step | benchmark | metric | value | n | note |",
             "|---|---|---|---|---|---|---|"]
    for r in heads:
        scale = 100.0 if r["metric"] in ("accuracy", "circular_accuracy") else 1.0
        lines.append(f"| {r['method']} | {r.get('step', '')} | {r['task']} | {r['metric']} | "
                     f"{r['value'] * scale:.1f} | {r['n']} | {notes.get(r['task'], '')} |")
    return "\n".join(lines) + ("\n\nAccuracies in %; MM-Vet score and LLaVA-Bench relative "
                               "score in points (0-100).\n")
