"""The documentation lists the keys of the typed configs: every generated block of docs/*.md
and configs/README.md equals its generator's output, the docs cover every config section,
method and protocol, the CLI's --help lists the same keys, and no file points a user to a
document outside the repository."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from jaxunlearn.config import DEFAULTS, EVAL_EXTRA, GENERATED, generated_blocks
from jaxunlearn.eval.protocols import PROTOCOLS
from jaxunlearn.eval.tasks import EvalConfig
from jaxunlearn.methods.base import available, get_method
from jaxunlearn.train.driver import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _text(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


@pytest.mark.parametrize("path", [ROOT / "configs" / "README.md", *DOCS],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_blocks_are_current(path):
    blocks = generated_blocks(path.read_text())
    for name, content in blocks:
        assert content == GENERATED[name](), f"{path}: run python scripts/gen_docs.py ({name})"


def test_docs_cover_every_key_method_and_protocol():
    conf = _text("configuration.md")
    for f in dataclasses.fields(TrainConfig):
        assert f"`train.{f.name}`" in conf
    for key in [*EVAL_EXTRA, *(f.name for f in dataclasses.fields(EvalConfig))]:
        assert f"`eval.{key}`" in conf, key
    for section in ("model", "output"):
        for key in DEFAULTS[section]:
            assert f"`{section}.{key}`" in conf, (section, key)
    for key in DEFAULTS["data"]:
        assert f"`data.{key}" in conf, key
    for name in available():
        assert f"### `method.options` of `{name}`" in conf
        for f in dataclasses.fields(get_method(name).options):
            assert f"| `{f.name}` |" in conf, (name, f.name)
    for spec in PROTOCOLS.values():
        for f in dataclasses.fields(spec.options):
            assert f"| `{f.name}` |" in conf, f.name
    methods = _text("methods.md")
    for name in available():
        assert f"| `{name}` |" in methods
    commands = _text("commands.md")
    for command in ("demo", "data synth", "finetune", "unlearn", "evaluate", "protocol",
                    "prune apply", "convert", "sweep", "report", "bench"):
        assert f"## `jaxunlearn {command}" in commands, command


def test_cli_help_lists_the_same_keys():
    from jaxunlearn.cli import build_parser

    def help_of(*words):
        parser = build_parser()
        sub = parser._subparsers._group_actions[0].choices[words[0]]  # noqa: SLF001
        return sub.format_help()

    text = help_of("evaluate")
    for key in [*EVAL_EXTRA, *(f.name for f in dataclasses.fields(EvalConfig))]:
        assert key in text
    text = help_of("protocol")
    for spec in PROTOCOLS.values():
        for f in dataclasses.fields(spec.options):
            assert f.name in text
    text = help_of("finetune")
    for f in dataclasses.fields(TrainConfig):
        assert f.name in text


def test_no_file_points_outside_the_repository():
    """Users have only this repository: no reference to the team's design notes or to a
    development machine's absolute paths."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    bad = re.compile(r"METHODS\.md|DESIGN\.md|\.\./shared|/work/main|/work/coord")
    hits = [f for f in files if f.endswith((".md", ".py", ".yaml", ".toml"))
            and f != "tests/test_docs.py" and bad.search((ROOT / f).read_text())]
    assert not hits, hits


def _doc_default(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(v) + "]"
    if isinstance(v, str) and len(v) >= 30:
        return "<privacy prompt>"
    return str(v)


def test_method_reference_tables_match_the_typed_options():
    """docs/methods.md has a section per registered method whose option table lists exactly
    the method's own options (and the shared ones whose default it changes) with their
    defaults; the shared table lists the shared options with theirs."""
    from jaxunlearn.methods.base import available, get_method
    from jaxunlearn.methods.common import GradientOptions

    text = (ROOT / "docs" / "methods.md").read_text()
    ref = text.split("## Method reference", 1)[1]
    sections = dict(re.findall(r"^### `?([\w ]+?)`?\n(.*?)(?=^### |\Z)", ref, re.M | re.S))

    def table(body: str) -> dict[str, str]:
        return dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", body, re.M))

    shared = {f.name: f.default for f in dataclasses.fields(GradientOptions)}
    assert table(sections["Shared options"]) == {k: _doc_default(v) for k, v in shared.items()}
    assert set(available()) <= set(sections), sorted(set(available()) - set(sections))
    for name in available():
        want = {}
        for f in dataclasses.fields(get_method(name).options):
            d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.name not in shared or shared[f.name] != d:
                want[f.name] = _doc_default(d)
        assert table(sections[name]) == want, name
