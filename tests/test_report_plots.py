"""The simulator's pictures and tables as a reader sees them: a marker at every checkpoint,
no `nan` in run.md, and the docs' pictures present and small."""

from __future__ import annotations

import math
import re
from pathlib import Path

from activestream.simulation.report import plot, run_table

ROOT = Path(__file__).resolve().parents[1]


def record(points: list[tuple[int, float]], seed: int = 0, policy: str = "margin", **summary) -> dict:
    """A run's record with checkpoints at ``(labels, test accuracy)``; one every 1,000 images."""
    checkpoints = [{"images": 1000 * i, "labels": labels, "pseudo": 0, "version": i + 1, "test_accuracy": acc}
                   for i, (labels, acc) in enumerate(points)]
    return {"config": {"seed": seed, "window": 1000}, "policy": policy, "checkpoints": checkpoints,
            "labels": points[-1][0], "final_accuracy": points[-1][1], "drift_events": [], **summary}


def marked(line) -> list[tuple[float, float]]:
    """The points of a line that carry a marker."""
    if line.get_marker() in (None, "None", "", " "):
        return []
    xs, ys = line.get_xdata(), line.get_ydata()
    every = line.get_markevery()
    keep = range(len(xs)) if every is None else every
    return [(float(xs[i]), float(ys[i])) for i in keep]


def test_a_run_with_three_checkpoints_is_drawn_with_a_marker_at_each(tmp_path):
    points = [(0, 0.5), (100, 0.7), (200, 0.75)]
    fig = plot({"margin": [record(points)]}, tmp_path / "curve.png", "three checkpoints")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    drawn = [p for line in fig.axes[0].lines for p in marked(line)]
    assert sorted(drawn) == [(float(x), y) for x, y in points]


def test_several_seeds_mark_every_seed_s_checkpoints(tmp_path):
    runs = [record([(0, 0.5), (90, 0.68), (200, 0.74)]), record([(0, 0.52), (120, 0.7), (210, 0.76)], seed=1)]
    everything = record([(0, 0.5), (1000, 0.8), (2000, 0.85)], policy="all")
    fig = plot({"margin": runs, "all": [everything, everything]}, tmp_path / "compare.png", "two seeds")
    drawn = {p for line in fig.axes[0].lines for p in marked(line)}
    right = max(r["labels"] for r in runs)
    for r in [*runs, everything]:
        for c in r["checkpoints"]:
            if c["labels"] <= right:  # the picture ends where the budgeted arms do
                assert (float(c["labels"]), c["test_accuracy"]) in drawn


def test_run_md_says_in_words_what_a_run_leaves_undefined():
    everything = record([(0, 0.5), (100, 0.7)], policy="all", pseudo_labels=0, pseudo_precision=math.nan,
                        window_requests=[1000], window_target=math.nan, audit_coverage=math.nan)
    text = run_table(everything)
    assert "nan" not in text.lower(), text
    assert "no pseudo-labels" in text and "no budget to keep" in text and "no audit interval" in text
    kept = record([(0, 0.5), (100, 0.7)], pseudo_labels=40, pseudo_precision=0.95, window_requests=[98, 103],
                  window_target=100.0, audit_coverage=0.9)
    text = run_table(kept)
    assert "40 pseudo-labels (precision 0.950)" in text and "98-103 against 100" in text and "90%" in text


def pictures(doc: Path) -> list[Path]:
    return [(doc.parent / target).resolve()
            for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", doc.read_text())]


def test_the_learning_curves_in_the_docs_are_there_and_small():
    curves = pictures(ROOT / "docs" / "simulation.md")
    assert curves, "docs/simulation.md shows no learning curve"
    for path in curves:
        assert path.is_file() and path.stat().st_size < 150_000, path
    assert set(pictures(ROOT / "README.md")) & set(curves), "the README shows no learning curve"
