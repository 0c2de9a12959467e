"""Outputs of ``simulate`` and ``compare``: JSON record, PNG learning curves, Markdown tables.

A learning curve is test accuracy against human labels spent on the stream (seed labels
not counted: every arm gets the same seed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from activestream.simulation.engine import labels_to_reach


def curve(record: dict) -> list[tuple[float, float]]:
    return [(c["labels"], c["test_accuracy"]) for c in record["checkpoints"]]


def auc(points: list[tuple[float, float]], upto: float) -> float:
    """Mean accuracy over labels ``[0, upto]`` (area under the curve / ``upto``), step-held past the end."""
    if upto <= 0 or not points:
        return math.nan
    xs = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)
    grid = np.linspace(0.0, upto, 201)
    return float(np.interp(grid, xs, ys).mean())


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def run_table(record: dict) -> str:
    """Markdown: one row per checkpoint with the accuracy estimates beside the truth.

    Label-free estimates (CBPE, ATC) marked ``*`` were made before calibration: the raw
    average confidence, and no ATC.
    """
    rows = ["| images | labels | pseudo | version | test accuracy | truth on traffic | audit (95% CI) | IPW "
            "| naive (all labels) | label-free CBPE (95% CI) | ATC |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |"]
    for c in record["checkpoints"]:
        a, i, n = c.get("audit"), c.get("ipw"), c.get("naive")
        raw = "" if c.get("calibrated", True) else "*"
        rows.append(f"| {c['images']} | {c['labels']} | {c['pseudo']} | {c['version']} | {c['test_accuracy']:.4f} "
                    f"| {_num(c.get('truth_traffic'))} | {_ci(a)} | {_val(i)} | {_val(n)} | {_ci(c.get('cbpe'))}{raw} "
                    f"| {_val(c.get('atc'))} |")
    s = record
    head = (f"final test accuracy {s['final_accuracy']:.4f}; {s['labels']} human labels, {_pseudo(s)}; "
            f"{_requests(s)}; {_coverage(s)}{_errors(s.get('estimate_error'))}; {drift_line(s)}")
    return head + "\n\n" + "\n".join(rows) + "\n"


def _pseudo(s: dict) -> str:
    """Pseudo-labels and their precision, which no pseudo-labels leave undefined.

    >>> _pseudo({"pseudo_labels": 0, "pseudo_precision": math.nan})
    'no pseudo-labels'
    """
    if not s["pseudo_labels"] or _undefined(s["pseudo_precision"]):
        return f"{s['pseudo_labels'] or 'no'} pseudo-labels"
    return f"{s['pseudo_labels']} pseudo-labels (precision {s['pseudo_precision']:.3f})"


def _requests(s: dict) -> str:
    window = f"requests per {s['config']['window']} images: {_spread(s['window_requests'])}"
    if _undefined(s["window_target"]):  # label everything, or nothing: no budget to keep
        return f"{window}, no budget to keep ({s['policy']})"
    return f"{window} against {s['window_target']:.0f}"


def _coverage(s: dict) -> str:
    if _undefined(s["audit_coverage"]):
        return "no audit interval to check (no audit labels arrived)"
    return f"audit interval covered the truth at {s['audit_coverage']:.0%} of checkpoints"


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _errors(found: dict | None) -> str:
    if not found:
        return ""
    parts = [f"{part} ({e['checkpoints']} checkpoints): " + ", ".join(
        f"{k} {e[k]:.3f}" for k in ("audit", "ipw", "cbpe", "atc") if not math.isnan(e[k]))
        for part, e in found.items() if e["checkpoints"]]
    return "; mean absolute error against the truth on traffic, " + "; ".join(parts) if parts else ""


def _ci(e) -> str:
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}] n={e['n']}" if e and e["n"] else "-"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _val(e) -> str:
    return f"{e['value']:.3f}" if e and e["n"] else "-"


def _spread(values: list[int]) -> str:
    return f"{min(values)}-{max(values)}" if values else "-"


def plot(records_by_arm: dict[str, list[dict]], path: Path, title: str):
    """Test accuracy against labels spent, one line per arm with a marker at every checkpoint.

    One run: the line joins its checkpoints. Several seeds: the line is their mean (their
    checkpoints fall at different label counts, so it is taken on a grid), with a band of
    +-1 std and every seed's checkpoints as markers. Returns the (closed) figure.
    """
    fig, ax = _figure()
    budgeted = [r["labels"] for recs in records_by_arm.values() for r in recs if r["policy"] != "all"]
    right = max(budgeted) if budgeted and max(budgeted) > 0 else max(r["labels"] for recs in records_by_arm.values()
                                                                        for r in recs)
    for arm, recs in records_by_arm.items():
        if len(recs) == 1:
            points, checkpoints = _upto(curve(recs[0]), right)
            ax.plot(*zip(*points), marker="o", ms=4, markevery=list(range(checkpoints)), label=arm)
            continue
        grid = np.linspace(0, right, 101)
        ys = np.array([np.interp(grid, *zip(*curve(r))) for r in recs])
        mean = ys.mean(axis=0)
        line, = ax.plot(grid, mean, label=arm)
        ax.fill_between(grid, mean - ys.std(axis=0), mean + ys.std(axis=0), color=line.get_color(), alpha=0.15)
        marks = [p for r in recs for p in curve(r) if p[0] <= right]
        if marks:
            ax.plot(*zip(*marks), ls="none", marker="o", ms=3, color=line.get_color(), alpha=0.6)
    if len(records_by_arm) == 1:
        _mark_drift(ax, next(iter(records_by_arm.values())))
    _save(fig, ax, "human labels spent on the stream", "test accuracy", title, path)
    return fig


def _upto(points: list[tuple[float, float]], right: float) -> tuple[list[tuple[float, float]], int]:
    """The checkpoints up to ``right`` labels and how many, then where the curve crosses ``right``.

    >>> points, n = _upto([(0, 0.5), (100, 0.7), (300, 0.9)], 200)
    >>> n, [x for x, _ in points], round(points[-1][1], 6)
    (2, [0, 100, 200], 0.8)
    """
    kept = [p for p in points if p[0] <= right]
    n = len(kept)
    if n < len(points):
        kept.append((right, float(np.interp(right, *zip(*points)))))
    return kept, n


def plot_estimates(record: dict, path: Path, title: str):
    """Accuracy on traffic at each checkpoint: the truth, the audit estimate and the label-free
    ones (CBPE with its 95% band; hollow markers before calibration), against images streamed."""
    rows = [c for c in record["checkpoints"] if "truth_traffic" in c]
    fig, ax = _figure()
    x = [c["images"] for c in rows]
    ax.plot(x, [c["truth_traffic"] for c in rows], "k.-", label="truth on traffic")
    for key, style in (("audit", "C0o--"), ("cbpe", "C1s-"), ("atc", "C2^-")):
        pts = [(c["images"], c[key]) for c in rows if c.get(key) and c[key]["n"]]
        if pts:
            ax.plot([p for p, _ in pts], [e["value"] for _, e in pts], style, label=key, alpha=0.85)
    band = [(c["images"], c["cbpe"]) for c in rows if c.get("cbpe") and c["cbpe"]["n"]]
    if band:
        ax.fill_between([p for p, _ in band], [e["low"] for _, e in band], [e["high"] for _, e in band],
                        color="C1", alpha=0.15)
    raw = [(c["images"], c["cbpe"]["value"]) for c in rows if c.get("cbpe") and c["cbpe"]["n"] and not c["calibrated"]]
    if raw:
        ax.plot(*zip(*raw), "s", mfc="white", color="C1", label="cbpe before calibration (raw confidence)")
    _save(fig, ax, "images streamed", "accuracy of the served predictions, last window", title, path)
    return fig


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5), dpi=120)


def _save(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mark_drift(ax, records: list[dict]) -> None:
    """A dotted red line where each version's first drift detection came, for a single run."""
    if len(records) != 1:
        return
    firsts = {}
    for e in records[0].get("drift_events", []):
        firsts.setdefault(e["version"], e)
    for i, e in enumerate(firsts.values()):
        ax.axvline(e["labels"], color="red", ls=":", lw=1, label="drift detected" if i == 0 else None)


