"""The `mllmu` protocol reproduces MLLMU-Bench's `eval.py` (franciscoliu/MLLMU-Bench, commit
0e3098e; facts with citations in docs/sources/mllmu-bench.md).

- canned generations through the protocol's evaluation (a fake `generate_fn`): the letter,
  the cloze rule, ROUGE and BLEU equal what `eval.py`'s code gives on `prompt + continuation`
  (`eval_py_*` below restate its lines), demonstration profiles are excluded, test images are
  drawn as `eval.py` draws them after `random.seed(seed)`, accuracies are pooled in percent;
- `jaxunlearn protocol mllmu` on a copy in the published layout (written by
  `jaxunlearn.data.mllmu.write_mllmu`, the writer `jaxunlearn data synth` uses) for a tiny LLaVA
  and a tiny Qwen2-VL writes the benchmark's table (sets x tasks x modality, percent);
- the CLI pairs forget_N with retain_(100-N) by default and refuses a mismatched pair.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from jaxunlearn.data.pipeline import PipelineConfig
from jaxunlearn.data.schema import Benchmark, Profile, Question
from jaxunlearn.eval import mllmu_eval as ME
from jaxunlearn.eval import protocols as P
from jaxunlearn.eval.evaluate import Evaluator
from jaxunlearn.eval.tasks import EvalConfig

OPTS = ("Oslo", "Rome", "Lima", "Kyiv")
# (continuation, gold letter, eval.py's letter): eval.py `evaluate_classification`
CLS = [(" B", "B", "B"), ("b", "B", "B"), (" b) foo", "B", "B"), ("d: Kyiv", "D", "D"),
       ("ASSISTANT: B", "B", None), ("(B)", "B", None), ("", "A", None),
       ("The answer is C", "C", None), ("Paris\nASSISTANT: Lima", "B", None), ("E", "A", None)]
# (continuation, ground truth, eval.py's verdict): eval.py `evaluate_fill_in_the_blank`
CLOZE = [("Lima", "Lima", True), ("Paris\nASSISTANT: Lima", "Lima", False),
         ("Paris\nASSISTANT: Lima", "Paris", True), ("in Lima now", " Lima ", True),
         ("Lima", " Lima ", False), ("", "", True), ("anything", "", True),
         ("LIMA!", "lima", True), ("", "Lima", False)]
# (continuation, ground truth): eval.py `evaluate_generation` scores
GEN = [("Alice likes playing chess daily.", "Alice likes playing chess daily."),
       ("", "Alice lives in Lima."),
       ("Alice lives in Lima.\nASSISTANT: and more", "Alice lives in Lima."),
       ("She was born in 1970 in Lima", "Alice was born in 1970."),
       ("b", "Alice runs.")]
PROMPT = "USER:\nsome question\nASSISTANT:"  # any eval.py prompt: it ends in ASSISTANT:


def eval_py_response(text: str, answer_split: bool = False) -> str:
    """eval.py: `text.split("ASSISTANT:")[1].strip()` (cloze / generation: elif "Answer:")."""
    if "ASSISTANT:" in text:
        return text.split("ASSISTANT:")[1].strip()
    if answer_split and "Answer:" in text:
        return text.split("Answer:")[1].strip()
    return text.strip()


def eval_py_generation(gt: str, continuation: str) -> dict[str, float]:
    """eval.py `evaluate_generation` + `compute_bleu` on the decoded prompt + continuation."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score import rouge_scorer

    pred = eval_py_response(PROMPT + continuation, True)
    scores = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
                                      use_stemmer=True).score(gt, pred)
    bleu = sentence_bleu([gt.split()], pred.split(),
                         smoothing_function=SmoothingFunction().method1)
    return {**{k: scores[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")}, "bleu": bleu}


def _img(value: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (value, value, value))


def _cls(text: str, answer: str, modality: str = "text") -> Question:
    return Question("classification", modality, text, answer, list(OPTS))


def _fictitious(pid: str) -> Profile:
    qs = [_cls(f"[{pid} m{i}] Where?", "C", "multi") for i in range(2)]
    qs += [_cls(f"[{pid} t{i}] Job?", "A") for i in range(2)]
    qs += [Question("cloze", "text", f"[{pid} z0] Lives in [Blank].", "Lima"),
           Question("generation", "multi", f"[{pid} g0] Hobby?", f"{pid} likes chess.")]
    return Profile(pid, pid, image=_img(10), eval_questions=qs,
                   test_images=[_img(50 + 10 * k) for k in range(3)],
                   test_questions=[_cls(f"[{pid} x{i}] Birthplace?", "C", "multi")
                                   for i in range(3)])


def canned_bench() -> Benchmark:
    """p1, p2 forget (forget_10), p3 retain (retain_90), c1 the celebrity carrying the
    canned continuations (no demonstrations there: its ID is not in Full_Set)."""
    qs = [_cls(f"[c1 cls{i}] Which city?", gold) for i, (_, gold, _) in enumerate(CLS)]
    qs += [Question("cloze", "text", f"[c1 clz{i}] Lives in [Blank].", gt)
           for i, (_, gt, _) in enumerate(CLOZE)]
    qs += [Question("generation", "text", f"[c1 gen{i}] Hobby?", gt)
           for i, (_, gt) in enumerate(GEN)]
    celeb = Profile("c1", "c1", image=_img(200), eval_questions=qs)
    profiles = [_fictitious(p) for p in ("p1", "p2", "p3")]
    splits = {"full": ["p1", "p2", "p3"], "forget_10": ["p1", "p2"], "retain_90": ["p3"],
              "test": ["p2", "p3", "p1"], "celebrity": ["c1"]}
    return Benchmark(profiles, [celeb], splits)


def canned_outputs() -> dict[str, str]:
    out = {f"[c1 cls{i}]": c for i, (c, _, _) in enumerate(CLS)}
    out |= {f"[c1 clz{i}]": c for i, (c, _, _) in enumerate(CLOZE)}
    out |= {f"[c1 gen{i}]": c for i, (c, _) in enumerate(GEN)}
    return out


def fake_generate(tokenizer, outputs: dict[str, str], seen: list[str]):
    """A stand-in for ju.generate: answers each prompt with the continuation of its query (the
    tag that occurs last: demonstrations come before the query); other prompts get "A"."""

    def generate(model, ids, mask, pixel_values=None, *, max_new_tokens, eos_token_id,
                 pad_token_id, **images):
        assert (np.asarray(mask)[:, -1] == 1).all(), "prompts must be left-padded"
        rows = []
        for row, m in zip(np.asarray(ids), np.asarray(mask)):
            prompt = tokenizer.decode(row[m.astype(bool)])
            seen.append(prompt)
            found = [k for k in outputs if k in prompt]
            text = outputs[max(found, key=prompt.rfind)] if found else "A"
            toks = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            rows.append(toks[:max_new_tokens] + [eos_token_id])
        n = max(len(r) for r in rows)
        return np.array([r + [pad_token_id] * (n - len(r)) for r in rows], np.int32)

    return generate


@pytest.fixture(scope="module")
def tok():
    from hf_fixtures import tiny_tokenizer

    return tiny_tokenizer()


def _evaluator(tok, seen, family="llava", **settings) -> Evaluator:
    pipe = PipelineConfig(family=family, batch_size=4, max_length=4096, bucket_size=512)
    cfg = EvalConfig(batch_size=4, likelihood=False, **settings)
    model = SimpleNamespace(params={"w": np.zeros(4, np.float32)})  # only fingerprinted
    return Evaluator(model, tok, pipe, cfg, generate_fn=fake_generate(tok, canned_outputs(), seen))


def test_canned_generations_score_as_eval_py(tok, tmp_path):
    bench, seen = canned_bench(), []
    ev = _evaluator(tok, seen)
    opts = P.MllmuOptions(forget_splits=("forget_10",), unlearn=False, project_metrics=False,
                          seed=3)
    result = P.run_protocol("mllmu", ev, P.Study(bench, "ga", out_dir=tmp_path), opts)
    rows = [json.loads(line) for line in
            (tmp_path / "forget_10_vanilla_predictions.jsonl").read_text().splitlines()]
    celeb = {(r["kind"], r["question"].split("]")[0] + "]"): r for r in rows
             if r["set"] == "celebrity"}
    for i, (cont, gold, letter) in enumerate(CLS):
        r = celeb[("classification", f"[c1 cls{i}]")]
        assert r["continuation"] == cont.strip()
        assert r["letter"] == letter, (cont, r)
        assert r["correct"] == (letter == gold)
        text = PROMPT + cont  # eval.py's own lines on prompt + continuation
        resp = eval_py_response(text)
        assert r["letter"] == (resp[0].upper() if resp and resp[0].upper() in "ABCD" else None)
    for i, (cont, gt, ok) in enumerate(CLOZE):
        r = celeb[("cloze", f"[c1 clz{i}]")]
        assert r["correct"] is ok, (cont, gt)
        assert ok == (gt.lower() in eval_py_response(PROMPT + cont, True).lower())
    for i, (cont, gt) in enumerate(GEN):
        r = celeb[("generation", f"[c1 gen{i}]")]
        want = eval_py_generation(gt, cont)
        for k, v in want.items():
            assert r[k] == pytest.approx(v, abs=1e-12), (cont, k)
    assert celeb[("generation", "[c1 gen0]")]["bleu"] == pytest.approx(1.0)
    assert celeb[("generation", "[c1 gen1]")]["rougeL"] == 0.0

    # aggregation: pooled percent, eval.py's result keys
    res = json.loads((tmp_path / "forget_10_vanilla_final_evaluation_results.json").read_text())
    real = res["Retain Set (real person) Results"]
    n_ok = sum(letter == gold for _, gold, letter in CLS)
    assert real["classification"]["Pure Text Question Accuracy"] == pytest.approx(
        100 * n_ok / len(CLS))
    assert real["classification"]["Image-Textual Question Accuracy"] == 0
    assert real["fill_in_the_blank"]["pure_text_accuracy"] == pytest.approx(
        100 * sum(ok for *_, ok in CLOZE) / len(CLOZE))
    gen = [eval_py_generation(gt, c) for c, gt in GEN]
    assert real["generation"]["Average ROUGE-L (Pure_Text)"] == pytest.approx(
        np.mean([g["rougeL"] for g in gen]))
    assert real["generation"]["Average BLEU (Pure_Text)"] == pytest.approx(
        np.mean([g["bleu"] for g in gen]))
    assert "Average BLEU (Image_Textual)" not in real["generation"]
    assert set(res) == {"Forget Set Results", "Test Set Results",
                        "Retain Set (shared dataset) Results", "Retain Set (real person) Results"}

    # few-shot: eval.py `random.sample(id_list, 1)` (classification) / 2 (cloze) after
    # random.seed(3); that profile is the demonstration and is not scored
    rng = random.Random(3)
    demo = rng.sample(["p1", "p2"], 1)[0]
    other = ({"p1", "p2"} - {demo}).pop()
    forget = [r for r in rows if r["set"] == "forget"]
    assert {r["profile_id"] for r in forget if r["kind"] == "classification"} == {other}
    assert not [r for r in forget if r["kind"] == "cloze"]  # both forget profiles are demos
    assert res["Forget Set Results"]["fill_in_the_blank"]["pure_text_accuracy"] == 0
    assert {r["profile_id"] for r in forget if r["kind"] == "generation"} == {"p1", "p2"}
    query = [s for s in seen if f"[{other} t0]" in s]
    assert query and all(f"[{demo} t0]" in s and f"[{demo} m0]" not in s for s in query)

    # test set: Test_Set order filtered to the forget IDs; the demonstration profile's
    # question indices (0, 1: its two Full_Set image questions) skipped, its third scored
    test = [r["question"].split("]")[0] + "]" for r in rows
            if r["set"] == "test" and r["kind"] == "classification"]
    assert test == [f"[p2 x{i}]" for i in range(3) if other == "p2" or i == 2] + \
        [f"[p1 x{i}]" for i in range(3) if other == "p1" or i == 2]
    bset = ME.bench_sets(bench, "forget_10")["test"]
    assert [p.id for p in bset.rows] == ["p2", "p1"]
    items = ME.plan("classification", "test", bset, {p.id: p for p in bench.profiles}, 3)
    rng = random.Random(3)
    rng.sample(["p1", "p2"], 1)
    picks = {pid: rng.choice(range(3)) for pid in ("p2", "p1")}
    by_id = bench.by_id()
    for it in items:
        assert it.image is by_id[it.profile_id].test_images[picks[it.profile_id]]

    # records: bench_* metrics, accuracy as a fraction, n = scored questions
    rec = [r for r in result.records if r["set"] == "celebrity" and r["task"] == "cloze"
           and r["modality"] == "text"]
    assert rec == [{"method": "vanilla", "set": "celebrity", "task": "cloze",
                    "modality": "text", "metric": "bench_accuracy",
                    "value": pytest.approx(sum(ok for *_, ok in CLOZE) / len(CLOZE)),
                    "n": len(CLOZE), "protocol": "mllmu/forget_10", "step": 0}]
    md = (tmp_path / "report.md").read_text()
    assert "| Retain Set (real person) Results | fill_in_the_blank | Pure_Text | accuracy (%)" \
        in md


def test_prompts_are_eval_py_and_family_templates():
    q = _cls("Qq", "C", "multi")
    demo = _cls("Dq", "B", "multi")
    opts = "A: Oslo\nB: Rome\nC: Lima\nD: Kyiv\n"
    # LLaVA: eval.py's prompt; the image demonstration without its image (text-only head)
    assert ME.bench_prompt("llava", q, [demo]) == (
        f"USER:\nQuestion: Dq\n{opts}Correct Answer: B\n"
        f"USER: <image>\nQq\n{opts}Just give ONE letter representing the answer directly.\n"
        "ASSISTANT:")
    # Qwen2-VL: the same user text in its chat template, the image before the query
    assert ME.bench_prompt("qwen2_vl", q, [demo]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"Question: Dq\n{opts}Correct Answer: B\n<|vision_start|><|image_pad|><|vision_end|>"
        f"Qq\n{opts}Just give ONE letter representing the answer directly.<|im_end|>\n"
        "<|im_start|>assistant\n")
    gen = Question("generation", "text", "Hobby?", "Chess.")
    assert ME.bench_prompt("llava", gen) == (
        "USER: Hobby?\nAnswer the question based on your trained knowledge in one sentence in "
        "ENGLISH.\nASSISTANT:")
    with pytest.raises(ValueError, match="few_shot_images true: .*one image per prompt"):
        P.resolve_protocol("mllmu", {"few_shot_images": True})


# ----------------------------------------------------------------------------- CLI

COMMON = ["eval.batch_size=4", "eval.bucket_size=1024", "eval.max_questions=1",
          "eval.progress=false", "data.max_length=1024", "data.batch_size=4",
          "eval.classification_tokens=2", "eval.generation_tokens=4", "eval.cloze_tokens=4"]


@pytest.fixture(scope="module")
def published_copy(tmp_path_factory):
    """A synthetic benchmark written in the published layout (what `jaxunlearn data synth`
    writes) and the benchmark itself (the tiny models' tokenizer is built from it)."""
    from jaxunlearn.data.mllmu import load_mllmu, write_mllmu
    from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

    bench = generate_benchmark(SynthConfig(seed=0, n_profiles=20, n_celebrities=4,
                                           image_size=32))
    root = write_mllmu(bench, tmp_path_factory.mktemp("mllmu_copy"))
    load_mllmu(root)  # the published layout loads
    return root, bench


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_protocol_mllmu_cli_writes_the_benchmark_table(family, published_copy, tmp_path,
                                                       capsys):
    from hf_fixtures import save_tiny_family
    from jaxunlearn.cli import main

    root, bench = published_copy
    model = save_tiny_family(family, tmp_path / "model", bench=bench)
    out = tmp_path / "out"
    rc = main(["protocol", "mllmu", f"data.dir={root}", *COMMON,
               "protocol.options.forget_splits=[forget_10]", "protocol.options.unlearn=false",
               "protocol.options.max_profiles=2", "protocol.options.max_new_tokens=4",
               f"protocol.options.project_metrics={str(family == 'llava').lower()}",
               f"output.dir={out}", "--model", str(model)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "forget_10_vanilla_final_evaluation_results.json").read_text())
    assert list(res) == ["Forget Set Results", "Test Set Results",
                         "Retain Set (shared dataset) Results",
                         "Retain Set (real person) Results"]
    for block in res.values():
        assert list(block) == ["fill_in_the_blank", "classification", "generation"]
        for key in ("image_textual_accuracy", "pure_text_accuracy"):
            assert 0 <= block["fill_in_the_blank"][key] <= 100
        assert set(block["classification"]) == {"Image-Textual Question Accuracy",
                                                "Pure Text Question Accuracy"}
    assert set(res["Retain Set (real person) Results"]["generation"]) == {
        f"Average {m} ({t})" for m in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU")
        for t in ("Image_Textual", "Pure_Text")}
    report = json.loads((out / "report.json").read_text())
    bench_recs = [r for r in report["records"] if r["metric"].startswith("bench_")]
    keys = {(r["set"], r["task"], r["modality"]) for r in bench_recs}
    assert {s for s, _, _ in keys} == {"forget", "test", "retain", "celebrity"}
    assert {(t, m) for _, t, m in keys} == {(t, m) for t in ("classification", "cloze",
                                                             "generation")
                                            for m in ("multi", "text")}
    project = [r for r in report["records"] if not r["metric"].startswith("bench_")]
    assert bool(project) == (family == "llava")  # the project's metrics beside, when asked
    md = (out / "report.md").read_text()
    assert "### MLLMU-Bench (eval.py)" in md and "| Forget Set Results | classification |" in md
    assert ("### Project metrics" in md) == (family == "llava")


def test_split_pairing_default_and_mismatch(capsys):
    from jaxunlearn.cli import main
    from jaxunlearn.config import load_config
    from jaxunlearn.session import split_pair

    assert split_pair(load_config(overrides=["data.forget_split=forget_15"])) == \
        ("forget_15", "retain_85")
    assert split_pair(load_config()) == ("forget_10", "retain_90")
    forced = load_config(overrides=["data.retain_split=retain_85", "data.force_split_pair=true"])
    assert split_pair(forced) == ("forget_10", "retain_85")
    pulse = load_config(overrides=["data.forget_split=pulse_ft_forget",
                                   "data.retain_split=pulse_ft_retain"])
    assert split_pair(pulse) == ("pulse_ft_forget", "pulse_ft_retain")
    for cmd in (["evaluate"], ["unlearn", "--method", "ga"]):
        rc = main([*cmd, "data.retain_split=retain_85", "model.checkpoint=/nonexistent"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith("error: data.retain_split 'retain_85' does not pair with "
                                 "data.forget_split 'forget_10'") and "force_split_pair" in err[0]
    rc = main(["evaluate", "data.forget_split=pulse_ft_forget", "model.checkpoint=/nonexistent"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "set data.retain_split" in err[0], err
    # a config that writes out the matching pair runs the protocol (fails later, at the model);
    # any other retain_split is refused by it (its splits are protocol.options)
    yaml = "configs/npo-mllmu-llava-1.5-7b.yaml"
    root = Path(__file__).resolve().parents[1]
    for extra, msg in (([], "/nonexistent"), (["data.retain_split=retain_85"],
                                              "data.retain_split is not read by protocol")):
        rc = main(["protocol", "mllmu", *extra, "model.checkpoint=/nonexistent",
                   "--config", str(root / yaml)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], err
