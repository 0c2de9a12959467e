"""The simulator records the label-free estimates beside the audit and IPW ones, uncalibrated until audits arrive."""

from __future__ import annotations

import math

import pytest
import torch

from activestream.simulation.engine import SimConfig, simulate
from activestream.simulation.report import run_table

torch.set_num_threads(1)

# half the budget on audits, so that a short run gathers enough of them to calibrate
SMALL = SimConfig(dataset="digits", images=800, seed_size=100, budget=0.2, audit_share=0.5, window=200, batch=100,
                  retrain_every=40, round_gap=200, min_steps=20, max_steps=30, seed_epochs=3,
                  estimate_window=400, device="cpu")


@pytest.fixture(scope="module")
def record():
    return simulate(SMALL)


def test_every_checkpoint_holds_the_label_free_estimates_beside_the_audit(record):
    measured = [c for c in record["checkpoints"] if c["images"] > 0]
    assert measured
    for c in measured:
        for method in ("cbpe", "atc"):
            if c[method]["n"]:
                assert 0 <= c[method]["low"] <= c[method]["value"] <= c[method]["high"] <= 1
                assert c[method]["n"] == min(c["images"], SMALL.estimate_window)
        assert c["calibrated"] or c["atc"]["n"] == 0  # ATC needs audit labels


def test_it_reacts_before_labels_then_calibrates_on_audits(record):
    first, last = record["checkpoints"][1], record["checkpoints"][-1]
    assert not first["calibrated"] and first["temperature"] == 1.0 and first["cbpe"]["n"] > 0
    assert last["calibrated"] and last["atc"]["n"] == SMALL.estimate_window


def test_the_summary_scores_each_estimate_against_the_truth_on_traffic(record):
    errors = record["estimate_error"]
    assert set(errors) == {"before", "after"}
    assert errors["after"]["checkpoints"] >= 1
    for method in ("audit", "cbpe", "atc"):
        value = errors["after"][method]
        assert math.isnan(value) or 0 <= value <= 1
    assert "label-free CBPE" in run_table(record) and "mean absolute error" in run_table(record)


def test_the_run_writes_a_plot_of_the_estimates_against_the_truth(record, tmp_path):
    from activestream.simulation.report import write_run

    paths = write_run(record, tmp_path)
    assert paths["estimates"].read_bytes().startswith(b"\x89PNG")
