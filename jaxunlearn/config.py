"""Experiment configs: YAML files + dotted command-line overrides, validated against defaults.

Every key that exists is in `DEFAULTS` (documented in `configs/README.md`); an unknown key is
an error naming the closest valid key. The `train:` section is `train.driver.TrainConfig` and
`eval:` holds `eval.tasks.EvalConfig`'s fields (plus the sets / tasks / judge keys), so their
keys and defaults are defined once, in those dataclasses. `method.options` is the chosen
method's typed options (validated by the method registry, `methods.base.resolve_options`),
`eval.judge` is validated by the judge client.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml

EVAL_EXTRA = {
    "sets": ["forget", "test", "retain", "celebrity"],   # sets evaluated
    "tasks": ["classification", "generation", "cloze"],
    "modalities": ["multi", "text"],
    "max_profiles": None,        # cap on retain / celebrity profiles evaluated
    "judge": {},                 # {base_url, model, api_key, ...}; {} = environment / off
}


def _train_defaults() -> dict[str, Any]:
    from jaxunlearn.train.driver import TrainConfig
    from jaxunlearn.train.typed import defaults

    return defaults(TrainConfig)


def _eval_defaults() -> dict[str, Any]:
    """`eval:` = the keys above + every `jaxunlearn.eval.tasks.EvalConfig` field."""
    from jaxunlearn.eval.tasks import EvalConfig

    fields = {f.name: copy.deepcopy(getattr(EvalConfig(), f.name))
              for f in dataclasses.fields(EvalConfig)}
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    return {**EVAL_EXTRA, **fields}


def build_defaults() -> dict[str, Any]:
    """The defaults of every section; `train` and `eval` come from their dataclasses
    (`TrainConfig`, `EvalConfig`), so each key is defined once."""
    return {
        "model": {"preset": "tiny-llava", "checkpoint": None},
        "data": {
            "dir": None,               # MLLMU-Bench / CLEAR copy; None = synthetic benchmark
            "format": "auto",          # auto | mllmu | clear: the layout of data.dir
            "tokenizer": None,         # tokenizer directory (default: the checkpoint's)
            "forget_split": "forget_10",
            "retain_split": None,      # None = the complement of forget_N, retain_(100-N)
            "force_split_pair": False,  # accept a retain_split that is not that complement
            "synthetic": {"seed": 0, "n_profiles": 100, "n_celebrities": 30, "image_size": 32},
            "batch_size": 8,
            "max_length": 512,
            "blank_images": False,     # text-only batches carry blank images: one program
        },
        "train": _train_defaults(),
        "method": {"name": "ga", "options": {}},  # options: the method's typed options
        "protocol": {"options": {}},   # keyword arguments of the protocol function
        "eval": _eval_defaults(),
        # the device mesh over all global devices (every process's); null: the preset's
        # `mesh:`, else all devices on `data`. One axis may be -1 (the rest).
        "mesh": {"data": None, "fsdp": None, "tensor": None},
        "output": {"dir": "runs/latest", "export_hf": True,
                   "overwrite": False},  # replace a finished run in output.dir (--overwrite)
    }


DEFAULTS: dict[str, Any] = build_defaults()

FREE_FORM = {("method", "options"), ("eval", "judge"), ("protocol", "options")}


def _closest(key: str, options, path: tuple = ()) -> str:
    close = difflib.get_close_matches(key, sorted(options), n=1)
    if close:
        return f"; did you mean {'.'.join(path + (close[0],))!r}?"
    return f"; valid keys: {', '.join(sorted(options))}"


def merge_into(base: dict, update: dict, path: tuple = (),
               free_form: set | frozenset | None = None) -> dict:
    """Deep-merge `update` into a copy of `base`, rejecting keys `base` does not have.

    Paths in `free_form` (default `FREE_FORM`) are mappings whose keys are not checked here."""
    free_form = FREE_FORM if free_form is None else free_form
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = ".".join(path + (key,))
        if (path + (key,)) in free_form:
            if not isinstance(value, dict):
                raise ValueError(f"config key {where!r} must be a mapping")
            out[key] = {**out.get(key, {}), **value}
            continue
        if key not in out:
            raise ValueError(f"unknown config key {where!r}{_closest(key, out, path)}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where!r} must be a mapping")
            out[key] = merge_into(out[key], value, path + (key,), free_form)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-5` -> (['train', 'lr'], 1e-05) with YAML typing of the value."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"override {text!r}: the value is not valid YAML "
                         f"({' '.join(str(e).split())}); quote it or fix the brackets") from e
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(cfg: dict, overrides: list[str],
                    free_form: set | frozenset | None = None) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        update: Any = value
        for k in reversed(keys):
            update = {k: update}
        cfg = merge_into(cfg, update, free_form=free_form)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                defaults: dict | None = None,
                free_form: set | frozenset | None = None) -> dict:
    """Defaults <- YAML file <- overrides, all validated."""
    cfg = copy.deepcopy(defaults or DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} not found")
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config file {p} is not valid YAML "
                             f"({' '.join(str(e).split())}); fix it") from e
        if not isinstance(doc, dict):
            raise ValueError(f"config file {p} must hold a mapping of sections (model:, data:, "
                             f"train:, ...), not a {type(doc).__name__}")
        cfg = merge_into(cfg, doc, free_form=free_form)
    cfg = apply_overrides(cfg, list(overrides), free_form)
    if defaults is None:
        check_plain_sections(cfg)
    return cfg


# types and minimums of the keys that no dataclass validates (model:, data:, output:, the
# evaluation set keys); `train:`, `eval:` settings, method and protocol options are typed
_PLAIN = {
    "model.preset": (str,), "model.checkpoint": (str, type(None)),
    "data.dir": (str, type(None)), "data.tokenizer": (str, type(None)),
    "data.forget_split": (str,), "data.retain_split": (str, type(None)),
    "data.force_split_pair": (bool,), "data.batch_size": (int, 1), "data.max_length": (int, 8),
    "data.blank_images": (bool,), "data.synthetic.seed": (int, 0),
    "data.synthetic.n_profiles": (int, 1), "data.synthetic.n_celebrities": (int, 0),
    "data.synthetic.image_size": (int, 8), "output.dir": (str,), "output.export_hf": (bool,),
    "output.overwrite": (bool,), "eval.max_profiles": (int, 1, type(None)),
    "mesh.data": (int, -1, type(None)), "mesh.fsdp": (int, -1, type(None)),
    "mesh.tensor": (int, -1, type(None)), "eval.sets": (list,), "eval.tasks": (list,),
    "eval.modalities": (list,),
}


def check_plain_sections(cfg: dict) -> None:
    """One clear error for a wrong type or out-of-range value of a `_PLAIN` key."""
    names = {bool: "a bool (true / false)", int: "an int", str: "a string", list: "a list",
             type(None): "null"}
    for where, spec in _PLAIN.items():
        node: Any = cfg
        for part in where.split("."):
            node = node[part]
        types_ = tuple(t for t in spec if isinstance(t, type))
        low = next((x for x in spec if not isinstance(x, type)), None)
        value = node
        ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool))
                 for t in types_)
        if not ok:
            want = " or ".join(names[t] for t in types_)
            raise ValueError(f"{where}: expected {want}, got {value!r}")
        if low is not None and isinstance(value, int) and not isinstance(value, bool) \
                and value < low:
            raise ValueError(f"{where}: {value} is out of range; it must be >= {low}")


# ----------------------------------------------------------------------------- documentation

def _md_value(v: Any) -> str:
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str) and len(v) > 40:
        return "(see help)"
    return f"`{v}`"


def _md_table(prefix: str, cls: type) -> list[str]:
    from jaxunlearn.train.typed import describe

    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, d in describe(cls).items():
        help_ = d["help"] + (f" ({', '.join(map(str, d['choices']))})"
                             if "choices" in d and len(d["choices"]) > 1 else "")
        rows.append(f"| `{prefix}{name}` | {_md_value(d['default'])} | {help_} |")
    return rows


def reference_markdown() -> str:
    """The generated key reference of `configs/README.md`: the `train:` section and every
    registered method's `method.options`, from their dataclasses."""
    from jaxunlearn.methods.base import available, get_method
    from jaxunlearn.train.driver import TrainConfig

    lines = ["### `train:` (`jaxunlearn.train.TrainConfig`)", "",
             "Read by `finetune`, by `unlearn` with a method that trains and by the "
             "fine-tuning protocols; a method that does not train refuses non-default keys.", ""]
    lines += _md_table("train.", TrainConfig)
    for name in available():
        spec = get_method(name)
        trains = "trains (reads `train:`)" if spec.trains else "does not train"
        lines += ["", f"### `method.options` of `{name}` ({trains})", "", spec.description, ""]
        if dataclasses.fields(spec.options):
            lines += _md_table("", spec.options)
        else:
            lines.append("(no options)")
    return "\n".join(lines) + "\n"


