"""The terminal tables of `run` on a narrow screen: key/value blocks instead of a row of
columns cut to "…", and the usual table where it fits."""

from __future__ import annotations

from io import StringIO
from types import SimpleNamespace

from rich.console import Console

from activestream.display import SUMMARY_HEADERS, Display
from activestream.storage.store import Label, Sample, SampleStore
from activestream.streams.accuracy import PROBS
from activestream.streams.observer import Observed
from tests.test_label_free_live import traffic


def finished_run(tmp_path):
    """What the summary reads after a run: two versions, audits with labels, served predictions."""
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    seen, demo = Observed(), SimpleNamespace(produced=[f"img-{i}" for i in range(20000)])
    versions = []
    for version in (1, 2):
        _, probs, truth = traffic(400, seed=version, version=version)
        seen.label_free.observe([version] * 400, probs)
        seen.versions_served[version] = 19_876
        ids = list(truth)[:120]
        store.add_samples([Sample(k, model_version=version, predicted=int(probs[i].argmax()), reason="audit",
                                  selection_prob=0.005, meta={PROBS: probs[i].tolist()}) for i, k in enumerate(ids)])
        store.add_labels(Label(k, truth[k], "alice") for k in ids)
        versions.append(SimpleNamespace(version=version, parent=version - 1 or None, status="promoted",
                                        train_size=12_345, metrics={"holdout_accuracy": 0.81234,
                                                                    "test_accuracy": 0.80111}))
    registry = SimpleNamespace(versions=lambda name: versions)
    settings = SimpleNamespace(model_name="classifier", budget=0.05)
    return settings, seen, demo, registry, store


def summary_text(tmp_path, width: int) -> str:
    console = Console(file=StringIO(), width=width, record=True)
    Display(console).summary(*finished_run(tmp_path))
    return console.export_text()


def test_the_summary_at_80_columns_cuts_nothing(tmp_path):
    text = summary_text(tmp_path, 80)
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80
    for header in SUMMARY_HEADERS:  # every value is there, under its name
        assert header in text, text
    assert "19876" in text and "0.8123" in text and "promoted" in text


def test_a_wide_terminal_keeps_one_row_per_version(tmp_path):
    text = summary_text(tmp_path, 400)
    assert "…" not in text
    rows = [line for line in text.splitlines() if "promoted" in line]
    assert len(rows) == 2 and all("19876" in row and "0.8123" in row for row in rows), text


def test_the_live_table_at_80_columns_cuts_nothing(tmp_path):
    settings, seen, demo, _, store = finished_run(tmp_path)
    seen.announced.append({"version": 2, "metrics": {"test_accuracy": 0.80111}})
    console = Console(file=StringIO(), width=80, record=True, force_terminal=True)
    display = Display(console, interval=0.0)
    with display:
        display.update(SimpleNamespace(budget=0.05), SimpleNamespace(store=store), seen, demo)
    text = console.export_text()
    assert "…" not in text and "label-free acc (CBPE, ATC)" in text and "v2 " in text, text


def test_the_live_table_says_when_the_source_waits_for_a_round(tmp_path):
    settings, seen, demo, _, store = finished_run(tmp_path)
    texts = []
    for paused in (False, True):
        console = Console(file=StringIO(), width=200, record=True, force_terminal=True)
        with Display(console, interval=0.0) as display:
            display.update(SimpleNamespace(budget=0.05), SimpleNamespace(store=store), seen,
                           SimpleNamespace(produced=demo.produced, paused=paused))
        texts.append(console.export_text())
    assert "paused" not in texts[0] and "source paused: a fine-tuning round is due" in texts[1], texts


def test_a_run_without_a_source_of_its_own_counts_no_produced_images(tmp_path):
    # With --no-simulate the images come from `activestream source`, which the run does not
    # count: "produced 0" beside the predicted ones would read as a fault.
    settings, seen, demo, registry, store = finished_run(tmp_path)
    seen.predicted.update({f"img-{i}": 1 for i in range(300)})
    texts = {}
    for simulate in (True, False):
        here = SimpleNamespace(model_name="classifier", budget=0.05, simulate=simulate)
        console = Console(file=StringIO(), width=200, record=True)  # not a terminal: plain "name value" lines
        with Display(console, interval=0.0) as display:
            display.update(here, SimpleNamespace(store=store), seen, demo)
        display.summary(here, seen, demo, registry, store)
        texts[simulate] = console.export_text()
    assert "produced 20000" in texts[True] and "images 20000, predicted 300" in texts[True], texts[True]
    assert "produced" not in texts[False] and "images 20000" not in texts[False], texts[False]
    assert "predicted 300" in texts[False], texts[False]


def test_the_live_table_counts_versions_not_announcements(tmp_path):
    settings, seen, demo, _, store = finished_run(tmp_path)
    for version in (1, 2, 3, 1, 3):  # a rollback to 1, then 3 put back in force
        seen.announced.append({"version": version, "metrics": {}})
    console = Console(file=StringIO(), width=1000, record=True)  # not a terminal: one line per update
    with Display(console, interval=0.0) as display:
        display.update(SimpleNamespace(budget=0.05), SimpleNamespace(store=store), seen, demo)
    text = console.export_text()
    assert "| versions 3 | serving v3 |" in text, text
