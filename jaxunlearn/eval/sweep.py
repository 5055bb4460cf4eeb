"""Sweeps: one method over a grid of its options and training keys, every point evaluated,
a frontier (forget metric against retain metric) and the point a declared rule selects.

`grid_points` validates a grid (`{key: [values]}`; keys are `train.KEY`, `method.options.KEY`
or a bare name, read as the method's option when it has one, else as a training key) with the
method's typed options and `TrainConfig`. `run_sweep` evaluates the starting model (the
reference of the rule), then unlearns and evaluates every point with one `Evaluator`; since
the learning rate, the schedule lengths, the weight decay (`train.state.make_optimizer`) and
the methods' loss weights (`methods.common.hyper`) are runtime values of the train step
(`train.programs.CachedProgram`), a grid over them compiles the train step once per batch
shape, and the evaluation programs once.

Selection rule (`SelectionRule`, default: `max_forget_drop`): among the points whose guard
sets (retain, celebrity) keep at least `keep` (0.9) of the starting model's score, the one with
the largest drop of the forget score; scores are `metric` (`task/metric`, default
`classification/accuracy`) averaged over the evaluated modalities. No eligible point: nothing
is selected (`selected: null`).

Files (`write_sweep`): `sweep.json` (format `jaxunlearn-sweep/1`: method, rule, reference
scores, every point's settings, scores, eligibility and frontier membership, the selected
point, the plotted data), `sweep.md` and `sweep.csv` (one row per point), `report.json` (every
result record; rows `METHOD[i]`, the starting model `vanilla`) and `frontier.png` (one panel
per modality; the selected point ringed). `points.jsonl` holds the finished points, one per
line, so an interrupted sweep resumes at the next point. `overlay_frontiers` draws several
sweeps' frontiers in one figure (`jaxunlearn report SWEEP_DIR ... --out DIR`).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxunlearn.eval._atomic import atomic_write_text
from jaxunlearn.eval.evaluate import Evaluator, SetsLike
from jaxunlearn.eval.records import lookup
from jaxunlearn.train.driver import TrainConfig, check_checkpointing

SWEEP_FORMAT = "jaxunlearn-sweep/1"
RULES = ("max_forget_drop",)


@dataclasses.dataclass(frozen=True)
class SelectionRule:
    """Which point a sweep selects: `rule` (max_forget_drop: the largest drop of the forget
    score) among points whose `guards` sets keep at least `keep` of the reference score;
    scores are `metric` (`task/metric`) averaged over the evaluated modalities."""

    metric: str = "classification/accuracy"
    keep: float = 0.9
    guards: tuple[str, ...] = ("retain", "celebrity")
    forget: str = "forget"
    rule: str = "max_forget_drop"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"sweep rule {self.rule!r} is unknown; use one of {RULES}")
        if self.metric.count("/") != 1 or not all(self.metric.split("/")):
            raise ValueError(f"sweep metric {self.metric!r} must look like task/metric, e.g. "
                             "classification/accuracy")
        if not 0 <= self.keep <= 1:
            raise ValueError(f"sweep keep {self.keep} must lie in [0, 1]")

    @property
    def task(self) -> str:
        return self.metric.split("/")[0]

    @property
    def name(self) -> str:
        return self.metric.split("/")[1]

    def describe(self) -> str:
        guards = " and ".join(self.guards) or "nothing"
        return (f"largest drop of {self.forget} {self.metric} with {guards} >= "
                f"{self.keep:g} x the starting model's")


# ----------------------------------------------------------------------------- the grid

def _axis_key(name: str, key: str, option_names: set[str], train_names: set[str]) -> str:
    """`train.KEY` / `method.options.KEY` of one grid key (bare names resolved)."""
    if key.startswith("train."):
        bare, section, names = key[len("train."):], "train", train_names
    elif key.startswith("method.options."):
        bare, section, names = key[len("method.options."):], "method.options", option_names
    else:
        bare = key
        if key in option_names:
            return f"method.options.{key}"
        if key in train_names:
            return f"train.{key}"
        close = difflib.get_close_matches(key, sorted(option_names | train_names), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"sweep key {key!r} is neither an option of {name} nor a train key"
                         f"{hint}")
    if bare not in names:
        close = difflib.get_close_matches(bare, sorted(names), n=1)
        hint = f"; did you mean {section}.{close[0]!r}?" if close else ""
        raise ValueError(f"sweep key {key!r}: {section} has no key {bare!r}{hint}")
    return f"{section}.{bare}"


def grid_points(name: str, grid: Mapping[str, Sequence[Any]],
                options: Mapping[str, Any] | None = None,
                train: Mapping[str, Any] | None = None) -> list[dict]:
    """Every combination of `grid` over the base `options` / `train` mappings, validated.

    Returns `[{"settings": {key: value}, "options": {...}, "train": {...}}]` in row-major
    order (the last key varies fastest); a bad key or value is one error naming it."""
    from jaxunlearn.methods.base import get_method, resolve_options
    from jaxunlearn.train import typed

    spec = get_method(name)
    option_names = {f.name for f in dataclasses.fields(spec.options)}
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    if not grid:
        raise ValueError("a sweep needs at least one grid key (e.g. train.lr=[1e-4,1e-3])")
    axes: dict[str, list] = {}
    for key, values in grid.items():
        full = _axis_key(name, str(key), option_names, train_names)
        if full in axes:
            raise ValueError(f"sweep key {key!r} is given twice")
        if full.startswith("train.") and not spec.trains:
            raise ValueError(f"method {name!r} does not train, so the sweep key {key!r} has "
                             "no effect; sweep its method.options instead")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"sweep key {key!r} needs a non-empty list of values, e.g. "
                             f"{key}=[1,2]")
        axes[full] = list(values)
    points = []
    for combo in itertools.product(*axes.values()):
        settings = dict(zip(axes, combo))
        opts = dict(options or {})
        tr = dict(train or {})
        for k, v in settings.items():
            if k.startswith("train."):
                tr[k[len("train."):]] = v
            else:
                opts[k[len("method.options."):]] = v
        shown = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        try:
            built_opts = resolve_options(spec, opts)
            built_train = typed.build(TrainConfig, tr, "train")
            check_checkpointing(built_train, checkpointed=False)  # sweep points write none
        except ValueError as e:
            raise ValueError(f"sweep point {shown}: {e}") from None
        # the typed values (e.g. YAML's string 1e-3 read as the float 0.001)
        settings = {k: getattr(built_train if k.startswith("train.") else built_opts,
                               k.rsplit(".", 1)[1]) for k in settings}
        points.append({"settings": settings, "options": opts, "train": tr})
    return points


# ----------------------------------------------------------------------------- scores

def scores(records: Sequence[Mapping], label: str, rule: SelectionRule,
           sets: Sequence[str], modalities: Sequence[str]) -> dict[str, dict[str, float]]:
    """`{set: {modality: value, "mean": mean over modalities}}` of `rule.metric` for the
    records of row `label` (sets / modalities without the metric are left out)."""
    out: dict[str, dict[str, float]] = {}
    for s in sets:
        per = {}
        for m in modalities:
            v = lookup(records, method=label, set=s, task=rule.task, modality=m,
                       metric=rule.name)
            if v is not None:
                per[m] = v
        if per:
            per["mean"] = sum(per.values()) / len(per)
            out[s] = per
    return out


def eligible(point: Mapping[str, Any], reference: Mapping[str, Mapping[str, float]],
             rule: SelectionRule) -> bool:
    """Whether every guard set keeps `rule.keep` of the reference's mean score."""
    for g in rule.guards:
        if g not in reference:
            continue  # not evaluated (e.g. no celebrities): no guard
        if point["scores"].get(g, {}).get("mean", float("-inf")) < rule.keep * \
                reference[g]["mean"]:
            return False
    return True


