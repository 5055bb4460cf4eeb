"""A small byte-level BPE tokenizer for the synthetic benchmark, saved in Hugging Face format.

Special tokens: ``<pad>`` ``<s>`` ``</s>`` ``<unk>`` ``<image>`` and the Qwen chat / vision
tokens, so every template family can be encoded. Person names are added as whole tokens.
The saved directory loads with ``transformers.AutoTokenizer.from_pretrained(dir)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from jaxunlearn.data import templates as T
from jaxunlearn.data.schema import Benchmark

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
QWEN_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>")


def benchmark_corpus(bench: Benchmark) -> list[str]:
    """Every question, option, answer and instruction text of ``bench``."""
    texts = [T.QWEN_SYSTEM, T.PROMPTING_SYSTEM, T.CLASSIFICATION_INSTRUCTION,
             T.GENERATION_INSTRUCTION, T.CLOZE_INSTRUCTION]
    texts += ["USER: Hello ASSISTANT: Hi\nsystem\nuser\nassistant\n"] * 64  # chat scaffolding
    for p in [*bench.profiles, *bench.celebrities]:
        for qa in [*p.train_qa, *p.understanding_qa]:
            texts += [qa.question, qa.answer]
        for q in [*p.eval_questions, *p.test_questions]:
            texts += [T.task_text(q), q.answer_text]
    return texts


def train_tokenizer(texts: Iterable[str], out_dir: str | Path | None = None,
                    vocab_size: int = 2048, names: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``texts``; add ``names`` as single tokens; optionally save.

    ``vocab_size`` counts the BPE vocabulary with the special tokens (names come on top).
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [*SPECIAL_TOKENS, *QWEN_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    unique_names = sorted(set(names))
    if unique_names:
        tok.add_tokens([AddedToken(n, single_word=True, normalized=False) for n in unique_names])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=["<image>", *QWEN_TOKENS],
        clean_up_tokenization_spaces=False, model_max_length=4096)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def benchmark_tokenizer(bench: Benchmark, out_dir: str | Path | None = None,
                        vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Tokenizer for ``bench``: BPE on its corpus, every person name a single token."""
    names = [p.name for p in [*bench.profiles, *bench.celebrities] if p.name]
    return train_tokenizer(benchmark_corpus(bench), out_dir, vocab_size, names)
