"""Data layer: record schema (``schema``), MLLMU-Bench layout (``mllmu``), the synthetic
benchmark (``synthetic``, ``faces``, ``wordlists``), prompt templates (``templates``), a small
BPE tokenizer (``tokenizer``), image preprocessing per family (``processors`` for CLIP,
``qwen_processor``, ``onevision_processor``) and the per-family image encoders that feed batches
(``images``), answer positions (``answers``) and grain pipelines (``pipeline``). Import the
submodules directly; this package imports nothing heavy.
"""
