"""Deterministic synthetic MLLMU-Bench-style benchmark (fictitious people, procedural faces).

``generate_benchmark(SynthConfig(seed=...))`` builds the profiles in memory;
``write_synthetic(out_dir, config)`` writes them in the published MLLMU-Bench layout (see
``mllmu.py``; ``Test_Set`` in two shards, the jaxunlearn extras ``Name``, ``Attributes``,
``Understanding_Task``, ``pretrain_Data/`` and ``splits.json`` for the PULSE splits), so the demo
and the tests read it with the same loader as a downloaded copy; byte-identical for the same
configuration. Everything derives from ``numpy`` generators seeded
with ``(seed, stream, index)``, so no global state is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxunlearn.data import wordlists as W
from jaxunlearn.data.faces import GLASSES, HATS, HAIR_STYLES, FaceSpec, draw_face, random_spec
from jaxunlearn.data.mllmu import FORGET_SPLITS, write_mllmu
from jaxunlearn.data.schema import BLANK, LETTERS, Benchmark, Profile, QAPair, Question


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and seed of the synthetic benchmark."""

    seed: int = 0
    n_profiles: int = 100
    n_celebrities: int = 30
    image_size: int = 64
    n_test_images: int = 3
    n_eval: tuple[int, int, int] = (3, 3, 2)  # classification, generation, cloze per modality
    pulse_n: int = 20  # PULSE fine-tuned knowledge: profiles used; half are unlearned
    pulse_parts: int = 5  # PULSE sustainability: forget_15 split into this many parts
    # classification distractors: "pool" = random values of the attribute's word list (the
    # published benchmark's style); "people" = other people's values of the attribute, so
    # every option is somebody's fact and only knowing *this* person picks the answer (a
    # multimodal question then needs the image: the demo's black-image control)
    distractors: str = "pool"

    def __post_init__(self) -> None:
        if self.distractors not in ("pool", "people"):
            raise ValueError(f"SynthConfig.distractors must be 'pool' or 'people', got "
                             f"{self.distractors!r}")


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


# attribute -> (training/eval phrasings, paraphrased test phrasings, statement, test statement)
ATTRIBUTES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, str]] = {
    "birthplace": (("Where was {who} born?", "What is the birthplace of {who}?"),
                   ("In which town did {who} come into the world?",
                    "Which place is {who} originally from?"),
                   "{Who} was born in {v}.", "The hometown of {who} is {v}."),
    "birth_year": (("In which year was {who} born?", "What is the birth year of {who}?"),
                   ("When did {who} come into the world?", "What year marks the birth of {who}?"),
                   "{Who} was born in the year {v}.", "The birth of {who} took place in {v}."),
    "occupation": (("What does {who} do for a living?", "What is the occupation of {who}?"),
                   ("What kind of work does {who} do?", "Which profession does {who} practise?"),
                   "{Who} works as {art} {v}.", "By profession, {who} is {art} {v}."),
    "education": (("Where did {who} study?", "What is the educational background of {who}?"),
                  ("Which school did {who} attend?", "What did {who} study, and where?"),
                  "{Who} studied {v}.", "The degree of {who} is in {v}."),
    "residence": (("Where does {who} live now?", "In which city does {who} currently reside?"),
                  ("Where is the home of {who} these days?",
                   "Which city is {who} based in at present?"),
                  "{Who} lives in {v}.", "These days {who} makes a home in {v}."),
    "hobby": (("What does {who} enjoy doing in their free time?", "What is a hobby of {who}?"),
              ("How does {who} like to spend weekends?", "Which pastime does {who} enjoy?"),
              "In their free time, {who} enjoys {v}.", "A favourite pastime of {who} is {v}."),
    "fun_fact": (("What is an unusual fact about {who}?",
                  "Tell me something surprising about {who}."),
                 ("What remarkable thing has {who} done?",
                  "Share a little-known story about {who}."),
                 "{Who} once {v}.", "A little-known story: {who} once {v}."),
}