def eval_markdown() -> str:
    """The generated `eval:` key reference: the typed settings and the set / task keys."""
    from jaxunlearn.eval.tasks import EvalConfig

    lines = ["### `eval:` (`jaxunlearn.eval.tasks.EvalConfig` + sets)", "",
             "Read by `evaluate` and by every protocol's evaluations.", "",
             "| key | default | meaning |", "|---|---|---|"]
    extra_help = {"sets": "sets evaluated (forget, test, retain, celebrity)",
                  "tasks": "tasks (classification, generation, cloze)",
                  "modalities": "modalities (multi: image + question, text: question only)",
                  "max_profiles": "cap on retain / celebrity profiles evaluated (null: all)",
                  "judge": "LLM judge {base_url, model, api_key, cache_path, ...}; {} = the "
                           "JAXUNLEARN_JUDGE_* environment variables, or off"}
    for key, help_ in extra_help.items():
        value = EVAL_EXTRA[key]
        shown = "`{}`" if value == {} else (
            "`[" + ", ".join(map(str, value)) + "]`" if isinstance(value, list) else _md_value(value))
        lines.append(f"| `eval.{key}` | {shown} | {help_} |")
    lines += _md_table("eval.", EvalConfig)[2:]
    return "\n".join(lines) + "\n"