def select(points: Sequence[Mapping[str, Any]], reference: Mapping[str, Mapping[str, float]],
           rule: SelectionRule) -> int | None:
    """Index of the point `rule` selects (the first of equals), or None."""
    best, best_drop = None, None
    for p in points:
        if not eligible(p, reference, rule):
            continue
        drop = reference[rule.forget]["mean"] - p["scores"][rule.forget]["mean"]
        if best_drop is None or drop > best_drop:
            best, best_drop = p["index"], drop
    return best


def pareto(xy: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (higher x = retain, lower y = forget)."""
    keep = []
    for i, (x, y) in enumerate(xy):
        if not any((x2 >= x and y2 <= y) and (x2 > x or y2 < y) for x2, y2 in xy):
            keep.append(i)
    return sorted(keep, key=lambda i: xy[i][0])


def frontier_data(doc: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """The numbers `frontier.png` draws, per modality (and `mean`): x = retain score, y =
    forget score of every point, `index` (point numbers), `pareto` (indices on the frontier),
    the reference (`x0`, `y0`) and the selected point's index."""
    rule = SelectionRule(**{**doc["rule"], "guards": tuple(doc["rule"]["guards"])})
    x_set = rule.guards[0] if rule.guards else "retain"
    out = {}
    for mod in [*doc["modalities"], "mean"]:
        pts = [p for p in doc["points"] if mod in p["scores"].get(x_set, {})
               and mod in p["scores"].get(rule.forget, {})]
        if not pts:
            continue
        xy = [(p["scores"][x_set][mod], p["scores"][rule.forget][mod]) for p in pts]
        ref = doc["reference"]
        out[mod] = {"x": [a for a, _ in xy], "y": [b for _, b in xy],
                    "index": [p["index"] for p in pts],
                    "pareto": [pts[i]["index"] for i in pareto(xy)],
                    "x0": ref.get(x_set, {}).get(mod), "y0": ref.get(rule.forget, {}).get(mod),
                    "x_label": f"{x_set} {rule.metric}", "y_label": f"{rule.forget} {rule.metric}",
                    "selected": doc.get("selected")}
    return out


# ----------------------------------------------------------------------------- running

@dataclasses.dataclass
class SweepResult:
    """A finished sweep: the `sweep.json` document and every result record."""

    doc: dict
    records: list[dict]


def _point_label(method: str, index: int) -> str:
    return f"{method}[{index}]"


def run_sweep(ev: Evaluator, method: str, points: Sequence[Mapping[str, Any]], sets: SetsLike,
              unlearn_data: Any, *, rule: SelectionRule = SelectionRule(),
              tasks: Sequence[str] | None = None, modalities: Sequence[str] = ("multi", "text"),
              out_dir: str | os.PathLike | None = None,
              log: Callable[[str], None] | None = None,
              reference: Sequence[Mapping] | None = None,
              on_point: Callable[[int, Any], None] | None = None) -> SweepResult:
    """Evaluate `ev.model` (the reference), then unlearn and evaluate every point of
    `points` (from `grid_points`) with `unlearn_data` (`methods.base.UnlearnData`).

    `tasks` default to the rule's task. With `out_dir`, finished points are appended to
    `out_dir/points.jsonl` and a rerun on the same directory skips them (resume), and the
    sweep's files are written there at the end (`write_sweep`). `log` gets one line per
    point (default: stderr). `reference`: the starting model's records (row `vanilla`, the
    same sets, tasks and modalities) when they are already evaluated, e.g. by another sweep
    from the same model. `on_point(index, result)` gets every newly trained point's
    `MethodResult` (e.g. to keep the selected point's model without training it again)."""
    from jaxunlearn.methods.base import run_method

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    tasks = list(tasks or [rule.task])
    if rule.task not in tasks:
        raise ValueError(f"the sweep metric {rule.metric} needs task {rule.task!r} among the "
                         f"evaluated tasks {tasks}")
    set_names = list(sets)
    for s in [rule.forget, *rule.guards]:
        if s not in set_names and s != "celebrity":
            raise ValueError(f"the sweep rule reads set {s!r}, which is not evaluated "
                             f"(sets: {set_names})")
    ev = ev.with_model(_committed(ev.model))
    done = _load_points(out_dir)
    records: list[dict] = []
    if "reference" in done:
        records += done["reference"]["records"]
    elif reference is not None:
        recs = [dict(r) for r in reference if r.get("method") == "vanilla"]
        records += recs
        _append_point(out_dir, {"index": "reference", "records": recs})
    else:
        t0 = time.perf_counter()
        recs = ev.records(sets, tasks=tasks, modalities=modalities, method="vanilla")
        records += recs
        _append_point(out_dir, {"index": "reference", "records": recs})
        log(f"sweep {method}: starting model evaluated ({time.perf_counter() - t0:.1f}s)")
    reference = scores(records, "vanilla", rule, set_names, modalities)
    if rule.forget not in reference:
        raise ValueError(f"the evaluation gave no {rule.metric} on set {rule.forget!r}; "
                         "choose a metric the evaluated tasks report")
    rows = []
    for i, p in enumerate(points):
        label = _point_label(method, i)
        if i in done:
            row = done[i]
        else:
            t0 = time.perf_counter()
            result = run_method(method, ev.model, unlearn_data, dict(p["options"]),
                                train=dict(p["train"]))
            report = result.report
            prompt = report.get("system_prompt")
            pev = ev.with_model(result.model(ev.model), system_prompt=prompt)
            t1 = time.perf_counter()
            recs = pev.records(sets, tasks=tasks, modalities=modalities, method=label)
            if on_point is not None:
                on_point(i, result)
            del result, pev
            row = {"index": i, "settings": p["settings"], "records": recs,
                   "train_seconds": t1 - t0, "eval_seconds": time.perf_counter() - t1,
                   "steps": report.get("steps"), "final_loss": report.get("final_loss")}
            _append_point(out_dir, row)
        records += row["records"]
        sc = scores(row["records"], label, rule, set_names, modalities)
        rows.append({k: v for k, v in row.items() if k != "records"} | {"scores": sc})
        shown = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in p["settings"].items())
        got = ", ".join(f"{s} {sc[s]['mean']:.3f}" for s in [rule.forget, *rule.guards]
                        if s in sc)
        log(f"[{i + 1}/{len(points)}] {shown}: {got} ({row['train_seconds']:.1f}s train, "
            f"{row['eval_seconds']:.1f}s eval)")
    for r in rows:
        r["eligible"] = eligible(r, reference, rule)
    doc = {"format": SWEEP_FORMAT, "method": method, "rule": dataclasses.asdict(rule),
           "rule_text": rule.describe(), "tasks": tasks, "modalities": list(modalities),
           "sets": set_names, "reference": reference, "points": rows,
           "selected": select(rows, reference, rule)}
    fr = frontier_data(doc)
    for r in rows:
        r["frontier"] = r["index"] in fr.get("mean", {}).get("pareto", [])
    doc["frontier"] = fr
    result = SweepResult(doc, records)
    if out_dir is not None:
        write_sweep(out_dir, result)
    return result