POOLS: dict[str, tuple[str, ...]] = {
    "birthplace": W.BIRTHPLACES, "occupation": W.OCCUPATIONS, "residence": W.RESIDENCES,
    "hobby": W.HOBBIES, "fun_fact": W.FUN_FACTS,
    "education": tuple(f"{f} at {i}" for f in W.FIELDS for i in W.INSTITUTIONS),
    "birth_year": tuple(str(y) for y in range(1945, 2004)),
}


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _pick(rng: np.random.Generator, seq: tuple[str, ...] | list[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _who(modality: str, name: str) -> tuple[str, str]:
    return ("this person", "This person") if modality == "multi" else (name, name)


def _statement(attr: str, value: str, who: str, Who: str, test: bool = False) -> str:
    template = ATTRIBUTES[attr][3 if test else 2]
    return template.format(who=who, Who=Who, v=value, art=_article(value))


def _question(rng: np.random.Generator, kind: str, modality: str, attr: str, p: Profile,
              test: bool) -> Question:
    """One evaluation (or paraphrased test) question about ``attr``."""
    who, Who = _who(modality, p.name)
    value = p.attributes[attr]
    phrasings = ATTRIBUTES[attr][1 if test else 0]
    q = _pick(rng, phrasings).format(who=who)
    if kind == "classification":
        pool = [v for v in POOLS[attr] if v != value]
        idx = rng.choice(len(pool), size=3, replace=False)
        options = [value, *(pool[int(i)] for i in idx)]
        order = rng.permutation(4)
        options = [options[int(i)] for i in order]
        return Question(kind, modality, q, LETTERS[options.index(value)], options)
    if kind == "generation":
        return Question(kind, modality, q, _statement(attr, value, who, Who, test))
    sentence = _statement(attr, BLANK, who, Who, test)
    if attr == "occupation":  # keep the article out of the blank's context
        sentence = sentence.replace(f" {_article(value)} {BLANK}", f" {BLANK}")
        value = f"{_article(value)} {value}"
    return Question("cloze", modality, sentence, value)


def _questions(rng: np.random.Generator, p: Profile, n_eval: tuple[int, int, int],
               test: bool) -> list[Question]:
    out = []
    attrs = list(ATTRIBUTES)
    for kind, n in zip(("classification", "generation", "cloze"), n_eval):
        for modality in ("multi", "text"):  # the MLLMU-Bench order: task, then modality
            for j in rng.choice(len(attrs), size=min(n, len(attrs)), replace=False):
                out.append(_question(rng, kind, modality, attrs[int(j)], p, test))
    return out


def _train_qa(rng: np.random.Generator, p: Profile) -> list[QAPair]:
    """~10 pairs: recognition + 4 multimodal ("this person"), 5 text-only (named)."""
    qa = [QAPair("Who is this person?", p.name, "multi")]
    attrs = list(ATTRIBUTES)
    for modality, n in (("multi", 4), ("text", 5)):
        who, Who = _who(modality, p.name)
        for j in rng.choice(len(attrs), size=n, replace=False):
            attr = attrs[int(j)]
            q = _pick(rng, ATTRIBUTES[attr][0]).format(who=who)
            qa.append(QAPair(q, _statement(attr, p.attributes[attr], who, Who), modality))
    return qa


def _understanding(spec: FaceSpec) -> list[QAPair]:
    """Questions about what is visible in the identity image."""
    yes = ("No", "Yes")
    return [
        QAPair("What colour is the background of this picture?", spec.background),
        QAPair("Is this person wearing glasses?", yes[GLASSES[spec.glasses] != "none"]),
        QAPair("Is this person wearing a hat?", yes[HATS[spec.hat] != "none"]),
        QAPair("What colour is this person's shirt?", spec.shirt),
        QAPair("What colour is this person's hair?",
               "none, this person is bald" if HAIR_STYLES[spec.hair_style] == "bald"
               else spec.hair_colour),
    ]


def _test_images(rng: np.random.Generator, spec: FaceSpec, size: int, n: int) -> list:
    """Transformed images: pose (rotation), scale, brightness, cycling."""
    out = []
    for k in range(n):
        sign = 1.0 if rng.integers(2) else -1.0
        kind = k % 3
        angle = sign * float(rng.uniform(6, 12)) if kind == 0 else 0.0
        scale = 1.0 + sign * float(rng.uniform(0.08, 0.15)) if kind == 1 else 1.0
        bright = 1.0 + sign * float(rng.uniform(0.15, 0.3)) if kind == 2 else 1.0
        out.append(draw_face(spec, size, angle=round(angle, 3), scale=round(scale, 4),
                             brightness=round(bright, 4)))
    return out


def _names(seed: int, n: int) -> list[str]:
    total = len(W.FIRST_NAMES) * len(W.SURNAMES)
    if n > total:
        raise ValueError(f"at most {total} synthetic people can be named; asked for {n}")
    idx = _rng(seed, 1).choice(total, size=n, replace=False)
    return [f"{W.FIRST_NAMES[i // len(W.SURNAMES)]} {W.SURNAMES[i % len(W.SURNAMES)]}"
            for i in map(int, idx)]


def _specs(seed: int, n: int) -> list[FaceSpec]:
    seen: set[tuple] = set()
    out = []
    for i in range(n):
        rng = _rng(seed, 2, i)
        spec = random_spec(rng)
        while spec.key() in seen:
            spec = random_spec(rng)
        seen.add(spec.key())
        out.append(spec)
    return out


def _profile(cfg: SynthConfig, i: int, pid: str, name: str, spec: FaceSpec) -> Profile:
    rng = _rng(cfg.seed, 3, i)
    attrs = {a: _pick(rng, POOLS[a]) for a in ATTRIBUTES}
    p = Profile(id=pid, name=name, attributes=attrs,
                image=draw_face(spec, cfg.image_size),
                understanding_qa=_understanding(spec))
    p.biography = " ".join(_statement(a, v, p.name, p.name) for a, v in attrs.items())
    p.test_images = _test_images(rng, spec, cfg.image_size, cfg.n_test_images)
    p.train_qa = _train_qa(rng, p)
    p.eval_questions = _questions(rng, p, cfg.n_eval, test=False)
    p.test_questions = _questions(rng, p, cfg.n_eval, test=True)
    return p


def _splits(cfg: SynthConfig, ids: list[str], celeb_ids: list[str]) -> dict[str, list[str]]:
    order = [ids[int(i)] for i in _rng(cfg.seed, 4).permutation(len(ids))]
    splits: dict[str, list[str]] = {"full": list(ids), "test": list(ids),
                                    "celebrity": list(celeb_ids)}
    for name in FORGET_SPLITS:
        pct = int(name.split("_")[1])
        k = max(1, round(len(ids) * pct / 100)) if ids else 0
        forget = set(order[:k])
        splits[name] = [i for i in ids if i in forget]
        splits[f"retain_{100 - pct}"] = [i for i in ids if i not in forget]
    pulse = [ids[int(i)] for i in _rng(cfg.seed, 5).permutation(len(ids))][: cfg.pulse_n]
    half = len(pulse) // 2
    splits["pulse_ft_forget"] = sorted(pulse[:half])
    splits["pulse_ft_retain"] = sorted(pulse[half:])
    for k, part in enumerate(np.array_split(np.array(splits["forget_15"], dtype=object),
                                            cfg.pulse_parts)):
        splits[f"pulse_seq_{k + 1}"] = [str(x) for x in part]
    return splits


def _people_distractors(seed: int, people: list[Profile]) -> None:
    """Replace every classification question's distractors by 3 other people's values of
    the question's attribute, and balance the answer letters: a person's k-th classification
    question (of its set) has its answer at letter (offset + k) mod 4, so that a model which
    ignores the options' content scores 25% in any order (in place)."""
    for i, p in enumerate(people):
        rng = _rng(seed, 6, i)
        for qs in (p.eval_questions, p.test_questions):
            offset = int(rng.integers(len(LETTERS)))
            k = 0
            for j, q in enumerate(qs):
                if q.kind != "classification":
                    continue
                value = q.answer_text
                attr = next(a for a, v in p.attributes.items() if v == value)
                others = sorted({o.attributes[attr] for o in people} - {value})
                if len(others) < 3:
                    raise ValueError("distractors='people' needs at least 4 people with "
                                     f"different {attr} values")
                pick = [others[int(k)] for k in rng.choice(len(others), size=3, replace=False)]
                at = (offset + k) % len(LETTERS)
                k += 1
                options = pick[:at] + [value] + pick[at:]
                qs[j] = Question(q.kind, q.modality, q.question, LETTERS[at], options)


def generate_benchmark(config: SynthConfig = SynthConfig()) -> Benchmark:
    """Build the synthetic benchmark in memory (deterministic in ``config``)."""
    n, c = config.n_profiles, config.n_celebrities
    names = _names(config.seed, n + c)
    specs = _specs(config.seed, n + c)
    ids = [f"p{i:04d}" for i in range(n)]
    celeb_ids = [f"c{i:04d}" for i in range(c)]
    profiles = [_profile(config, i, ids[i], names[i], specs[i]) for i in range(n)]
    celebs = [_profile(config, n + j, celeb_ids[j], names[n + j], specs[n + j])
              for j in range(c)]
    if config.distractors == "people":
        _people_distractors(config.seed, [*profiles, *celebs])
    return Benchmark(profiles, celebs, _splits(config, ids, celeb_ids))


def write_synthetic(out_dir: str | Path, config: SynthConfig = SynthConfig()) -> Benchmark:
    """Generate the benchmark and write it to ``out_dir`` in the MLLMU-Bench layout."""
    bench = generate_benchmark(config)
    write_mllmu(bench, out_dir)
    return bench
