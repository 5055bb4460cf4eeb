"""Data layer: record schema (``schema``), MLLMU-Bench layout (``mllmu``), the synthetic
benchmark (``synthetic``, ``faces``, ``wordlists``), prompt templates (``templates``), a small
BPE tokenizer (``tokenizer``), CLIP image preprocessing (``processors``) and grain pipelines
(``pipeline``). Import the submodules directly; this package imports nothing heavy.
"""
