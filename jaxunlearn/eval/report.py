"""Run reports: ``report.json`` per run, markdown tables in the papers' layout, comparisons.

The table layout follows the main tables of MLLMU-Bench / MANU: rows are methods (vanilla
first), columns are set (Forget, Test, Retain, Celebrity) x task (Class. acc, Gen. ROUGE-L,
Cloze acc) with an arrow for the better direction (Forget/Test ↓, Retain/Celebrity ↑).
Multimodal and text-only results are **separate tables** (``### Multimodal``, then
``### Text-only``), each with the same columns. Accuracies are shown in percent with one
decimal, ROUGE-L F-measure in [0, 1] with three; a missing number is ``–``.
Plots live in :mod:`jaxunlearn.eval.plots` and are re-exported here.

Protocol reports (:func:`write_protocol_report`): ``report.json``, ``report.md`` with
per-step tables (:func:`step_table`) and the protocol's plots, in the protocol's ``out_dir``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxunlearn.eval._atomic import atomic_write_text
from jaxunlearn.eval.plots import (  # noqa: F401
    plot_modality_bars,
    plot_relearning,
    plot_sequential,
    plot_tradeoff,
    plot_utility_forgetting,
)
from jaxunlearn.eval.records import (
    MODALITIES,
    SETS,
    lookup,
    main_records,
    method_order,
    select,
    validate_record,
)
from jaxunlearn.parallel import distributed

REPORT_NAME = "report.json"
REPORT_FORMAT = "jaxunlearn.report/1"

# (task, metric, header, scale, decimals)
TABLE_COLUMNS: tuple[tuple[str, str, str, float, int], ...] = (
    ("classification", "accuracy", "Class. acc", 100.0, 1),
    ("generation", "rougeL", "Gen. ROUGE-L", 1.0, 3),
    ("cloze", "accuracy", "Cloze acc", 100.0, 1),
)
LOWER_IS_BETTER: frozenset[str] = frozenset({"forget", "test"})
MODALITY_TITLES: dict[str, str] = {"multi": "Multimodal", "text": "Text-only"}


# --- report.json ----------------------------------------------------------------------------

def _jsonable(obj):
    """JSON fallback for config values: paths, tuples/sets, numpy scalars and arrays."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    raise TypeError(f"config value of type {type(obj).__name__} is not JSON serialisable: "
                    f"{obj!r}")


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout holding this package, or None."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def package_version() -> str | None:
    """Installed jaxunlearn version, or None."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("jaxunlearn")
    except PackageNotFoundError:
        return None


def write_run_report(run_dir: str | os.PathLike, config: Mapping, model_hash: str,
                     results: Sequence[Mapping], *, created: str | None = None) -> Path:
    """Write ``run_dir/report.json`` atomically and return its path.

    Content: ``format``, ``created`` (ISO-8601 UTC, the only time-dependent field; pass
    ``created`` to fix it), ``jaxunlearn_version``, ``git_commit`` (None outside a git
    checkout), ``model_hash``, ``config`` and ``records`` (validated result records, see
    :mod:`jaxunlearn.eval.records`). Invalid records raise before anything is written.
    """
    records = [validate_record(r) for r in results]
    report = {
        "format": REPORT_FORMAT,
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "jaxunlearn_version": package_version(),
        "git_commit": git_commit(),
        "model_hash": model_hash,
        "config": config,
        "records": records,
    }
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False, default=_jsonable)
    return atomic_write_text(Path(run_dir) / REPORT_NAME, text + "\n")


def read_run_report(run_dir: str | os.PathLike) -> dict:
    """Load ``run_dir/report.json`` (or a path to the file itself)."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {REPORT_NAME} at {path}; run an evaluation first")
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path} is not a {REPORT_FORMAT} report "
                         f"(format={report.get('format')!r})")
    return report


# --- markdown --------------------------------------------------------------------------------

def _cell(value: float | None, scale: float, decimals: int) -> str:
    return "–" if value is None else f"{value * scale:.{decimals}f}"


def _header(set_name: str, label: str) -> str:
    arrow = "↓" if set_name in LOWER_IS_BETTER else "↑"
    return f"{set_name.capitalize()} {label} {arrow}"


def markdown_table(records: Sequence[Mapping], vanilla: str = "vanilla") -> str:
    """Main-results markdown: one table per modality present, in the papers' layout.

    Uses only main-evaluation records (no ``protocol``/``step``) of the canonical sets;
    sets without any record are left out, tasks of a present set always get a column.
    """
    main = [r for r in main_records(records) if r["set"] in SETS]
    if not main:
        raise ValueError("markdown_table: no main-evaluation records for the sets "
                         f"{list(SETS)}")
    sets = [s for s in SETS if any(r["set"] == s for r in main)]
    methods = method_order((r["method"] for r in main), vanilla)
    columns = [(s, *c) for s in sets for c in TABLE_COLUMNS]
    blocks = []
    for mod in MODALITIES:
        rows_for = [r for r in main if r["modality"] == mod]
        if not rows_for:
            continue
        lines = [f"### {MODALITY_TITLES[mod]}", "",
                 "| Method | " + " | ".join(_header(s, c[2]) for s, *c in columns) + " |",
                 "|---|" + "---:|" * len(columns)]
        for m in methods:
            cells = [_cell(lookup(rows_for, method=m, set=s, task=task, metric=metric),
                           scale, dec)
                     for s, task, metric, _, scale, dec in columns]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    note = ("Accuracy in %, ROUGE-L F-measure in [0, 1]; ↓ lower is better (forgetting), "
            "↑ higher is better (utility).")
    return "\n\n".join(blocks) + "\n\n" + note + "\n"


def _canon(record: Mapping) -> str:
    return json.dumps(record, sort_keys=True)


