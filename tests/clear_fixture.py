"""A tiny CLEAR copy in the published layout of ``therem/CLEAR`` (written by the tests).

Layout and columns, from the dataset card (``README.md`` ``dataset_info`` / ``configs`` of
``therem/CLEAR``; commits 2bf6316 real_faces, a0eb756 real_world, 86e71d4 retain_perturbed,
b9a222a / fd13446 / 191d8a2 forgetNN_perturbed, main 2e1fcda for the ``name`` /
``perturbed_names`` columns) and the code that reads it (``somvy/multimodal_unlearning``
``mm/dataset.py`` ``MMMixedDataset`` / ``ImageCaptioningDataset``, ``config/mm/eval.yaml``):

- ``<config>/train-0000K-of-0000N.parquet`` (card ``data_files: path: <config>/train-*``);
  ``full`` is written in two shards to check that every shard is read; ``real_world`` as
  ``test-00000-of-00001.parquet`` (its first published split, card commit a0eb756).
- ``full``, ``forget10``, ``retain90``: ``image`` (HF Image: struct {bytes, path}),
  ``caption`` (string), ``name`` (string).
- ``full+tofu``, ``forget10+tofu``, ``retain90+tofu``: ``image``, ``caption``, ``question``,
  ``answer``; TOFU text rows have a null image and null caption (``MMMixedDataset``:
  ``if itm[image_key] is None`` -> QA sample).
- ``forget10_perturbed``: ``image``, ``caption``, ``name``, ``perturbed_captions`` (list),
  ``paraphrased_caption``, ``perturbed_names`` (list).
- ``retain_perturbed``: ``image``, ``caption``, ``paraphrased_caption``,
  ``perturbed_captions`` (card), plus ``name`` / ``perturbed_names`` that ``eval.yaml``'s
  ``eval_retain_facerec`` task reads.
- ``real_faces``: ``image``, ``answer``, ``options`` (list). ``real_world``: ``question``,
  ``answer``, ``image``, ``prompt``, ``options`` (list).

Four fictitious people with two 8x8 images each; forget10 = Ann Vale, retain90 = the other
three; two TOFU QA rows per split.
"""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

PEOPLE = ("Ann Vale", "Bo Reed", "Cy Lorn", "Di Park")
FORGET = ("Ann Vale",)
S = datasets.Value("string")
L = datasets.Sequence(datasets.Value("string"))
IMG = datasets.Image()


def png(seed: int, size: int = 8) -> bytes:
    img = Image.new("RGB", (size, size), ((37 * seed) % 256, (91 * seed) % 256,
                                          (53 * seed + 20) % 256))
    img.putpixel((seed % size, 0), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def visual_rows() -> list[dict]:
    """(person, k) -> image row fields, 2 images per person."""
    rows = []
    for i, name in enumerate(PEOPLE):
        for k in range(2):
            rows.append({"image": {"bytes": png(2 * i + k + 1), "path": None},
                         "caption": f"{name} stands by a red door in photo {k + 1}.",
                         "name": name})
    return rows


def tofu_rows(split: str) -> list[dict]:
    who = FORGET if split == "forget" else PEOPLE[1:]
    return [{"image": None, "caption": None, "question": f"Where was {n} born?",
             "answer": f"{n} was born in Lisbon."} for n in who[:2]]


def write(folder: Path, rows: list[dict], features: datasets.Features,
          names: tuple[str, ...] = ("train-00000-of-00001.parquet",)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    encoded = [features.encode_example(r) for r in rows]
    per = -(-len(encoded) // len(names))
    for k, name in enumerate(names):
        table = pa.Table.from_pylist(encoded[k * per:(k + 1) * per],
                                     schema=features.arrow_schema)
        pq.write_table(table, folder / name)


def perturbed(row: dict, retain: bool = False) -> dict:
    name = row["name"]
    out = {"image": row["image"], "caption": row["caption"],
           "paraphrased_caption": row["caption"].replace("stands by", "is next to"),
           "perturbed_captions": [row["caption"].replace("red", c) for c in
                                  ("blue", "green", "white")],
           "name": name,
           "perturbed_names": [p for p in PEOPLE if p != name][:3]}
    return out


def write_clear(root: Path) -> Path:
    """Write the fixture under ``root`` and return it."""
    root = Path(root)
    vis = visual_rows()
    forget = [r for r in vis if r["name"] in FORGET]
    retain = [r for r in vis if r["name"] not in FORGET]
    fvis = datasets.Features({"image": IMG, "caption": S, "name": S})
    write(root / "full", vis, fvis, ("train-00000-of-00002.parquet",
                                     "train-00001-of-00002.parquet"))
    write(root / "forget10", forget, fvis)
    write(root / "retain90", retain, fvis)
    ftofu = datasets.Features({"image": IMG, "caption": S, "question": S, "answer": S})

    def tofu(rows, split):
        return [{"image": r["image"], "caption": r["caption"], "question": None,
                 "answer": None} for r in rows] + tofu_rows(split)

    write(root / "full+tofu", tofu(vis, "forget") + tofu_rows("retain"), ftofu)
    write(root / "forget10+tofu", tofu(forget, "forget"), ftofu)
    write(root / "retain90+tofu", tofu(retain, "retain"), ftofu)
    fpert = datasets.Features({"image": IMG, "caption": S, "name": S, "perturbed_captions": L,
                               "paraphrased_caption": S, "perturbed_names": L})
    write(root / "forget10_perturbed", [perturbed(r) for r in forget], fpert)
    fret = datasets.Features({"image": IMG, "caption": S, "paraphrased_caption": S,
                              "perturbed_captions": L, "name": S, "perturbed_names": L})
    write(root / "retain_perturbed", [perturbed(r, True) for r in retain[:2]], fret)
    write(root / "real_faces",
          [{"image": {"bytes": png(40 + i), "path": None}, "answer": n,
            "options": [o for o in ("Tom Hanks", "Meryl Streep", "Brad Pitt", "Emma Stone")
                        if o != n][:3]}
           for i, n in enumerate(("Tom Hanks", "Emma Stone"))],
          datasets.Features({"image": IMG, "answer": S, "options": L}))
    write(root / "real_world",
          [{"question": q, "answer": a, "image": {"bytes": png(50 + i), "path": None},
            "prompt": f"{q} Answer briefly.", "options": opts}
           for i, (q, a, opts) in enumerate((
               ("What color is the car?", "Red", ["Blue", "Green", "Black"]),
               ("How many dogs are there?", "Two", ["One", "Three", "Four"])))],
          datasets.Features({"question": S, "answer": S, "image": IMG, "prompt": S,
                             "options": L}),
          ("test-00000-of-00001.parquet",))
    return root
