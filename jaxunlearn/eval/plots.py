"""Plots of result records, saved atomically as PNG (matplotlib, Agg canvas, no pyplot).

Every function returns the data it drew as ``{series name: {"x": [...], "y": [...]}}`` so
callers and tests can check the numbers behind the picture. Nothing is written when there
is nothing to plot (ValueError instead).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxunlearn.eval._atomic import atomic_write_bytes
from jaxunlearn.eval.records import MODALITIES, lookup, main_records, method_order, select

Series = dict[str, dict[str, list]]


def _new_figure(width: float = 6.0, height: float = 4.0):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _require(series: Series, what: str) -> None:
    if not series:
        raise ValueError(f"nothing to plot: no records for {what}")


def plot_tradeoff(records: Sequence[Mapping], path: str | os.PathLike, *,
                  modality: str = "multi", task: str = "classification",
                  metric: str = "accuracy", x_set: str = "retain", y_set: str = "forget",
                  vanilla: str = "vanilla") -> Series:
    """Forget-vs-utility scatter: one point per method, x = ``x_set`` score, y = ``y_set``.

    Better methods sit bottom-right (low forget, high retain).
    """
    main = main_records(records)
    series: Series = {}
    for m in method_order((r["method"] for r in main), vanilla):
        key = {"method": m, "task": task, "modality": modality, "metric": metric}
        x, y = lookup(main, set=x_set, **key), lookup(main, set=y_set, **key)
        if x is not None and y is not None:
            series[m] = {"x": [x], "y": [y]}
    _require(series, f"{x_set} and {y_set} {task}/{metric}/{modality}")
    fig, ax = _new_figure()
    for m, s in series.items():
        ax.scatter(s["x"], s["y"], label=m, marker="*" if m == vanilla else "o", s=60)
        ax.annotate(m, (s["x"][0], s["y"][0]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.set_xlabel(f"{x_set} {task} {metric} ({modality}) ↑")
    ax.set_ylabel(f"{y_set} {task} {metric} ({modality}) ↓")
    ax.set_title("Forget vs utility")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return series


def plot_modality_bars(records: Sequence[Mapping], path: str | os.PathLike, *,
                       set_name: str = "forget", task: str = "classification",
                       metric: str = "accuracy", vanilla: str = "vanilla") -> Series:
    """Grouped bars per method: Multi vs Text for one set/task/metric.

    Series are the modalities; ``x`` lists the methods that have a value for it.
    """
    main = main_records(records)
    methods = method_order((r["method"] for r in main), vanilla)
    series: Series = {}
    for mod in MODALITIES:
        xs, ys = [], []
        for m in methods:
            v = lookup(main, method=m, set=set_name, task=task, modality=mod, metric=metric)
            if v is not None:
                xs.append(m)
                ys.append(v)
        if xs:
            series[mod] = {"x": xs, "y": ys}
    _require(series, f"{set_name} {task}/{metric}")
    fig, ax = _new_figure(max(6.0, 1.2 * len(methods)), 4.0)
    width = 0.8 / len(series)
    for i, (mod, s) in enumerate(series.items()):
        pos = [methods.index(m) + (i - (len(series) - 1) / 2) * width for m in s["x"]]
        ax.bar(pos, s["y"], width=width, label=mod)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30, ha="right")
    ax.set_ylabel(f"{set_name} {task} {metric}")
    ax.set_title(f"{set_name}: multimodal vs text-only")
    ax.legend()
    _save(fig, path)
    return series


def _curves(records: Sequence[Mapping], group_by: str, **criteria) -> Series:
    series: Series = {}
    rows = [r for r in select(records, **criteria) if r.get("step") is not None]
    for name in dict.fromkeys(r[group_by] for r in rows):
        points = sorted((r["step"], r["value"]) for r in rows if r[group_by] == name)
        steps = [s for s, _ in points]
        if len(set(steps)) != len(steps):
            raise ValueError(f"duplicate steps for {group_by}={name!r} under {criteria}")
        series[name] = {"x": steps, "y": [v for _, v in points]}
    return series


def plot_sequential(records: Sequence[Mapping], path: str | os.PathLike, *,
                    method: str | None = None, task: str = "classification",
                    metric: str = "accuracy", modality: str = "multi",
                    protocol: str = "sequential") -> Series:
    """Metric vs request index (``step``), one curve per set, for one method.

    ``method`` may be omitted when the records hold a single method for ``protocol``.
    """
    if method is None:
        methods = {r["method"] for r in select(records, protocol=protocol)}
        if len(methods) != 1:
            raise ValueError(f"plot_sequential: pass method=, the records hold "
                             f"{sorted(methods) or 'no'} methods for protocol {protocol!r}")
        method = methods.pop()
    series = _curves(records, "set", protocol=protocol, method=method, task=task,
                     modality=modality, metric=metric)
    _require(series, f"{protocol} {method} {task}/{metric}/{modality}")
    fig, ax = _new_figure()
    for name, s in series.items():
        ax.plot(s["x"], s["y"], marker="o", label=name)
    ax.set_xlabel("request index")
    ax.set_ylabel(f"{task} {metric} ({modality})")
    ax.set_title(f"Sequential unlearning: {method}")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return series


def plot_relearning(records: Sequence[Mapping], path: str | os.PathLike, *,
                    set_name: str = "forget", task: str = "classification",
                    metric: str = "accuracy", modality: str = "multi",
                    protocol: str = "relearn") -> Series:
    """Metric vs relearning epoch (``step``), one curve per method."""
    series = _curves(records, "method", protocol=protocol, set=set_name, task=task,
                     modality=modality, metric=metric)
    _require(series, f"{protocol} {set_name} {task}/{metric}/{modality}")
    fig, ax = _new_figure()
    for name, s in series.items():
        ax.plot(s["x"], s["y"], marker="o", label=name)
    ax.set_xlabel("relearning epoch")
    ax.set_ylabel(f"{set_name} {task} {metric} ({modality})")
    ax.set_title("Relearning attack")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return series


def plot_utility_forgetting(records: Sequence[Mapping], path: str | os.PathLike, *,
                            protocol: str | None = None, forget_set: str = "forget",
                            forget_task: str = "classification",
                            forget_metric: str = "accuracy", modality: str = "multi",
                            vanilla: str = "vanilla") -> Series:
    """Utility against forgetting: one series per utility benchmark (set ``utility``, its
    headline metric), one point per (method, step) with x = the forget set's score.

    ``protocol``: only its records (None = all, e.g. merged runs of several methods).
    Better methods sit top-left (low forget score, high utility).
    """
    rows = records if protocol is None else select(records, protocol=protocol)
    keys = list(dict.fromkeys((r["method"], r.get("step")) for r in rows))
    order = method_order(m for m, _ in keys)
    keys.sort(key=lambda k: (order.index(k[0]), -1 if k[1] is None else k[1]))
    heads = [r for r in rows if r["set"] == "utility" and "/" not in r["metric"]]
    series: Series = {}
    for method, step in keys:
        x = lookup(rows, method=method, step=step, set=forget_set, task=forget_task,
                   modality=modality, metric=forget_metric)
        if x is None:
            continue
        for r in heads:
            if r["method"] == method and r.get("step") == step:
                s = series.setdefault(f"{r['task']} {r['metric']}", {"x": [], "y": [],
                                                                     "label": []})
                s["x"].append(x)
                s["y"].append(r["value"])
                s["label"].append(method if step is None else f"{method}@{step}")
    _require(series, f"utility records and {forget_set} {forget_task}/{forget_metric}")
    fig, ax = _new_figure()
    for name, s in series.items():
        ax.plot(s["x"], s["y"], marker="o", linestyle=":", label=name)
        for x, y, lab in zip(s["x"], s["y"], s["label"]):
            ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{forget_set} {forget_task} {forget_metric} ({modality}) ↓")
    ax.set_ylabel("utility score ↑ (accuracy as fraction; judge scores 0-100)")
    ax.set_title("Utility vs forgetting")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return series


def plot_frontiers(frontiers: Mapping[str, Mapping[str, Mapping]], path: str | os.PathLike, *,
                   title: str = "") -> Series:
    """Sweep frontiers (`eval.sweep.frontier_data`), one panel per modality: every point of
    every sweep (x = retain score ↑, y = forget score ↓), the Pareto frontier as a line, the
    starting model as a star and each sweep's selected point ringed.

    Returns `{"<sweep>/<modality>": {"x": [...], "y": [...]}}`: the points drawn."""
    mods = list(dict.fromkeys(m for fr in frontiers.values() for m in fr))
    series: Series = {}
    _require({k: v for k, v in frontiers.items() if v}, "the sweeps' frontiers")
    fig = Figure(figsize=(4.2 * len(mods), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    for j, mod in enumerate(mods):
        ax = fig.add_subplot(1, len(mods), j + 1)
        ref_drawn = False
        for i, (label, fr) in enumerate(frontiers.items()):
            d = fr.get(mod)
            if not d:
                continue
            color = f"C{i % 10}"
            series[f"{label}/{mod}"] = {"x": list(d["x"]), "y": list(d["y"])}
            ax.scatter(d["x"], d["y"], color=color, s=22, alpha=0.7, label=label)
            pos = {idx: k for k, idx in enumerate(d["index"])}
            line = [pos[idx] for idx in d["pareto"]]
            ax.plot([d["x"][k] for k in line], [d["y"][k] for k in line], color=color, lw=1.2)
            if d.get("selected") in pos:
                k = pos[d["selected"]]
                ax.scatter([d["x"][k]], [d["y"][k]], s=160, facecolors="none",
                           edgecolors=color, linewidths=1.8)
            if not ref_drawn and d.get("x0") is not None and d.get("y0") is not None:
                ax.scatter([d["x0"]], [d["y0"]], marker="*", s=140, color="black",
                           label="starting model")
                ref_drawn = True
            ax.set_xlabel(f"{d['x_label']} ({mod}) ↑", fontsize=8)
            ax.set_ylabel(f"{d['y_label']} ({mod}) ↓", fontsize=8)
        ax.set_title(mod, fontsize=9)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)
    return series