def _committed(model: Any) -> Any:
    """`model` with its parameters committed to their devices, as a trained model's are (a
    jitted evaluation compiles separately for uncommitted arguments)."""
    import jax

    params = {k: jax.device_put(v, v.sharding) if isinstance(v, jax.Array) else v
              for k, v in model.params.items()}
    return model.replace(params=params)


def _load_points(out_dir: str | os.PathLike | None) -> dict:
    """Finished points of an interrupted sweep (`points.jsonl`), by index."""
    if out_dir is None or not (Path(out_dir) / "points.jsonl").is_file():
        return {}
    done = {}
    for line in (Path(out_dir) / "points.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        done[row["index"]] = row
    return done


def _append_point(out_dir: str | os.PathLike | None, row: Mapping) -> None:
    if out_dir is None:
        return
    with open(Path(out_dir) / "points.jsonl", "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- files

def _columns(doc: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(header, set, modality) of the score columns."""
    cols = []
    for s in [doc["rule"]["forget"], *doc["rule"]["guards"]]:
        if s in doc["reference"]:
            for m in [*doc["modalities"], "mean"]:
                cols.append((f"{s} {m}", s, m))
    return cols


def table_rows(doc: Mapping[str, Any]) -> list[dict]:
    """One dict per row of `sweep.md` / `sweep.csv` (the reference first)."""
    keys = list(doc["points"][0]["settings"]) if doc["points"] else []
    out = [{"point": "vanilla", **{k: "" for k in keys},
            **{h: doc["reference"][s].get(m) for h, s, m in _columns(doc)},
            "eligible": "", "frontier": "", "selected": ""}]
    for p in doc["points"]:
        out.append({"point": p["index"], **p["settings"],
                    **{h: p["scores"].get(s, {}).get(m) for h, s, m in _columns(doc)},
                    "eligible": p["eligible"], "frontier": p["frontier"],
                    "selected": p["index"] == doc["selected"]})
    return out


def markdown(doc: Mapping[str, Any]) -> str:
    rows = table_rows(doc)
    head = list(rows[0])
    scores_ = {h for h, _, _ in _columns(doc)}

    def cell(h: str, v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "yes" if v else ""
        if isinstance(v, float):
            return f"{v:.4f}" if h in scores_ else f"{v:g}"
        return str(v)

    lines = [f"## Sweep: {doc['method']} ({doc['rule']['metric']})", "",
             f"Rule: {doc['rule_text']}. Selected: "
             + (f"point {doc['selected']}" if doc["selected"] is not None else "none") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(h, r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_sweep(out_dir: str | os.PathLike, result: SweepResult) -> Path:
    """`sweep.json`, `sweep.md`, `sweep.csv`, `report.json` and `frontier.png` in `out_dir`."""
    from jaxunlearn.eval.plots import plot_frontiers
    from jaxunlearn.eval.report import write_run_report

    out = Path(out_dir)
    doc = result.doc
    atomic_write_text(out / "sweep.json", json.dumps(doc, indent=2, default=str) + "\n")
    atomic_write_text(out / "sweep.md", markdown(doc))
    buf = io.StringIO()
    rows = table_rows(doc)
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())
    write_run_report(out, {"sweep": {k: doc[k] for k in ("method", "rule", "tasks",
                                                         "modalities")}},
                     "", result.records)
    plot_frontiers({doc["method"]: doc["frontier"]}, out / "frontier.png",
                   title=f"{doc['method']}: {doc['rule_text']}")
    return out


def read_sweep(path: str | os.PathLike) -> dict:
    """`sweep.json` of a sweep output directory (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "sweep.json"
    if not p.is_file():
        raise FileNotFoundError(f"no sweep.json at {p}; pass the output directory of "
                                "`jaxunlearn sweep`")
    doc = json.loads(p.read_text())
    if doc.get("format") != SWEEP_FORMAT:
        raise ValueError(f"{p} has format {doc.get('format')!r}, expected {SWEEP_FORMAT}")
    return doc


def overlay_frontiers(sweep_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike
                      ) -> dict:
    """Several sweeps' frontiers in one figure: `out_dir/frontiers.png` and
    `out_dir/frontiers.json` (`{label: frontier data}`; label = method, or `method (dir)`
    when a method appears twice) plus `frontiers.md` (each sweep's selected point)."""
    from jaxunlearn.eval.plots import plot_frontiers

    docs = [read_sweep(d) for d in sweep_dirs]
    metrics = {d["rule"]["metric"] for d in docs}
    if len(metrics) > 1:
        raise ValueError(f"the sweeps use different metrics {sorted(metrics)}; overlay sweeps "
                         "of one metric")
    methods = [d["method"] for d in docs]
    labels = [m if methods.count(m) == 1 else f"{m} ({Path(p).name})"
              for m, p in zip(methods, sweep_dirs)]
    data = {label: d["frontier"] for label, d in zip(labels, docs)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_frontiers(data, out / "frontiers.png", title=f"frontiers ({metrics.pop()})")
    atomic_write_text(out / "frontiers.json", json.dumps(data, indent=2) + "\n")
    lines = ["| sweep | selected point | settings | forget | retain |", "|---|---|---|---|---|"]
    for label, d in zip(labels, docs):
        sel = d["selected"]
        p = next((p for p in d["points"] if p["index"] == sel), None)
        f_set = d["rule"]["forget"]
        g_set = d["rule"]["guards"][0] if d["rule"]["guards"] else "retain"
        lines.append(f"| {label} | {sel if sel is not None else 'none'} | "
                     + (", ".join(f"{k}={v}" for k, v in p["settings"].items()) if p else "")
                     + " | " + (f"{p['scores'][f_set]['mean']:.4f}" if p else "")
                     + " | " + (f"{p['scores'].get(g_set, {}).get('mean', float('nan')):.4f}"
                                if p else "") + " |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "frontiers.md", md)
    return {"data": data, "markdown": md}
