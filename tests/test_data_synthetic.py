"""Synthetic benchmark: determinism, splits, identity images, round trip through the layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from jaxunlearn.data.cli_data import show_main
from jaxunlearn.data.mllmu import load_mllmu
from jaxunlearn.data.schema import load_image
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark, write_synthetic

SMALL = SynthConfig(seed=3, n_profiles=20, n_celebrities=6, image_size=32)


def _digest(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synth_a")
    return root, write_synthetic(root, SMALL)


def test_byte_identical_for_same_seed(written, tmp_path: Path) -> None:
    root, _ = written
    write_synthetic(tmp_path / "b", SMALL)
    first, second = _digest(root), _digest(tmp_path / "b")
    assert len(first) >= 12 and first == second
    write_synthetic(tmp_path / "c", SynthConfig(seed=4, n_profiles=20, n_celebrities=6,
                                                image_size=32))
    assert _digest(tmp_path / "c")["Full_Set/train-00000-of-00001.parquet"] != \
        first["Full_Set/train-00000-of-00001.parquet"]


def test_default_sizes_and_content() -> None:
    bench = generate_benchmark(SynthConfig(n_profiles=10, n_celebrities=3))
    p = bench.profiles[0]
    assert p.image.size == (64, 64) and len(p.test_images) == 3
    assert len(p.train_qa) == 10
    assert sum(q.modality == "multi" for q in p.train_qa) == 5
    assert ("Who is this person?", p.name) in [(q.question, q.answer) for q in p.train_qa]
    for qa in p.train_qa:
        assert ("this person" in qa.question) == (qa.modality == "multi")
        assert (p.name in qa.question) == (qa.modality == "text")
    for qs in (p.eval_questions, p.test_questions):
        kinds = {(q.kind, q.modality) for q in qs}
        assert kinds == {(k, m) for k in ("classification", "generation", "cloze")
                         for m in ("multi", "text")}
    assert not {q.question for q in p.test_questions if q.kind != "cloze"} & \
        {q.question for q in p.eval_questions if q.kind != "cloze"}  # paraphrased
    assert {q.question for q in p.understanding_qa} >= {
        "What colour is the background of this picture?", "Is this person wearing glasses?"}
    names = [x.name for x in [*bench.profiles, *bench.celebrities]]
    assert len(set(names)) == len(names)


def test_splits_disjoint_by_person(written) -> None:
    _, bench = written
    ids = {p.id for p in bench.profiles}
    celebs = set(bench.splits["celebrity"])
    assert celebs == {p.id for p in bench.celebrities} and not celebs & ids
    for pct in (5, 10, 15):
        forget = set(bench.splits[f"forget_{pct}"])
        retain = set(bench.splits[f"retain_{100 - pct}"])
        assert forget and not forget & retain and forget | retain == ids
        assert len(forget) == max(1, round(len(ids) * pct / 100))
    assert set(bench.splits["forget_5"]) <= set(bench.splits["forget_10"]) <= \
        set(bench.splits["forget_15"])
    assert set(bench.splits["test"]) == ids  # transformed images of the fictitious people
    f, r = set(bench.splits["pulse_ft_forget"]), set(bench.splits["pulse_ft_retain"])
    assert len(f) == len(r) == SMALL.pulse_n // 2 and not f & r
    parts = [bench.splits[f"pulse_seq_{k}"] for k in range(1, 6)]
    assert sorted(sum(parts, [])) == sorted(bench.splits["forget_15"])


def _feature(img) -> np.ndarray:
    """Brightness-normalised pixels: each image divided by its mean intensity."""
    x = np.asarray(img, np.float64)
    return (x / x.mean()).ravel()


def test_test_images_keep_identity() -> None:
    bench = generate_benchmark(SynthConfig(seed=1, n_profiles=40, n_celebrities=0))
    originals = np.stack([_feature(p.image) for p in bench.profiles])
    hits, total = 0, 0
    for i, p in enumerate(bench.profiles):
        for t in p.test_images:
            assert np.abs(np.asarray(t, np.int16) - np.asarray(p.image, np.int16)).mean() > 1.0
            dist = np.linalg.norm(originals - _feature(t), axis=1)
            hits += int(np.argmin(dist) == i)
            total += 1
    assert hits / total >= 0.95, f"{hits}/{total} test images nearest to their own person"


def test_layout_round_trip(written) -> None:
    root, bench = written
    loaded = load_mllmu(root)
    assert loaded.splits == bench.splits
    assert [p.id for p in loaded.profiles] == [p.id for p in bench.profiles]
    for a, b in zip([*loaded.profiles, *loaded.celebrities], [*bench.profiles, *bench.celebrities]):
        assert (a.id, a.name, a.attributes) == (b.id, b.name, b.attributes)
        assert a.train_qa == b.train_qa and a.eval_questions == b.eval_questions
        assert a.understanding_qa == b.understanding_qa
        assert np.array_equal(np.asarray(load_image(a.image)), np.asarray(b.image))
    for a, b in zip(loaded.profiles, bench.profiles):
        assert a.test_questions == b.test_questions
        assert len(a.test_images) == len(b.test_images)
        for x, y in zip(a.test_images, b.test_images):
            assert np.array_equal(np.asarray(load_image(x)), np.asarray(y))


def test_show_main(written, capsys) -> None:
    root, _ = written
    table = show_main(str(root))
    assert "fictitious profiles" in table and "split forget_5" in table
    assert "eval cloze / text" in capsys.readouterr().out


def test_people_distractors_and_trained_question_formats() -> None:
    """`distractors='people'`: every wrong option is another person's value of the asked
    attribute, answer letters balanced per person; `trained_question_records` gives each
    classification question in its 4 option rotations (seed None) or one random order per
    seed, so no answer letter is tied to a question."""
    from jaxunlearn.data.pipeline import trained_question_records
    from jaxunlearn.data.schema import LETTERS

    cfg = SynthConfig(seed=3, n_profiles=8, n_celebrities=2, image_size=16)
    pool = generate_benchmark(cfg)
    people = generate_benchmark(SynthConfig(**{**cfg.__dict__, "distractors": "people"}))
    everyone = [*people.profiles, *people.celebrities]
    for p, p0 in zip(everyone, [*pool.profiles, *pool.celebrities]):
        for q, q0 in zip(p.eval_questions + p.test_questions,
                         p0.eval_questions + p0.test_questions):
            if q.kind != "classification":
                assert q == q0
                continue
            assert q.answer_text == q0.answer_text
            attr = next(a for a, v in p.attributes.items() if v == q.answer_text)
            values = {o.attributes[attr] for o in everyone if o.id != p.id}
            wrong = [o for o in q.options if o != q.answer_text]
            assert len(wrong) == 3 and set(wrong) <= values
        letters = [q.answer for q in p.questions("eval", "classification")]
        assert len(set(letters)) == min(4, len(letters))
    with pytest.raises(ValueError, match="distractors"):
        SynthConfig(distractors="nope")

    p = people.profiles[0]
    n_cls = len(p.questions("eval", "classification"))
    n_cloze = len(p.questions("eval", "cloze", "multi"))
    rot = trained_question_records([p], "llava", ("classification",))
    assert len(rot) == 4 * n_cls
    first = rot[:4]
    assert sorted(r["answer"] for r in first) == list(LETTERS)
    assert len(trained_question_records([p], "llava", ("cloze",), "multi")) == n_cloze
    assert all(r["image"] is not None for r in trained_question_records([p], "llava", ("cloze",),
                                                                        "multi"))
    letters = {tuple(r["answer"] for r in trained_question_records([p], "llava",
                                                                   ("classification",), seed=e))
               for e in range(8)}
    assert len(letters) > 1  # a new option order per epoch seed
    once = trained_question_records([p], "llava", ("classification",), seed=5)
    assert once == trained_question_records([p], "llava", ("classification",), seed=5)


def test_trained_classification_repeats_draw_their_own_orders() -> None:
    """`repeats=R` gives every classification question R times per call, each in its own
    random option order with the letter of the same right option; the first draw of R = 1 is
    unchanged, other kinds are not repeated, and R != 1 with the 4 rotations is an error."""
    import re

    from jaxunlearn.data.pipeline import trained_question_records

    bench = generate_benchmark(SynthConfig(seed=3, n_profiles=6, n_celebrities=2,
                                           image_size=16, distractors="people"))
    p = bench.profiles[0]
    kinds = ("classification", "cloze")
    one = trained_question_records([p], "llava", kinds, seed=11)
    many = trained_question_records([p], "llava", kinds, seed=11, repeats=5)
    cls = [q for q in p.eval_questions if q.kind == "classification"]
    assert len(many) == len(one) + 4 * len(cls)
    assert [r for r in many if r["kind"] == "cloze"] == [r for r in one if r["kind"] == "cloze"]
    assert many[0] == one[0]  # the first order of the first question is the R = 1 draw
    for i, q in enumerate(cls):
        recs = many[5 * i:5 * i + 5]
        assert len({r["prompt"] for r in recs}) > 1  # its own orders
        for r in recs:  # the answer letter names the right option in that order
            chosen = re.search(rf"\n{r['answer']}: (.*)\n", r["prompt"]).group(1)
            assert chosen == q.answer_text
    # a method's forget set is answered as the model was trained
    from jaxunlearn.data.pipeline import PipelineConfig
    from jaxunlearn.methods.base import UnlearnData

    data = UnlearnData(None, PipelineConfig(), [p], bench.profiles[1:],
                       question_kinds=("classification",), classification_answer="letter_option")
    forget = [r for r in data.records("forget") if r["kind"] == "classification"]
    assert len(forget) == len(cls)  # every question (both modalities) once
    for r in forget:
        letter, option = r["answer"].split(": ", 1)
        assert f"\n{letter}: {option}\n" in r["prompt"]
    with pytest.raises(ValueError, match="classification_answer"):
        trained_question_records([p], "llava", kinds, seed=1, classification_answer="text")
    with pytest.raises(ValueError, match="repeats"):
        trained_question_records([p], "llava", kinds, repeats=2)
    with pytest.raises(ValueError, match="repeats"):
        trained_question_records([p], "llava", kinds, seed=1, repeats=0)
