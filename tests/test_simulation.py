"""The simulator: deterministic, budget-keeping, truth only through labelers, outputs written."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from activestream.errors import ConfigError
from activestream.simulation.cli import arm_config, arms_of
from activestream.simulation.engine import SimConfig, labels_to_reach, simulate
from activestream.simulation.policy import BudgetPolicy, LabelEverything, SelectionPolicy, make_policy
from activestream.simulation.report import auc, compare_summary, compare_table, write_run
from activestream.simulation.scenarios import build_scenario

torch.set_num_threads(1)

TINY = SimConfig(dataset="digits", images=600, seed_size=100, budget=0.1, window=200, batch=100,
                 retrain_every=20, round_gap=200, min_steps=20, max_steps=30, seed_epochs=3,
                 estimate_window=400, device="cpu")


@pytest.fixture(scope="module")
def margin_run():
    return simulate(TINY)


def test_same_seed_same_record(margin_run):
    again = simulate(TINY)
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(margin_run, sort_keys=True, default=str)


def test_other_seed_other_record(margin_run):
    other = simulate(dataclasses.replace(TINY, seed=1))
    assert other["checkpoints"] != margin_run["checkpoints"]


def test_spend_within_ten_percent_in_every_window(margin_run):
    target = TINY.budget * TINY.window
    assert len(margin_run["window_requests"]) == TINY.images // TINY.window
    for spent in margin_run["window_requests"]:
        assert abs(spent - target) <= 0.1 * target
    assert margin_run["labels"] == margin_run["requests"]  # the oracle answers every request


@pytest.mark.parametrize("scenario", ["rotate", "class-incremental", "contrast"])
def test_spend_kept_under_drift_from_a_cold_start(scenario):
    record = simulate(dataclasses.replace(TINY, scenario=scenario, images=400, max_steps=10, min_steps=10))
    target = TINY.budget * TINY.window
    assert all(abs(s - target) <= 0.1 * target for s in record["window_requests"])
    assert len(record["checkpoints"]) >= 2


def test_learning_curve_and_estimates_recorded(margin_run):
    cps = margin_run["checkpoints"]
    assert cps[0]["labels"] == 0 and cps[-1]["images"] == TINY.images
    assert [c["labels"] for c in cps] == sorted(c["labels"] for c in cps)
    last = cps[-1]
    assert 0 <= last["audit"]["low"] <= last["audit"]["high"] <= 1
    assert last["naive"]["n"] == last["ipw"]["n"] >= last["audit"]["n"]
    assert 0 <= margin_run["audit_coverage"] <= 1


def test_outputs_written(margin_run, tmp_path):
    paths = write_run(margin_run, tmp_path)
    assert json.loads(paths["json"].read_text())["labels"] == margin_run["labels"]
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    assert "| images | labels |" in paths["md"].read_text()


def test_self_labels_stay_pseudo_and_never_read_the_truth():
    scenario = build_scenario("iid", dataset="digits", images=400, seed_size=100)
    config = dataclasses.replace(TINY, images=400, strategy="all", labeler="self", retrain_every=100, round_gap=200)
    honest = simulate(config, scenario=scenario)
    garbage = dataclasses.replace(scenario, y=np.random.default_rng(5).integers(0, 10, len(scenario.y)))
    blind = simulate(config, scenario=garbage)
    assert honest["labels"] == 0 and honest["pseudo_labels"] == 400
    assert honest["pseudo_versions"] and all(v >= 1 for v in honest["pseudo_versions"])
    assert [c["test_accuracy"] for c in blind["checkpoints"]] == [c["test_accuracy"] for c in honest["checkpoints"]]
    assert blind["pseudo_precision"] != honest["pseudo_precision"]


def test_label_delay_holds_labels_back():
    config = dataclasses.replace(TINY, images=400, label_delay=300)
    record = simulate(config)
    assert record["requests"] > record["labels"]  # the last 300 images' labels are still on their way


def test_foreign_policy_plugs_into_the_seam():
    class EveryThird:
        name, needs_samples, needs_embeddings = "every-third", False, True

        def __init__(self):
            self.seen, self.dims = 0, set()

        def select(self, probs, embeddings, keys):
            from activestream.simulation.policy import Selection

            picks = (np.arange(self.seen, self.seen + len(keys)) % 3) == 0
            return Selection(picks, np.where(picks, 1.0, 0.0), tuple("third" if p else "" for p in picks))

        def commit(self, probs, embeddings, keys, selection):
            self.seen += len(keys)
            self.dims.add(embeddings.shape[1])

    policy = EveryThird()
    assert isinstance(policy, SelectionPolicy)
    record = simulate(dataclasses.replace(TINY, images=300, retrain_every=1000), policy=policy)
    assert record["requests"] == 100 and record["policy"] == "every-third"
    assert policy.dims == {128}


def test_make_policy_names():
    assert isinstance(make_policy("all", budget=0.1), LabelEverything)
    assert isinstance(make_policy("random", budget=0.1, window=100), BudgetPolicy)
    assert arms_of("margin") == ["random", "all", "margin"]
    c = arm_config(TINY, "all@confident:0.9", seed=2)
    assert (c.strategy, c.labeler, c.seed) == ("all", "confident:0.9", 2)


def test_policy_options_shape_the_budget_like_the_streaming_settings():
    policy = make_policy("margin/quota:0.2/cap:30/diverse:0.05", budget=0.1, window=200)
    assert (policy.budget.quotas, policy.budget.cap, policy.diversity.radius) == (0.2, 30, 0.05)
    assert policy.needs_embeddings and not make_policy("margin", budget=0.1, window=200).needs_embeddings
    for bad in ("margin/colour:red", "margin/quota:much", "all/quota:0.2"):
        with pytest.raises(ConfigError):
            make_policy(bad, budget=0.1, window=200)


def test_diverse_policy_passes_over_near_duplicates_of_its_picks_until_the_model_changes():
    probs = np.tile([[0.5, 0.5]], (100, 1))  # every item equally uncertain
    same = np.tile([[1.0, 0.0, 0.0]], (100, 1))  # and every image the same scene
    keys = [f"k{i}" for i in range(100)]
    picks = {}
    for name in ("margin", "margin/diverse:0.05"):
        policy = make_policy(name, budget=0.1, window=200, audit_share=0.0)
        selection = policy.select(probs, same, keys)
        policy.commit(probs, same, keys, selection)
        picks[name] = int(selection.selected.sum())
    assert picks["margin"] > 1
    assert picks["margin/diverse:0.05"] < picks["margin"]  # duplicates only when the band needs them
    assert policy.diversity.query(same[:1], np.ones(1)).tolist() == [False]
    policy.model_changed()  # a new version embeds differently: its memory starts empty
    assert policy.diversity.query(same[:1], np.ones(1)).tolist() == [True]


def test_quota_policy_holds_a_crowded_class_to_its_share():
    rng = np.random.default_rng(1)
    crowded = {}
    for name in ("margin", "margin/quota:0.5"):
        policy = make_policy(name, budget=0.25, window=40, audit_share=0.0)
        crowded[name] = []
        for batch in range(10):  # 30 of every 40 items are predicted class 0, all a little uncertain
            top = rng.uniform(0.5, 0.6, 40)
            cls = np.r_[np.zeros(30, int), np.ones(10, int)]
            probs = np.where(cls[:, None] == 0, np.c_[top, 1 - top], np.c_[1 - top, top])
            keys = [f"{batch}-{i}" for i in range(40)]
            selection = policy.select(probs, None, keys)
            policy.commit(probs, None, keys, selection)
            crowded[name].append(int(selection.selected[cls == 0].sum()))
    assert max(crowded["margin/quota:0.5"][2:]) <= 5  # half of the window's 10
    assert max(crowded["margin"][2:]) > 5


def test_labels_to_reach_and_auc():
    curve = [(0, 0.5), (100, 0.7), (200, 0.9)]
    assert labels_to_reach(curve, 0.7) == 100
    assert math.isclose(labels_to_reach(curve, 0.8), 150)
    assert math.isnan(labels_to_reach(curve, 0.95))
    assert math.isclose(auc([(0, 0.5), (100, 0.5)], 100), 0.5)
    assert auc(curve, 200) > auc(curve, 100)


def test_compare_summary_pairs_seeds_against_random():
    def record(policy, seed, points):
        return {"policy": policy, "config": {"seed": seed}, "checkpoints": [
            {"labels": l, "test_accuracy": a} for l, a in points], "final_accuracy": points[-1][1],
            "labels": points[-1][0], "pseudo_labels": 0, "pseudo_precision": math.nan,
            "window_worst": 0.05, "audit_coverage": 1.0}

    records = {"random": [record("random", 0, [(0, 0.5), (100, 0.6), (200, 0.7)])],
               "margin": [record("margin", 0, [(0, 0.5), (100, 0.7), (200, 0.75)])]}
    summary = compare_summary(records)
    assert summary["random"]["ratio_to_baseline"]["mean"] == 1.0
    assert summary["margin"]["labels_to_target"]["mean"] == 100
    assert summary["margin"]["ratio_to_baseline"]["mean"] == 0.5
    assert "margin" in compare_table(summary)


@pytest.mark.parametrize("arch", ["lenet", "small_cnn"])
def test_embeddings_and_mc_dropout_samples(arch):
    from activestream.learners.classifier import Classifier
    from activestream.learners.models import ModelSpec

    clf = Classifier.fresh(ModelSpec(arch, tuple("abc"), 1, 28, 28))
    x = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    assert clf.embed(x).shape[0] == 5 and clf.embed(x).ndim == 2
    samples = clf.sample_proba(x, samples=4)
    assert samples.shape == (5, 3, 4) and np.allclose(samples.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(samples[..., 0], samples[..., 1])        # dropout is on
    assert np.array_equal(clf.sample_proba(x, samples=4), samples)  # and seeded
    assert np.allclose(clf.predict_proba(x), clf.predict_proba(x))   # eval mode restored


@pytest.mark.parametrize("jobs", [1, 2])
def test_compare_command_writes_its_table_plot_and_runs(tmp_path, jobs, capsys):
    from activestream.cli import parser

    out = tmp_path / "cmp"
    args = parser().parse_args([
        "compare", "--dataset", "digits", "--images", "400", "--seed-size", "100", "--budget", "0.1",
        "--window", "200", "--batch", "100", "--retrain-every", "20", "--round-gap", "200", "--min-steps", "10",
        "--max-steps", "10", "--estimate-window", "400", "--device", "cpu", "--arms", "margin", "--seeds", "1",
        "--jobs", str(jobs), "--threads", "1", "--no-progress", "--out", str(out)])
    assert args.handler(args) == 0
    summary = json.loads((out / "compare.json").read_text())["summary"]
    assert set(summary) == {"random", "all", "margin"}
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["all-seed0.json", "margin-seed0.json",
                                                                 "random-seed0.json"]
    assert (out / "compare.png").stat().st_size > 0 and "margin" in (out / "compare.md").read_text()


def test_class_incremental_streams_every_image_once_and_classes_arrive_in_order():
    sc = build_scenario("class-incremental", dataset="digits", images=700, seed_size=50, stages=5)
    assert len({x.tobytes() for x in sc.x}) == 700                  # no image streamed twice
    assert sc.y[sc.phase == 0].max() < 5 and set(sc.y[sc.phase == 4]) == set(range(10))


def test_a_stream_longer_than_its_dataset_is_refused():
    from activestream.errors import ConfigError

    with pytest.raises(ConfigError, match="fewer --images"):
        build_scenario("iid", dataset="digits", images=5000)


def test_class_incremental_stages_stream_their_classes_evenly():
    sc = build_scenario("class-incremental", dataset="digits", images=700, seed_size=50, stages=5)
    for k in range(5):
        counts = np.bincount(sc.y[sc.phase == k])
        assert counts[counts > 0].max() - counts[counts > 0].min() <= 1, (k, counts)