def _run_labels(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    names = [Path(d).name or str(d) for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def merge_reports(run_dirs: Sequence[str | os.PathLike], vanilla: str = "vanilla") -> str:
    """Comparison markdown from several runs' ``report.json``.

    A method found in one run keeps its name; a method in several runs with identical
    main results appears once; otherwise it becomes ``method (run)``, run = folder name.
    """
    if not run_dirs:
        raise ValueError("merge_reports: give at least one run directory")
    labels = _run_labels(run_dirs)
    reports = [read_run_report(d) for d in run_dirs]
    by_method: dict[str, dict[str, list]] = {}
    for label, rep in zip(labels, reports):
        for r in main_records(rep["records"]):
            by_method.setdefault(r["method"], {}).setdefault(label, []).append(r)
    merged: list[dict] = []
    for method, per_run in by_method.items():
        variants = {json.dumps(sorted(rs, key=_canon), sort_keys=True)
                    for rs in per_run.values()}
        if len(variants) == 1:
            merged += next(iter(per_run.values()))
            continue
        for label, rs in per_run.items():
            merged += [{**r, "method": f"{method} ({label})"} for r in rs]
    header = ["## Comparison", ""] + [
        f"- `{label}`: model `{rep.get('model_hash')}`, commit `{rep.get('git_commit')}`, "
        f"created {rep.get('created')}" for label, rep in zip(labels, reports)]
    return "\n".join(header) + "\n\n" + markdown_table(merged, vanilla=vanilla)


# --- protocol reports ------------------------------------------------------------------------

UNSCALED = frozenset({"nll", "fact", "meaningful", "factuality"})  # shown as they are
PlotSpec = tuple[str, Callable[..., Any], dict]  # (file name, plot function, its kwargs)


def model_fingerprint(model: Any, sample: int = 4096) -> str:
    """A short hash of parameter names, shapes, dtypes and a strided sample of each value."""
    h = hashlib.sha256()
    for name in sorted(model.params):
        v = model.params[name]
        h.update(f"{name}:{tuple(v.shape)}:{v.dtype}".encode())
        flat = np.asarray(distributed.to_host(v)).reshape(-1)  # sharded over processes too
        h.update(np.ascontiguousarray(flat[:: max(1, flat.size // sample)]).tobytes())
    return h.hexdigest()[:16]


def strip_protocol(records: Sequence[Mapping], method: str | None = None) -> list[dict]:
    """Records without protocol/step (the main-table layout), optionally renamed."""
    return [{k: v for k, v in r.items() if k not in ("protocol", "step")}
            | ({"method": method} if method else {}) for r in records]


def step_table(records: Sequence[Mapping], protocol: str, *, task: str = "classification",
               metrics: Sequence[str] = ("accuracy", "likelihood_accuracy"),
               step_label: str = "Step") -> str:
    """Markdown with one row per step: (method, set, modality, metric) columns for one task
    (shares in %, scores in :data:`UNSCALED` as they are); "" without records."""
    rows = [r for r in select(records, protocol=protocol, task=task)
            if r.get("step") is not None and r["metric"] in metrics]
    if not rows:
        return ""
    cols = list(dict.fromkeys((r["method"], r["set"], r["modality"], r["metric"])
                              for r in rows))
    steps = sorted({r["step"] for r in rows})
    head = [f"{m} {s} {mod} {met}" for m, s, mod, met in cols]
    lines = [f"| {step_label} | " + " | ".join(head) + " |", "|---|" + "---:|" * len(cols)]
    for st in steps:
        cells = []
        for m, s, mod, met in cols:
            v = [r["value"] for r in rows if r["step"] == st and r["method"] == m
                 and r["set"] == s and r["modality"] == mod and r["metric"] == met]
            scale = 1.0 if met in UNSCALED else 100.0
            cells.append(f"{scale * v[0]:.{1 if scale > 1 else 3}f}" if v else "–")
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main_view_plot(fn: Callable[..., Any], protocol: str) -> Callable[..., Any]:
    """A plot function drawing ``fn`` over the main-table view of one protocol's records."""
    def plot(records, path, **kw):
        return fn(strip_protocol(select(records, protocol=protocol)), path, **kw)
    return plot


def modality_plots(protocol: str, method: str) -> list[PlotSpec]:
    """Multi-vs-text bars of a before (step 0, shown as vanilla) / after (last step) protocol:
    option likelihood and generated-letter accuracy."""
    def plot(records, path, **kw):
        rows = select(records, protocol=protocol)
        last = max(r["step"] for r in rows)
        main = (strip_protocol([r for r in rows if r["step"] == 0], "vanilla")
                + strip_protocol([r for r in rows if r["step"] == last], method))
        return plot_modality_bars(main, path, **kw)
    return [("modality_forget.png", plot, {"metric": "likelihood_accuracy"}),
            ("modality_forget_letter.png", plot, {})]


def write_protocol_report(out_dir: str | os.PathLike | None, protocol: str, config: Mapping,
                          model: Any, records: Sequence[Mapping], markdown: str,
                          plots: Sequence[PlotSpec] = ()) -> dict[str, Path]:
    """Write report.json, report.md and ``plots`` to ``out_dir`` (nothing when it is None);
    plots without data are skipped. Returns the written paths by file name."""
    if out_dir is None:
        return {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, fn, kw in plots:
        try:
            fn(records, out / name, **kw)
        except ValueError:  # nothing to plot for this view
            continue
        paths[name] = out / name
    md = out / "report.md"
    atomic_write_text(md, f"# {protocol}\n\n{markdown}")
    paths["report.md"] = md
    paths[REPORT_NAME] = write_run_report(out, {"protocol": protocol, **config},
                                          model_fingerprint(model), records)
    return paths