def drift_line(record: dict) -> str:
    events = record.get("drift_events", [])
    if not events:
        return "no drift detected"
    e = events[0]
    return (f"{len(events)} drift detections, the first at image {e['position']} ({e['detector']} on "
            f"{e['signal']} of v{e['version']})")


def write_run(record: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "run.json", "png": out / "curve.png", "md": out / "run.md",
             "estimates": out / "estimates.png"}
    write_json(paths["json"], record)
    c = record["config"]
    plot({record["policy"]: [record]}, paths["png"], f"{c['scenario']} {c['dataset']}, seed {c['seed']}")
    plot_estimates(record, paths["estimates"], f"{c['scenario']} {c['dataset']}, seed {c['seed']}: accuracy on traffic")
    paths["md"].write_text(run_table(record))
    return paths


def compare_summary(records: dict[str, list[dict]], baseline: str = "random", target: float | None = None) -> dict:
    """Per arm, over seeds: labels to reach the target, final accuracy, AUC (mean and std).

    The target defaults to the baseline's final accuracy in the same seed (paired), and
    the AUC runs over ``[0, baseline's labels]`` so arms are measured on the same range.
    """
    base = {r["config"]["seed"]: r for r in records.get(baseline, [])}
    summary = {}
    for arm, recs in records.items():
        rows = []
        for r in recs:
            ref = base.get(r["config"]["seed"])
            goal = target if target is not None else (ref["final_accuracy"] if ref else math.nan)
            upto = ref["labels"] if ref else r["labels"]
            need = labels_to_reach(curve(r), goal) if not math.isnan(goal) else math.nan
            ref_need = labels_to_reach(curve(ref), goal) if ref and not math.isnan(goal) else math.nan
            rows.append({"seed": r["config"]["seed"], "target": goal, "labels_to_target": need,
                         "ratio_to_baseline": need / ref_need if ref_need and ref_need > 0 else math.nan,
                         "final_accuracy": r["final_accuracy"], "auc": auc(curve(r), upto),
                         "labels": r["labels"], "pseudo_labels": r["pseudo_labels"],
                         "pseudo_precision": r["pseudo_precision"], "window_worst": r["window_worst"],
                         "audit_coverage": r["audit_coverage"]})
        summary[arm] = {"seeds": rows, **{k: _stats([row[k] for row in rows]) for k in (
            "labels_to_target", "ratio_to_baseline", "final_accuracy", "auc", "labels", "pseudo_precision",
            "window_worst", "audit_coverage")}}
    return summary


def _stats(values: list[float]) -> dict:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def compare_table(summary: dict) -> str:
    rows = ["| arm | labels to target | / baseline's | final accuracy | AUC | human labels | pseudo precision "
            "| worst window vs target | audit CI coverage |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for arm, s in summary.items():
        reached = f" ({s['labels_to_target']['n']}/{len(s['seeds'])} reached)"
        rows.append(f"| {arm} | {_pm(s['labels_to_target'], 0)}{reached} | {_pm(s['ratio_to_baseline'], 2)} "
                    f"| {_pm(s['final_accuracy'], 4)} | {_pm(s['auc'], 4)} | {_pm(s['labels'], 0)} "
                    f"| {_pm(s['pseudo_precision'], 3)} | {_pm(s['window_worst'], 3)} | {_pm(s['audit_coverage'], 2)} |")
    return "\n".join(rows) + "\n"


def _pm(s: dict, digits: int) -> str:
    if not s["n"]:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