def methods_markdown() -> str:
    """The generated method table: what each registered method does, whether it trains
    (reads `train:`), whether it needs retain data, and the model families it runs on."""
    from jaxunlearn.data.templates import FAMILIES
    from jaxunlearn.methods.base import available, get_method

    lines = ["| method | what it does | trains | needs retain | families |",
             "|---|---|---|---|---|"]
    for name in available():
        spec = get_method(name)
        fams = ", ".join(spec.families or FAMILIES)
        lines.append(f"| `{name}` | {spec.description} | {'yes' if spec.trains else 'no'} | "
                     f"{'yes' if spec.needs_retain else 'no'} | {fams} |")
    return "\n".join(lines) + "\n"


def protocols_markdown() -> str:
    """The generated protocol reference (`jaxunlearn.eval.protocols.describe_protocols`)."""
    from jaxunlearn.eval.protocols import describe_protocols

    return describe_protocols()


GENERATED: dict[str, Any] = {
    "jaxunlearn.config.reference_markdown()": reference_markdown,
    "jaxunlearn.config.protocols_markdown()": protocols_markdown,
    "jaxunlearn.config.eval_markdown()": eval_markdown,
    "jaxunlearn.config.methods_markdown()": methods_markdown,
}


def generated_blocks(text: str) -> list[tuple[str, str]]:
    """(generator name, current content) of every generated block in a markdown text
    (`<!-- BEGIN GENERATED by NAME -->` ... `<!-- END GENERATED -->`)."""
    out = []
    for part in text.split("<!-- BEGIN GENERATED by ")[1:]:
        name, rest = part.split(" -->\n", 1)
        out.append((name, rest.split("<!-- END GENERATED -->", 1)[0]))
    return out


def regenerate(text: str) -> str:
    """`text` with every generated block rewritten from its generator."""
    for name, old in generated_blocks(text):
        if name not in GENERATED:
            raise ValueError(f"unknown generated block {name!r}; known: {sorted(GENERATED)}")
        begin = f"<!-- BEGIN GENERATED by {name} -->\n"
        text = text.replace(begin + old, begin + GENERATED[name](), 1)
    return text
