"""General-utility benchmarks (jaxunlearn.eval.utility, jaxunlearn.data.utility_sets).

Fixtures are written by the tests in the published layouts:

- MMBench: the VLMEvalKit TSV (``vlmeval/dataset/image_base.py`` ``ImageBaseDataset.__init__``
  reads ``index`` and ``image`` (base64, or the index of the row holding it when <= 64
  characters); ``vlmeval/dataset/image_mcq.py`` ``ImageMCQDataset.build_prompt`` reads
  ``question``, ``hint`` (NaN = none) and the option columns ``A``..``D`` (NaN = absent);
  ``vlmeval/dataset/utils/multiple_choice.py`` ``mcq_circular_eval`` reads ``answer`` and
  groups rows by ``index % 1e6``; ``report_acc`` reads ``category``).
- MMMU: ``MMMU/MMMU`` parquet per subject (``mmmu/utils/data_utils.py``
  ``process_single_sample`` / ``construct_prompt`` read ``id``, ``question``, ``options`` (a
  list as a string, ``eval``-ed), ``answer``, ``question_type``, ``image_1``; the dataset card
  lists ``explanation``, ``image_1``..``image_7`` (image = {bytes, path}), ``img_type``,
  ``topic_difficulty``, ``subfield``).
- MM-Vet: ``mm-vet.json`` (``mm-vet_evaluator.py`` ``load_metadata`` / ``runs`` read
  ``capability``, ``question``, ``answer``; ``inference/gpt4v.py`` reads ``imagename`` under
  ``images/``).
- LLaVA-Bench (In-the-Wild): ``questions.jsonl``, ``context.jsonl``, ``answers_gpt4.jsonl``
  and ``images/`` in one folder (haotian-liu/LLaVA ``scripts/v1_5/eval/llavabench.sh``);
  ``llava/eval/eval_gpt_review_bench.py`` (``__main__``) reads ``question_id``, ``image``,
  ``text`` and ``category`` of a question, ``image`` and ``caption`` (a list, joined with
  newlines) of a context row, ``text`` (and ``answer_id``) of a reference answer.
"""

