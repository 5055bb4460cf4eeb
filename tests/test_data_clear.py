"""CLEAR (``therem/CLEAR``) from its published layout: the fixture written by
``tests/clear_fixture.py`` (columns and their sources in its docstring) loads with every field
checked; split pairing, format detection and one-line errors naming file and field."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clear_fixture import PEOPLE, png, write_clear
from jaxunlearn import session
from jaxunlearn.config import DEFAULTS, merge_into
from jaxunlearn.data.clear import (
    IMAGE_CAPTION_QUESTIONS,
    NAME_QUESTION,
    complement,
    is_clear,
    load_clear,
)
from jaxunlearn.data.schema import LETTERS, EncodedImage, load_image
from jaxunlearn.eval.evaluate import benchmark_sets, complement_split


@pytest.fixture(scope="module")
def clear_dir(tmp_path_factory):
    return write_clear(tmp_path_factory.mktemp("clear"))


def _cfg(**data):
    return merge_into(DEFAULTS, {"data": data})


def test_every_field(clear_dir):
    bench = load_clear(clear_dir)
    images = [p for p in bench.profiles if p.id.startswith("img-")]
    texts = [p for p in bench.profiles if p.id.startswith("qa-")]
    assert len(images) == 8 and len(texts) == 3  # 4 people x 2 images; 1 + 2 TOFU rows
    for i, p in enumerate(images):  # full's order (two shards, in name order)
        name, k = PEOPLE[i // 2], i % 2
        assert p.name == name
        # kept as the file's bytes (decoded on use), not as a decoded image
        assert isinstance(p.image, EncodedImage) and p.image.data == png(i + 1)
        assert p.image.size == (8, 8) and p.image.format == "PNG"
        assert load_image(p.image).tobytes() == \
            Image.open(__import__("io").BytesIO(png(i + 1))).tobytes()
        caption = f"{name} stands by a red door in photo {k + 1}."
        assert p.columns["caption"] == caption
        cq = p.columns["caption_question"]
        assert cq in IMAGE_CAPTION_QUESTIONS
        assert [(qa.question, qa.answer, qa.modality) for qa in p.train_qa] == \
            [(cq, caption, "multi")]
        gen = [(q.kind, q.modality, q.question, q.answer) for q in p.eval_questions
               if q.kind == "generation"]
        assert gen == [("generation", "multi", cq, caption),
                       ("generation", "multi", NAME_QUESTION, name)]
    ann = images[0]  # forget10_perturbed / retain_perturbed columns were added
    assert ann.columns["paraphrased_caption"] == "Ann Vale is next to a red door in photo 1."
    assert json.loads(ann.columns["perturbed_captions"]) == [
        "Ann Vale stands by a blue door in photo 1.", "Ann Vale stands by a green door in photo 1.",
        "Ann Vale stands by a white door in photo 1."]
    assert json.loads(ann.columns["perturbed_names"]) == ["Bo Reed", "Cy Lorn", "Di Park"]
    (cls,) = [q for q in ann.eval_questions if q.kind == "classification"]
    assert sorted(cls.options) == sorted(PEOPLE) and cls.answer_text == "Ann Vale"
    assert cls.answer in LETTERS
    assert not any(q.kind == "classification" for q in images[4].eval_questions)  # Cy: no perturbed row
    for p in texts:
        (qa,) = p.train_qa
        assert qa.modality == "text" and p.image is None
        assert qa.question.startswith("Where was ") and qa.answer.endswith("born in Lisbon.")
        assert [(q.kind, q.modality, q.question, q.answer) for q in p.eval_questions] == \
            [("generation", "text", qa.question, qa.answer)]
    ids = [p.id for p in images]
    assert bench.splits["full"] == ids
    assert bench.splits["forget10"] == ids[:2] and bench.splits["retain90"] == ids[2:]
    assert bench.splits["forget10_perturbed"] == ids[:2]
    assert bench.splits["retain_perturbed"] == ids[2:4]
    assert bench.splits["forget10+tofu"][:2] == ids[:2]
    assert [bench.by_id()[i].columns["question"] for i in bench.splits["forget10+tofu"][2:]] \
        == ["Where was Ann Vale born?"]
    assert len(bench.splits["retain90+tofu"]) == 6 + 2 and len(bench.splits["full+tofu"]) == 11
    faces, world = bench.split("real_faces"), bench.split("real_world")
    assert bench.splits["celebrity"] == bench.splits["real_faces"]
    assert [p.name for p in faces] == ["Tom Hanks", "Emma Stone"]
    assert [p.columns["answer"] for p in world] == ["Red", "Two"]
    assert world[0].columns["prompt"] == "What color is the car? Answer briefly."
    assert json.loads(world[0].columns["options"]) == ["Blue", "Green", "Black"]
    q_gen, q_cls = world[0].eval_questions
    assert (q_gen.question, q_gen.answer) == ("What color is the car?", "Red")
    assert q_cls.answer_text == "Red" and sorted(q_cls.options) == ["Black", "Blue", "Green",
                                                                     "Red"]
    assert faces[0].eval_questions[0].question == NAME_QUESTION
    assert {p.id for p in bench.celebrities} == {p.id for p in faces + world}


def test_split_pairing(clear_dir):
    assert complement("forget01") == "retain99" and complement("retain95") == "forget05"
    assert complement("forget10+tofu") == "retain90+tofu" and complement("full") is None
    assert complement_split("forget05") == "retain95"
    assert complement_split("forget_10") == "retain_90"  # MLLMU naming unchanged
    assert session.split_pair(_cfg(forget_split="forget10")) == ("forget10", "retain90")
    assert session.split_pair(_cfg(forget_split="forget10+tofu")) == \
        ("forget10+tofu", "retain90+tofu")
    with pytest.raises(ValueError, match="retain90"):
        session.split_pair(_cfg(forget_split="forget10", retain_split="retain95"))
    bench = load_clear(clear_dir)
    sets = benchmark_sets(bench, "forget10")
    assert [p.name for p in sets["forget"].profiles] == ["Ann Vale"] * 2
    assert len(sets["retain"].profiles) == 6 and len(sets["celebrity"].profiles) == 2
    with pytest.raises(ValueError, match="unknown split 'forget07'"):
        bench.split("forget07")


def test_format_detection(clear_dir, tmp_path):
    assert is_clear(clear_dir) and not is_clear(tmp_path)
    bench = session.load_benchmark(_cfg(dir=str(clear_dir)))
    assert "forget10" in bench.splits
    assert "forget10" in session.load_benchmark(_cfg(dir=str(clear_dir), format="clear")).splits
    with pytest.raises(FileNotFoundError, match="Full_Set"):  # forced MLLMU layout
        session.load_benchmark(_cfg(dir=str(clear_dir), format="mllmu"))
    with pytest.raises(ValueError, match="data.format 'tofu'"):
        session.load_benchmark(_cfg(dir=str(clear_dir), format="tofu"))
    with pytest.raises(ValueError, match="read only with data.dir"):
        session.load_benchmark(_cfg(format="clear"))


def _rewrite(path, **changes):
    table = pq.read_table(path)
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        for k, fn in changes.items():
            row[k] = fn(i, row[k])
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def test_errors(clear_dir, tmp_path):
    import shutil

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clear(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no CLEAR config folder"):
        load_clear(tmp_path)
    with pytest.raises(ValueError, match="unknown CLEAR config"):
        load_clear(clear_dir, configs=["forget07"])
    root = tmp_path / "c"
    shutil.copytree(clear_dir, root)
    file = root / "forget10" / "train-00000-of-00001.parquet"
    pq.write_table(pq.read_table(file).drop(["caption"]), file)
    with pytest.raises(ValueError, match=r"forget10/train-00000-of-00001.parquet: missing column "
                                         r"caption"):
        load_clear(root)
    shutil.rmtree(root)
    shutil.copytree(clear_dir, root)
    file = root / "retain90" / "train-00000-of-00001.parquet"
    _rewrite(file, image=lambda i, v: {"bytes": b"not a png", "path": None} if i == 1 else v)
    with pytest.raises(ValueError, match=r"retain90/train-00000-of-00001.parquet: row 1, field "
                                         r"image: does not decode"):
        load_clear(root)
    shutil.rmtree(root)
    shutil.copytree(clear_dir, root)
    file = root / "real_faces" / "train-00000-of-00001.parquet"
    _rewrite(file, answer=lambda i, v: "" if i == 0 else v)
    with pytest.raises(ValueError, match=r"real_faces/train-00000-of-00001.parquet: row 0, field "
                                         r"answer: is empty"):
        load_clear(root)
    shutil.rmtree(root / "real_faces")
    (root / "real_faces").mkdir()
    with pytest.raises(FileNotFoundError, match="real_faces has no .parquet files"):
        load_clear(root)
