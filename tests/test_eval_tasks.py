"""Evaluation tasks: scoring rules through the task layer (fake generate) and on the tiny model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxunlearn.data.pipeline import question_records
from jaxunlearn.data.schema import Profile, QAPair, Question
from jaxunlearn.eval import metrics as M
from jaxunlearn.eval import report as R
from jaxunlearn.eval import tasks as TK
from jaxunlearn.eval.evaluate import EvalSet, Evaluator, benchmark_sets
from jaxunlearn.eval.judge import JudgeResult
from jaxunlearn.eval.records import lookup

# one max_new_tokens and one length bucket for every task: few compilations in tests
FAST = TK.EvalConfig(batch_size=8, classification_tokens=8, generation_tokens=8,
                     cloze_tokens=8, bucket_size=128)
PNG = b"\x89PNG\r\n\x1a\n"


def _cls(q: str, answer: str, modality: str = "text") -> Question:
    return Question("classification", modality, q, answer, ["red", "green", "blue", "grey"])


# handcrafted answers: (question, gold, model output, counted correct?)
CLS_CASES = [
    ("Q0 colour?", "B", " B", True),
    ("Q1 colour?", "B", "b", False),             # lower case is not a letter answer
    ("Q2 colour?", "C", "(C)", False),           # first character decides
    ("Q3 colour?", "A", "A: red", True),
    ("Q4 colour?", "D", "", False),              # empty
    ("Q5 colour?", "C", "The answer is C", False),
    ("Q6 colour?", "D", "\nD\n", True),
    ("Q7 colour?", "A", "E", False),
    ("Q8 colour?", "A", "B", False),             # valid letter, wrong option
]


def _profile(questions: list[Question]) -> Profile:
    return Profile(id="h0", name="Hand Crafted", eval_questions=questions,
                   train_qa=[QAPair("Who?", "Hand Crafted", "text")])


def fake_generate(tokenizer, outputs: dict[str, str], junk_after_eos: bool = True):
    """A stand-in for ju.generate answering each prompt with the output of its question."""

    def generate(model, ids, mask, pixel_values=None, *, max_new_tokens, eos_token_id,
                 pad_token_id):
        assert (np.asarray(mask)[:, -1] == 1).all(), "prompts must be left-padded"
        rows = []
        for row, m in zip(np.asarray(ids), np.asarray(mask)):
            prompt = tokenizer.decode(row[m.astype(bool)])
            key = next(k for k in outputs if k in prompt)
            toks = tokenizer(outputs[key], add_special_tokens=False)["input_ids"]
            toks = toks[:max_new_tokens] + [eos_token_id]
            if junk_after_eos:  # anything after EOS must be ignored
                toks += tokenizer("junk A", add_special_tokens=False)["input_ids"]
            rows.append(toks)
        n = max(len(r) for r in rows)
        return np.array([r + [pad_token_id] * (n - len(r)) for r in rows], np.int32)

    return generate


def test_classification_letter_rule_through_task(tiny_vanilla):
    model, tok, bench, pipe = tiny_vanilla
    prof = _profile([_cls(q, gold) for q, gold, _, _ in CLS_CASES])
    gen = fake_generate(tok, {q: out for q, _, out, _ in CLS_CASES})
    cfg = dataclasses.replace(FAST, likelihood=False, batch_size=4)  # 9 questions: 3 batches
    ev = Evaluator(model, tok, pipe, cfg, generate_fn=gen)
    res = TK.run_task("classification", ev, [prof], TK.Tag(modality="text"))
    want = [ok for *_, ok in CLS_CASES]
    assert [p["correct"] for p in res.predictions] == want
    assert [p["prediction"] for p in res.predictions] == [o.strip() for _, _, o, _ in CLS_CASES]
    acc = lookup(res.records, metric="accuracy")
    assert acc == pytest.approx(np.mean(want))
    assert acc == pytest.approx(M.classification_accuracy([o for _, _, o, _ in CLS_CASES],
                                                          [g for _, g, _, _ in CLS_CASES]))
    no_letter = np.mean([M.letter_of(o) is None for _, _, o, _ in CLS_CASES])
    assert lookup(res.records, metric="no_letter") == pytest.approx(no_letter)
    assert {r["n"] for r in res.records} == {len(CLS_CASES)}


def test_cloze_substring_and_degeneration_through_task(tiny_vanilla):
    model, tok, _, pipe = tiny_vanilla
    cases = [("He lives in [Blank] (c0).", "Cork", "He lives in CORK.", True),
             ("Born in [Blank] (c1).", "1997", "born in 1979", False),
             ("Works as [Blank] (c2).", "a kite designer", "a kite  designer", False),
             ("Studied [Blank] (c3).", "art", "", False),
             ("Likes [Blank] (c4).", "juggling", "juggling juggling juggling", True)]
    prof = _profile([Question("cloze", "text", q, a) for q, a, _, _ in cases])
    gen = fake_generate(tok, {q.split("(")[1]: out for q, _, out, _ in cases})
    ev = Evaluator(model, tok, pipe, dataclasses.replace(FAST, cloze_tokens=50),
                   generate_fn=gen)
    res = TK.run_cloze(ev, [prof], TK.Tag(modality="text"))
    assert [p["correct"] for p in res.predictions] == [ok for *_, ok in cases]
    assert lookup(res.records, metric="accuracy") == pytest.approx(0.4)
    # "" is empty and "juggling x3" repetitive: 2 of 5 degenerate
    assert lookup(res.records, metric="degeneration") == pytest.approx(0.4)


class FakeJudge:
    """Scores by answer length; unparsable for answers containing 'zzz'."""

    def __init__(self):
        self.calls = []

    def score_many(self, metric, items):
        out = []
        for q, ref, ans in items:
            self.calls.append((metric, q, ref, ans))
            out.append(JudgeResult(metric, None if "zzz" in ans else min(10, len(ans.split()))))
        return out


def test_generation_rouge_and_judge_through_task(tiny_vanilla):
    model, tok, _, pipe = tiny_vanilla
    cases = [("Where does he live? g0", "He lives in Cork.", "He lives in Cork."),
             ("What is his job? g1", "He works as a perfumer.", "He is a baker zzz"),
             ("Where was he born? g2", "He was born in Graz.", "")]
    prof = _profile([Question("generation", "text", q, a) for q, a, _ in cases])
    gen = fake_generate(tok, {q.split("? ")[1]: out for q, _, out in cases})
    judge = FakeJudge()
    cfg = dataclasses.replace(FAST, generation_tokens=50)
    ev = Evaluator(model, tok, pipe, cfg, judge=judge, generate_fn=gen)
    res = ev.task("generation", [prof], TK.Tag(modality="text"))
    want = M.rouge_scores([o for *_, o in cases], [a for _, a, _ in cases])
    for t in M.ROUGE_TYPES:
        assert lookup(res.records, metric=t) == pytest.approx(want["mean"][t])
        assert [p[t] for p in res.predictions] == pytest.approx(want["per_item"][t])
    assert lookup(res.records, metric="rougeL") < 1.0
    assert res.predictions[0]["rougeL"] == 1.0
    assert lookup(res.records, metric="degeneration") == pytest.approx(1 / 3)
    # judge: the unparsable answer is left out of the mean and of n
    fact = [r for r in res.records if r["metric"] == "factuality"]
    assert fact[0]["value"] == pytest.approx((4 + 0) / 2) and fact[0]["n"] == 2
    assert [c[1] for c in judge.calls] == [q for q, _, _ in cases]


def test_likelihood_scores_match_manual_forward_and_batching(tiny_vanilla):
    model, tok, bench, pipe = tiny_vanilla
    prof = bench.split("forget_10")[:1]
    # text: batch size / length bucket do not change scores (left padding is masked out)
    tag = TK.Tag(modality="text")
    ev = Evaluator(model, tok, pipe, FAST)
    res8 = TK.run_likelihood_classification(ev, prof, tag)
    res3 = TK.run_likelihood_classification(
        ev.with_settings(batch_size=3, bucket_size=None), prof, tag)
    s8 = np.array([p["option_logps"] for p in res8.predictions])
    s3 = np.array([p["option_logps"] for p in res3.predictions])
    np.testing.assert_allclose(s8, s3, rtol=1e-4, atol=1e-3)
    # multi: equals an unpadded forward of one (question, option) sequence, answer tokens only
    from jaxunlearn.data.pipeline import encode_record
    res = TK.run_likelihood_classification(ev, prof, TK.Tag(modality="multi"))
    scores = np.array([p["option_logps"] for p in res.predictions])
    recs = question_records(prof, "llava", "eval", "classification", "multi")
    q = prof[0].questions("eval", "classification", "multi")[0]
    ex = encode_record({**recs[0], "answer": q.options[2]}, tok, pipe)
    logits = np.asarray(model.logits(ex["input_ids"][None], None,
                                     ex["image"]["pixel_values"][None]))[0]
    mx = logits.max(-1, keepdims=True)
    lp = logits - (mx + np.log(np.exp(logits - mx).sum(-1, keepdims=True)))
    ids, mask = ex["input_ids"], ex["loss_mask"].copy()
    mask[-1] = 0  # end token not counted
    manual = sum(lp[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t])
    assert scores[0, 2] == pytest.approx(manual, rel=1e-4, abs=1e-3)
    assert res.predictions[0]["prediction"] == "ABCD"[int(np.argmax(scores[0]))]
    assert res.predictions[0]["correct"] == (res.predictions[0]["prediction"] == q.answer)


def test_evaluate_tiny_vanilla_report_table_plots(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    sets = benchmark_sets(bench, "forget_10", max_profiles=1)
    res = Evaluator(model, tok, pipe, FAST).evaluate(sets)
    recs = res.records
    # every set x modality has every task's metrics, NLL and degeneration
    for s in ("forget", "test", "retain", "celebrity"):
        for mod in ("multi", "text"):
            got = {(r["task"], r["metric"]) for r in recs if r["set"] == s and r["modality"] == mod}
            assert {("classification", "accuracy"), ("classification", "likelihood_accuracy"),
                    ("generation", "rougeL"), ("generation", "degeneration"),
                    ("cloze", "accuracy"), ("qa", "nll")} <= got, (s, mod, got)
    n_forget = len([q for p in sets["forget"].profiles
                    for q in p.questions("eval", "classification", "multi")])
    assert lookup(recs, set="forget", task="classification", modality="multi",
                  metric="accuracy") is not None
    assert {r["n"] for r in recs if r["set"] == "forget" and r["task"] == "classification"
            and r["modality"] == "multi"} == {n_forget}
    assert len(res.predictions["forget/generation/text"]) > 0
    # vanilla knows the forget set: option likelihood well above chance (0.25). Six questions
    # per modality: one question is 0.17, so each modality must reach 2x chance and the two
    # together 0.6 (training-noise tolerant; fp reduction order changes the fixture slightly)
    acc = {mod: lookup(recs, set="forget", task="classification", modality=mod,
                       metric="likelihood_accuracy") for mod in ("multi", "text")}
    print("vanilla forget likelihood accuracy:", acc)
    assert min(acc.values()) >= 0.5 and sum(acc.values()) / 2 >= 0.6, acc
    # trained answers have low NLL on the forget set, higher on unseen celebrities
    nll = {s: lookup(recs, set=s, task="qa", modality="text", metric="nll")
           for s in ("forget", "celebrity")}
    assert nll["forget"] < 0.5 < nll["celebrity"], nll
    # report files
    path = R.write_run_report(tmp_path, {"split": "forget_10"}, "tiny", recs)
    data = json.loads(path.read_text())
    assert len(data["records"]) == len(recs)
    table = R.markdown_table(recs)
    assert "### Multimodal" in table and "### Text-only" in table
    row = next(line for line in table.splitlines() if line.startswith("| vanilla"))
    assert f"{100 * lookup(recs, set='forget', task='classification', modality='multi', metric='accuracy'):.1f}" in row  # noqa: E501
    bars = R.plot_modality_bars(recs, tmp_path / "bars.png", metric="likelihood_accuracy")
    assert bars["multi"]["y"] == [pytest.approx(acc["multi"])]
    assert bars["text"]["y"] == [pytest.approx(acc["text"])]
    trade = R.plot_tradeoff(recs, tmp_path / "trade.png", metric="likelihood_accuracy")
    assert trade["vanilla"]["y"] == [pytest.approx(acc["multi"])]
    for name in ("bars.png", "trade.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_eval_set_validation():
    with pytest.raises(ValueError, match="which"):
        EvalSet([], "train")
    with pytest.raises(ValueError, match="likelihood_target"):
        TK.option_records([{}], [_cls("q", "A")], "logits")


def test_rotated_classification_circular_accuracy(tiny_vanilla):
    """`rotations`: every question asked in its 4 cyclic option rotations; a fake model that
    always picks the option "blue" is right in all of them, one that always answers "A" is
    right in exactly one (MMBench circular evaluation: circular accuracy 0)."""
    model, tok, _, pipe = tiny_vanilla
    qs = [_cls(f"R{i} colour?", "C").rotated(i) for i in range(4)]  # "blue" at C, B, A, D
    assert [q.answer for q in qs] == list("CBAD") and {q.answer_text for q in qs} == {"blue"}
    prof = _profile(qs)
    cfg = dataclasses.replace(FAST, likelihood=False, rotations=True)

    def picker(choose):
        def generate(model, ids, mask, pixel_values=None, *, max_new_tokens, eos_token_id,
                     pad_token_id):
            rows = []
            for row, m in zip(np.asarray(ids), np.asarray(mask)):
                text = tok.decode(row[m.astype(bool)])
                letter = choose(text)
                rows.append(tok(letter, add_special_tokens=False)["input_ids"] + [eos_token_id])
            n = max(len(r) for r in rows)
            return np.array([r + [pad_token_id] * (n - len(r)) for r in rows], np.int32)
        return generate

    def knows_blue(text):
        return next(ltr for ltr in "ABCD" if f"{ltr}: blue" in text)

    for choose, circular, rotated in ((knows_blue, 1.0, 1.0), (lambda _: "A", 0.0, 0.25)):
        ev = Evaluator(model, tok, pipe, cfg, generate_fn=picker(choose))
        res = TK.run_classification(ev, [prof], TK.Tag(modality="text"))
        assert lookup(res.records, metric="circular_accuracy") == circular
        assert lookup(res.records, metric="rotated_accuracy") == rotated
        assert {r["n"] for r in res.records} == {len(qs)}
        assert all(len(p["rotations_correct"]) == 4 for p in res.predictions)
    # each question's options in the 4 rotations are the 4 cyclic shifts
    q = qs[0]
    assert [q.rotated(s).answer_text for s in range(4)] == [q.answer_text] * 4
    assert sorted(q.rotated(s).answer for s in range(4)) == list("ABCD")


def test_rotated_likelihood_classification_equals_each_rotation_asked_alone(tiny_vanilla):
    """`circular_likelihood_accuracy` = share of questions whose most likely option is right
    in every cyclic rotation, each rotation computed here by asking the rotated questions
    without `rotations`; `likelihood_accuracy` stays the unrotated score."""
    model, tok, _, pipe = tiny_vanilla
    qs = [_cls(f"R{i} colour?", "C").rotated(i) for i in range(4)]
    ev = Evaluator(model, tok, pipe, dataclasses.replace(FAST, likelihood=True, rotations=True))
    res = TK.run_likelihood_classification(ev, [_profile(qs)], TK.Tag(modality="text"))
    alone = []
    for s in range(4):
        ev1 = Evaluator(model, tok, pipe,
                        dataclasses.replace(FAST, likelihood=True, rotations=False))
        one = TK.run_likelihood_classification(ev1, [_profile([q.rotated(s) for q in qs])],
                                               TK.Tag(modality="text"))
        alone.append([p["correct"] for p in one.predictions])
    circular = float(np.mean(np.asarray(alone, bool).all(axis=0)))
    assert lookup(res.records, metric="circular_likelihood_accuracy") == circular
    assert lookup(res.records, metric="likelihood_accuracy") == float(np.mean(alone[0]))