from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from jaxunlearn.data import utility_sets as U
from jaxunlearn.data.schema import load_image
from jaxunlearn.eval import utility as UT
from jaxunlearn.eval.judge import Judge, JudgeConfig
from test_eval_judge import server  # noqa: F401  (the fake OpenAI-compatible server)


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def write_mmbench(path):
    """Question 0: 4 options with its 3 circular copies in the file (copies' image = "0");
    question 1: 2 options, no hint, no copies (rotations are generated)."""
    import pandas as pd

    img0 = base64.b64encode(_png((255, 0, 0))).decode()
    img1 = base64.b64encode(_png((0, 0, 255))).decode()
    opts = ["cat", "dog", "bird", "fish"]
    rows = []
    for k in range(4):
        shifted = opts[k:] + opts[:k]
        rows.append({"index": k * 1_000_000, "question": "What animal is shown?",
                     "hint": "A pet.", "A": shifted[0], "B": shifted[1], "C": shifted[2],
                     "D": shifted[3], "answer": "ABCD"[shifted.index("dog")],
                     "category": "object_localization", "image": img0 if k == 0 else "0",
                     "l2-category": "finegrained_perception", "split": "dev"})
    rows.append({"index": 1, "question": "Is it blue?", "hint": None, "A": "yes", "B": "no",
                 "C": None, "D": None, "answer": "A", "category": "attribute_recognition",
                 "image": img1, "l2-category": "coarse_perception", "split": "dev"})
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def write_mmmu(root):
    """Subject Math, split validation: a multiple-choice, an open, a two-image question and
    one with images in its options (``<img='...'>``, data_utils.parse_img_path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def img(color):
        return {"bytes": _png(color), "path": None}
    base = {f"image_{k}": None for k in range(1, 8)}
    rows = [
        {**base, "id": "validation_Math_1", "question": "<image 1> Which fruit is red?",
         "options": "['banana', 'red apple', 'grape', 'kiwi']", "explanation": "",
         "image_1": img((255, 0, 0)), "img_type": "['Photographs']", "answer": "B",
         "topic_difficulty": "Easy", "question_type": "multiple-choice", "subfield": "Fruit"},
        {**base, "id": "validation_Math_2", "question": "<image 1> What is x?",
         "options": "[]", "explanation": "", "image_1": img((0, 255, 0)),
         "img_type": "['Plots and Charts']", "answer": "1.06", "topic_difficulty": "Medium",
         "question_type": "open", "subfield": "Algebra"},
        {**base, "id": "validation_Math_3", "question": "<image 1> <image 2> Same?",
         "options": "['yes', 'no']", "explanation": "", "image_1": img((0, 0, 0)),
         "image_2": img((9, 9, 9)), "img_type": "['Diagrams']", "answer": "A",
         "topic_difficulty": "Hard", "question_type": "multiple-choice", "subfield": "Logic"},
        {**base, "id": "validation_Math_4", "question": "Which plot is rising?",
         "options": "[\"<img='a.png'>\", \"<img='b.png'>\"]", "explanation": "",
         "image_1": img((1, 1, 1)), "img_type": "['Plots and Charts']", "answer": "B",
         "topic_difficulty": "Easy", "question_type": "multiple-choice", "subfield": "Plots"},
    ]
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.string()), ("question", pa.string()),
                        ("options", pa.string()), ("explanation", pa.string()),
                        *[(f"image_{k}", image_t) for k in range(1, 8)],
                        ("img_type", pa.string()), ("answer", pa.string()),
                        ("topic_difficulty", pa.string()), ("question_type", pa.string()),
                        ("subfield", pa.string())])
    (root / "Math").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema),
                   root / "Math" / "validation-00000-of-00001.parquet")
    return root


def write_mmvet(root):
    root.mkdir(parents=True)
    (root / "images").mkdir()
    data = {"v1_0": {"imagename": "v1_0.png", "capability": ["rec", "ocr"],
                     "question": "What is written?", "answer": "stop"},
            "v1_1": {"imagename": "v1_1.png", "capability": ["rec"],
                     "question": "What animal?", "answer": "cat<OR>kitten"},
            "v1_2": {"imagename": "v1_2.png", "capability": ["ocr", "math"],
                     "question": "Solve it.", "answer": "-1<AND>-5"}}
    for k, v in data.items():
        (root / "images" / v["imagename"]).write_bytes(_png((len(k), 0, 0)))
    (root / "mm-vet.json").write_text(json.dumps(data))
    return root


def write_llava_bench(root):
    """Two images, three questions (conv, detail, complex); a two-line caption list."""
    (root / "images").mkdir(parents=True)
    for name, color in (("001.jpg", (200, 10, 10)), ("002.jpg", (10, 10, 200))):
        Image.new("RGB", (8, 8), color).save(root / "images" / name, format="JPEG")
    questions = [{"question_id": 0, "image": "001.jpg", "text": "What colour is it?",
                  "category": "conv"},
                 {"question_id": 1, "image": "001.jpg", "text": "Describe the image.",
                  "category": "detail"},
                 {"question_id": 2, "image": "002.jpg", "text": "Why might it be blue?",
                  "category": "complex"}]
    context = [{"id": "c1", "image": "001.jpg", "caption": ["A red square.", "Nothing else."]},
               {"id": "c2", "image": "002.jpg", "caption": ["A blue square."]}]
    answers = [{"question_id": q["question_id"], "prompt": q["text"], "answer_id": f"a{i}",
                "model_id": "gpt-4-0314", "metadata": {},
                "text": ["It is red.", "A red square.", "It is painted blue."][i]}
               for i, q in enumerate(questions)]
    for name, rows in (("questions.jsonl", questions), ("context.jsonl", context),
                       ("answers_gpt4.jsonl", answers)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_llava_bench_folder_loads_every_field(tmp_path):
    items = U.load_llava_bench(write_llava_bench(tmp_path / "llava-bench-in-the-wild")).items
    assert [(it.id, it.question, it.answer, it.category, it.context) for it in items] == [
        ("0", "What colour is it?", "It is red.", "conv", "A red square.\nNothing else."),
        ("1", "Describe the image.", "A red square.", "detail", "A red square.\nNothing else."),
        ("2", "Why might it be blue?", "It is painted blue.", "complex", "A blue square.")]
    assert items[0].image.size == (8, 8) and load_image(items[2].image).getpixel((4, 4))[2] > 150
    (tmp_path / "llava-bench-in-the-wild" / "answers_gpt4.jsonl").write_text("")
    with pytest.raises(ValueError, match="answers_gpt4.jsonl has no answer for question_id 0"):
        U.load_llava_bench(tmp_path / "llava-bench-in-the-wild")


# ------------------------------------------------------------------------ MMBench

def test_mmbench_tsv_loads_every_field(tmp_path):
    items = U.load_mmbench(write_mmbench(tmp_path / "MMBench_DEV_EN.tsv")).items
    assert [it.index for it in items] == [0, 1_000_000, 2_000_000, 3_000_000, 1]
    first = items[0]
    assert (first.group, first.question, first.hint, first.category) == (
        0, "What animal is shown?", "A pet.", "object_localization")
    assert first.options == {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}
    assert first.answer == "B" and load_image(first.image).getpixel((0, 0)) == (255, 0, 0)
    assert first.image.rgb  # opened as RGB, as VLMEvalKit's decode_base64_to_image does
    copy = items[1]  # image by reference to row 0
    assert copy.group == 0 and copy.options["A"] == "dog" and copy.answer == "A"
    assert load_image(copy.image).getpixel((0, 0)) == (255, 0, 0)
    last = items[4]
    assert last.hint is None and last.options == {"A": "yes", "B": "no"} and last.answer == "A"
    assert load_image(last.image).getpixel((0, 0)) == (0, 0, 255)
    groups = U.circular_groups(items)
    assert [len(g) for g in groups.values()] == [4, 2]
    assert groups[1][1].options == {"A": "no", "B": "yes"} and groups[1][1].answer == "B"
    assert "Hint: A pet.\nQuestion: What animal is shown?\nOptions:\nA. cat\n" in \
        UT.mmbench_prompt(first)
    assert len(U.load_mmbench(tmp_path / "MMBench_DEV_EN.tsv", limit=1).items) == 4


def test_mmbench_answer_matching_and_circular_rule(tmp_path):
    opts = {"A": "cat", "B": "dog", "C": "bird", "D": "fish"}
    assert UT.match_option("B", opts) == "B"
    assert UT.match_option("(C) bird", opts) == "C"
    assert UT.match_option("The answer is D", opts) == "D"
    assert UT.match_option("a dog", opts) == "B"          # a unique option text
    assert UT.match_option("cat or dog", opts) is None    # two texts: undecided
    assert UT.match_option("Cannot determine the answer", opts) == "Z"
    group = U.circular_groups(U.load_mmbench(write_mmbench(tmp_path / "m.tsv")).items)[0]
    right = [r.answer for r in group]                     # B, A, D, C
    assert UT.circular_hit(group, right)
    assert UT.circular_hit(group, ["dog", "dog", "(D)", "The answer is C"])
    assert not UT.circular_hit(group, right[:3] + ["A"])  # one wrong rotation
    assert not UT.circular_hit(group, right[:3] + ["no idea"])  # one unmatched rotation


# ------------------------------------------------------------------------ MMMU

def test_mmmu_parquet_loads_every_field_and_counts_multi_image(tmp_path):
    loaded = U.load_mmmu(write_mmmu(tmp_path / "MMMU"))
    assert (loaded.first_image_only, loaded.without_image, len(loaded.items)) == (1, 1, 4)
    mc, op, two, opt_imgs = loaded.items
    assert two.n_images == 2 and load_image(two.image).getpixel((0, 0)) == (0, 0, 0)  # image_1
    assert opt_imgs.image is None and opt_imgs.options[0] == "<img='a.png'>"
    assert (mc.id, mc.subject, mc.question, mc.question_type, mc.answer) == (
        "validation_Math_1", "Math", "<image 1> Which fruit is red?", "multiple-choice", "B")
    assert mc.options == ["banana", "red apple", "grape", "kiwi"]
    assert load_image(mc.image).getpixel((0, 0)) == (255, 0, 0)
    assert (op.question_type, op.answer, op.options) == ("open", "1.06", [])
    assert load_image(op.image).getpixel((0, 0)) == (0, 255, 0)
    assert UT.mmmu_prompt(mc) == ("<image 1> Which fruit is red?\n(A) banana\n(B) red apple\n"
                                  "(C) grape\n(D) kiwi\n\nAnswer with the option's letter "
                                  "from the given choices directly.")
    assert UT.mmmu_prompt(op).endswith("\nAnswer the question using a single word or phrase.")
    with pytest.raises(FileNotFoundError, match="no MMMU parquet"):
        U.load_mmmu(tmp_path / "MMMU", split="test")


def test_mmmu_scoring_follows_the_authors_parsing(tmp_path):
    mc, op = U.load_mmmu(write_mmmu(tmp_path / "MMMU")).items[:2]
    rng = random.Random(42)
    for response, pred in [("(B)", "B"), ("The answer is B", "B"), ("B.", "B"),
                           ("I am quite sure it is the red apple here", "B"),
                           ("(A) is wrong, (B) is right", "B")]:
        assert UT.mmmu_correct(mc, response, rng)[0] == pred, response
    assert not UT.mmmu_correct(mc, "(C)", rng)[1]
    assert UT.mmmu_correct(mc, "???", random.Random(42))[0] == random.Random(42).choice("ABCD")
    assert UT.mmmu_correct(op, "The result is 1.060.", rng)[1]
    assert UT.mmmu_correct(op, "x = 1.06", rng)[1]
    assert not UT.mmmu_correct(op, "It is 2.5", rng)[1]
    assert UT.open_correct(["24/7", "3.429"], UT.parse_open("so x is 3.429"))
    assert UT.open_correct("Transformation", UT.parse_open("This is transformation."))


# ------------------------------------------------------------------------ judged

def test_mmvet_through_the_fake_server_equals_the_hand_computed_score(server, tmp_path):  # noqa: F811
    items = U.load_mmvet(write_mmvet(tmp_path / "mm-vet")).items
    assert [(it.id, it.answer, it.category) for it in items] == [
        ("v1_0", "stop", ("rec", "ocr")), ("v1_1", "cat<OR>kitten", ("rec",)),
        ("v1_2", "-1<AND>-5", ("ocr", "math"))]
    server.script = [(200, "0.8"), (200, "1.0 totally"), (200, "great"), (200, "0.3")]
    judge = Judge(JudgeConfig(server.url, "judge-m", max_retries=1, backoff_base_s=0.01,
                              timeout_s=5.0))
    scores, gave_up = UT.mmvet_scores(judge, items, ["STOP", "a kitten", "x = -1"])
    assert scores == [0.8, 1.0, 0.3] and gave_up == 0
    summary = UT.mmvet_summary(items, scores)
    assert summary["total"] == (pytest.approx(100 * 2.1 / 3), 3)
    assert summary["rec"] == (pytest.approx(90.0), 2)
    assert summary["ocr"] == (pytest.approx(55.0), 2)
    assert summary["math"] == (pytest.approx(30.0), 1)
    first, retry = server.requests[0]["body"], server.requests[3]["body"]
    assert first["max_tokens"] == 3 and first["temperature"] == 0
    assert first["messages"][0]["content"].endswith("\nWhat is written? | stop | STOP | ")
    assert " -1 <AND> -5 | x = -1 | " in retry["messages"][0]["content"]
    assert retry["messages"][0]["content"].endswith(UT.MMVET_RETRY_SUFFIX)
    assert retry["temperature"] == 0.5


def test_llava_bench_relative_score_and_parse(server):  # noqa: F811
    assert UT.parse_llava("8 6\nbecause") == [8.0, 6.0]
    assert UT.parse_llava("8,6") == [8.0, 6.0] and UT.parse_llava("eight") is None
    assert UT.parse_llava("8, 6") is None  # the authors split on single spaces: 3 parts
    items = [U.OpenItem("0", "q0", "ref0", None, "conv", "a cat"),
             U.OpenItem("1", "q1", "ref1", None, "detail", "a dog")]
    server.script = [(200, "8 6\nok"), (200, "10 10\nok")]
    judge = Judge(JudgeConfig(server.url, "judge-m", max_retries=0, timeout_s=5.0))
    pairs = UT.llava_pairs(judge, items, ["ans0", "ans1"])
    summary = UT.llava_summary(items, pairs)
    assert summary["all"] == (pytest.approx(100 * 8 / 9), 2)
    assert summary["llava_bench_conv"] == (pytest.approx(75.0), 1)
    body = server.requests[0]["body"]
    assert body["temperature"] == 0.2 and body["messages"][0]["content"] == UT.LLAVA_SYSTEM
    assert body["messages"][1]["content"].startswith("[Context]\na cat\n\n[Question]\nq0")


def test_judged_benchmarks_without_a_judge_say_so(tmp_path):
    from types import SimpleNamespace

    opts = UT.UtilityOptions(benchmarks=("mmvet",), mmvet_dir=str(tmp_path))
    with pytest.raises(ValueError, match="mmvet is scored by an LLM judge and none is "
                                         "configured"):
        UT.run_utility(SimpleNamespace(judge=None), opts)
    with pytest.raises(ValueError, match="protocol.options.mmbench_tsv is needed"):
        UT.UtilityOptions(benchmarks=("mmbench",))


# ------------------------------------------------------------------------ CLI

@pytest.mark.parametrize("family", ["llava", "llava_onevision", "qwen2_5_vl"])
def test_cli_protocol_utility_reports_each_score_with_n(family, tmp_path, capsys):
    """MMBench (circular) and MMMU from their published files through `protocol utility` on
    three families (Qwen2-VL runs the judged benchmarks below): every score with its n, the
    multi-image note, and the per-question rows."""
    from hf_fixtures import save_tiny_family
    from jaxunlearn.cli import main
    from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

    bench = generate_benchmark(SynthConfig(seed=0, n_profiles=10, n_celebrities=4,
                                           image_size=32))
    model = save_tiny_family(family, tmp_path / "model", bench=bench)
    tsv = write_mmbench(tmp_path / "MMBench_DEV_EN.tsv")
    mmmu = write_mmmu(tmp_path / "MMMU")
    out = tmp_path / "out"
    rc = main(["protocol", "utility", "data.synthetic.n_profiles=10",
               "data.synthetic.n_celebrities=4", "data.synthetic.image_size=32",
               "data.max_length=256", "eval.batch_size=4", "eval.bucket_size=256",
               "eval.progress=false", f"protocol.options.mmbench_tsv={tsv}",
               f"protocol.options.mmmu_dir={mmmu}", "protocol.options.choice_max_new_tokens=3",
               f"output.dir={out}", "--model", str(model)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    heads = {(r["task"], r["metric"]): r for r in report["records"]}
    assert heads[("mmbench", "circular_accuracy")]["n"] == 2
    assert heads[("mmmu", "accuracy")]["n"] == 4
    assert all(0.0 <= r["value"] <= 1.0 for r in heads.values())
    md = (out / "report.md").read_text()
    assert "| vanilla | 0 | mmbench | circular_accuracy |" in md
    assert "1 questions with several images asked with image_1, 1 without image" in md
    rows = json.loads((out / "utility_rows.json").read_text())
    assert len(rows["mmbench"]) == 6 and len(rows["mmmu"]) == 4
    assert np.isfinite([r["value"] for r in report["records"]]).all()


def test_cli_protocol_utility_judged_benchmarks(server, tmp_path, capsys):  # noqa: F811
    """MM-Vet and LLaVA-Bench from their published folders through `protocol utility`, judged
    by the fake OpenAI-compatible server configured under `eval.judge`: every score is the
    authors' aggregation of the scripted replies, with its n; an unparsable LLaVA-Bench
    review is left out of n and counted in the note."""
    from hf_fixtures import save_tiny_family
    from jaxunlearn.cli import main
    from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

    bench = generate_benchmark(SynthConfig(seed=0, n_profiles=10, n_celebrities=4,
                                           image_size=32))
    model = save_tiny_family("qwen2_vl", tmp_path / "model", bench=bench)
    mmvet = write_mmvet(tmp_path / "mm-vet")
    llava = write_llava_bench(tmp_path / "llava-bench-in-the-wild")
    server.script = [(200, "0.8"), (200, "1.0"), (200, "0.3"),  # MM-Vet, in file order
                     (200, "8 6\nfine"), (200, "10,5\nok"), (200, "eight\n?")]  # LLaVA-Bench
    out = tmp_path / "out"
    rc = main(["protocol", "utility", "data.synthetic.n_profiles=10",
               "data.synthetic.n_celebrities=4", "data.synthetic.image_size=32",
               "data.max_length=256", "eval.batch_size=4", "eval.bucket_size=256",
               "eval.progress=false", f"eval.judge.base_url={server.url}",
               "eval.judge.model=judge-m", "eval.judge.max_retries=0",
               f"protocol.options.mmvet_dir={mmvet}", f"protocol.options.llava_bench_dir={llava}",
               "protocol.options.open_max_new_tokens=4", f"output.dir={out}",
               "--model", str(model)])
    assert rc == 0, capsys.readouterr().err
    recs = {(r["task"], r["metric"]): (r["value"], r["n"])
            for r in json.loads((out / "report.json").read_text())["records"]}
    assert recs[("mmvet", "score")] == (pytest.approx(100 * 2.1 / 3), 3)
    assert recs[("mmvet", "score/ocr")] == (pytest.approx(55.0), 2)
    assert recs[("mmvet", "score/math")] == (pytest.approx(30.0), 1)
    assert recs[("llava_bench", "relative_score")] == (pytest.approx(100 * 5.5 / 9), 2)
    assert recs[("llava_bench", "relative_score/llava_bench_conv")] == (pytest.approx(75.0), 1)
    assert recs[("llava_bench", "relative_score/llava_bench_detail")] == (pytest.approx(50.0), 1)
    assert ("llava_bench", "relative_score/llava_bench_complex") not in recs
    assert "1 judge failures (excluded from n)" in (out / "report.md").read_text()
    review = server.requests[3]["body"]
    assert review["messages"][0]["content"] == UT.LLAVA_SYSTEM
    assert review["messages"][1]["content"].startswith(
        "[Context]\nA red square.\nNothing else.\n\n[Question]\nWhat colour is it?\n\n"
        "[Assistant 1]\nIt is red.\n\n[End of Assistant 1]\n\n[Assistant 2]\n")
    rows = json.loads((out / "utility_rows.json").read_text())
    assert [r["judge"] for r in rows["llava_bench"]] == [[8.0, 6.0], [10.0, 5.0], None]


def test_utility_rows_and_plot_across_methods(tmp_path):
    from jaxunlearn.eval.plots import plot_utility_forgetting
    from jaxunlearn.eval.protocols import MllmuOptions, PulseSequentialOptions
    from jaxunlearn.eval.records import make_record

    recs = []
    for method, step, forget, mmb in [("vanilla", 0, 0.9, 0.6), ("ga", 1, 0.2, 0.3),
                                      ("npo", 1, 0.4, 0.55)]:
        recs.append(make_record(method, "forget", "classification", "multi", "accuracy",
                                forget, 10, protocol="sequential", step=step))
        recs.append(make_record(method, "utility", "mmbench", "multi", "circular_accuracy",
                                mmb, 5, protocol="sequential", step=step))
    series = plot_utility_forgetting(recs, tmp_path / "u.png", protocol="sequential")
    assert series["mmbench circular_accuracy"]["x"] == [0.9, 0.2, 0.4]
    assert series["mmbench circular_accuracy"]["y"] == [0.6, 0.3, 0.55]
    assert (tmp_path / "u.png").stat().st_size > 0
    md = UT.utility_markdown(recs, {"mmbench": "20 rotations of 5 questions"})
    assert "| ga | 1 | mmbench | circular_accuracy | 30.0 | 5 | 20 rotations" in md
    with pytest.raises(ValueError, match="protocol.options.utility"):
        MllmuOptions(utility={"benchmarks": ["mmbench"], "mmbench_tsvv": "x"})
    assert PulseSequentialOptions(utility={"benchmarks": ["mmmu"], "mmmu_dir": "d"}).utility


def test_pulse_sequential_runs_utility_after_each_request(tiny_vanilla, tmp_path, monkeypatch):
    import test_eval_protocols as TP  # the cheap test_noise method
    from jaxunlearn.eval import protocols as P
    from jaxunlearn.eval.evaluate import Evaluator
    from jaxunlearn.methods import base
    from jaxunlearn.train import TrainConfig

    monkeypatch.setattr(base, "_import_all", lambda: None)
    TP.register_noise(monkeypatch)
    model, tok, bench, pipe = tiny_vanilla
    ev = Evaluator(model, tok, pipe, TP.FAST)
    tsv = write_mmbench(tmp_path / "MMBench_DEV_EN.tsv")
    res = P.run_protocol("pulse", ev, P.Study(bench, "test_noise", out_dir=tmp_path / "out",
                                              train=TrainConfig(subset="llm")),
                         {"scenario": "sequential", "k": 1, "max_profiles": 1,
                          "generality": False,
                          "utility": {"mmbench_tsv": str(tsv), "choice_max_new_tokens": 2}})
    util = [r for r in res.records if r["set"] == "utility"]
    assert [(r["step"], r["task"], r["n"]) for r in util] == [(0, "mmbench", 2),
                                                              (1, "mmbench", 2)]
    assert "## General utility" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "utility_forgetting.png").read_bytes()[:4] == b"\x89PNG"
