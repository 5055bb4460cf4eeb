"""Templates + tokenizer: loss masks cover exactly the answer (+ end token) for every family."""

from __future__ import annotations


import numpy as np
import pytest
from transformers import AutoTokenizer

from jaxunlearn.data import templates as T
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark
from jaxunlearn.data.tokenizer import QWEN_TOKENS, SPECIAL_TOKENS, benchmark_tokenizer


@pytest.fixture(scope="module")
def bench():
    return generate_benchmark(SynthConfig(seed=0, n_profiles=6, n_celebrities=2, image_size=32))


@pytest.fixture(scope="module")
def tok(bench, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tok")
    benchmark_tokenizer(bench, out, vocab_size=1024)
    return AutoTokenizer.from_pretrained(str(out))


def test_tokenizer_loads_with_specials_and_names(tok, bench) -> None:
    for t in (*SPECIAL_TOKENS, *QWEN_TOKENS):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == \
        ("<pad>", "<s>", "</s>", "<unk>")
    for p in [*bench.profiles, *bench.celebrities]:
        assert len(tok(p.name, add_special_tokens=False)["input_ids"]) == 1
        text = f"Where was {p.name} born? {p.name} was born in {p.attributes['birthplace']}."
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def _examples(bench) -> list[tuple[str, str, bool]]:
    """(user text, answer, has image) for every task kind and modality."""
    p = bench.profiles[0]
    out = [(qa.question, qa.answer, qa.modality == "multi") for qa in p.train_qa[:2]]
    out += [(qa.question, qa.answer, True) for qa in p.understanding_qa[:1]]
    for kind in ("classification", "generation", "cloze"):
        for modality in ("multi", "text"):
            q = p.questions("eval", kind, modality)[0]
            out.append((T.task_text(q), q.answer, modality == "multi"))
    return out


@pytest.mark.parametrize("family", T.FAMILIES)
@pytest.mark.parametrize("variant", ["plain", "system", "few_shot"])
def test_loss_mask_is_exactly_the_answer(tok, bench, family: str, variant: str) -> None:
    fmt = T.chat_format(family)
    end = tok.convert_ids_to_tokens(T.end_token_id(tok, family))
    assert end == (fmt.end_token or "</s>")
    kw = {"system": T.PROMPTING_SYSTEM} if variant == "system" else {}
    if variant == "few_shot":
        kw = {"few_shot": [("Where was Ann Lee born?", "Ann Lee was born in Oslo.")]}
    img_id = T.image_token_id(tok, family)
    for text, answer, has_image in _examples(bench):
        prompt = T.format_prompt(family, text, has_image, **kw)
        assert (fmt.image_token in prompt) == has_image
        ex = T.encode_example(tok, family, prompt, answer, image_token_count=7)
        ids, mask = ex["input_ids"], ex["loss_mask"]
        assert ids.dtype == np.int32 and mask.dtype == np.float32 and ids.shape == mask.shape
        answer_ids = ids[mask == 1]
        assert tok.decode(answer_ids) == fmt.answer_prefix + answer + end
        assert tok.decode(answer_ids[:-1]) == fmt.answer_prefix + answer
        assert mask[: len(ids) - len(answer_ids)].sum() == 0  # answer tokens are a suffix
        assert int((ids == img_id).sum()) == (7 if has_image else 0)
        if has_image:  # the copies are contiguous
            where = np.flatnonzero(ids == img_id)
            assert where[-1] - where[0] == 6
        assert (ids[0] == tok.bos_token_id) == fmt.use_bos
        # separate tokenisation equals tokenising the whole text (no boundary merges)
        prompt_ids = ids[mask == 0]
        if not has_image:
            whole = tok(prompt + fmt.answer_prefix + answer, add_special_tokens=False)["input_ids"]
            assert list(prompt_ids[int(fmt.use_bos):]) + list(answer_ids[:-1]) == whole
        if variant == "system":
            assert T.PROMPTING_SYSTEM in tok.decode(prompt_ids)


def test_prompt_shapes() -> None:
    q = "Where was this person born?"
    assert T.format_prompt("llava", q, True) == f"USER: <image>\n{q} ASSISTANT:"
    assert T.format_prompt("llava", q, False) == f"USER: {q} ASSISTANT:"
    assert T.format_prompt("qwen2_vl", q, True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\n")
    assert "<image>\n" + q in T.format_prompt("llava_onevision", q, True)
    text = T.classification_text(q, ["a", "b", "c", "d"])
    assert text.splitlines()[1:5] == ["A: a", "B: b", "C: c", "D: d"] and "letter" in text
    assert "[Blank]" in T.cloze_text("X was born in [Blank].")
    with pytest.raises(ValueError, match="unknown model family"):
        T.format_prompt("gpt9", q, False)


def test_encode_errors(tok) -> None:
    prompt = T.format_prompt("llava", "Who?", True)
    with pytest.raises(ValueError, match="image_token_count"):
        T.encode_example(tok, "llava", prompt, "Bob", 0)
    with pytest.raises(ValueError, match="exactly one"):
        T.encode_example(tok, "llava", prompt + "<image>", "Bob", 4)
    ex = T.encode_example(tok, "llava", prompt, None, 4)  # generation prompt
    assert ex["loss_mask"].sum() == 0
