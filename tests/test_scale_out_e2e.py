"""Selector and ingest as two processes each in their consumer groups: the partitions are
shared, the budget holds over the whole traffic, and one of them dying loses nothing."""

from __future__ import annotations

import asyncio

import pytest

from activestream.run import run_loop
from activestream.streams.cluster import LocalCluster
from activestream.streams.worker import Resources
from tests.conftest import make_settings, run_async
from tests.test_kill_schedule_e2e import SELECTED, KillSchedule, stream_spends

pytestmark = pytest.mark.kafka

IMAGES = 4000


def test_two_selectors_and_two_ingesters_share_the_work(tmp_path, digits):
    settings = make_settings(tmp_path, dataset="digits", images=IMAGES, rate=400, seed_size=200, budget=0.1,
                             retrain_every=10_000, label_delay=0.0, selectors=2, ingesters=2, label_partitions=2)
    cluster = LocalCluster(settings, workers=("predictor", "selector", "ingest", "learner"))
    killer = KillSchedule(cluster, [(IMAGES // 2, "selector.2")])
    observer, demo = run_async(run_loop(settings, asyncio.Event(), killer, cluster, timeout=420), timeout=540)
    seen, settings = observer.seen, cluster.settings
    assert {"selector", "selector.2", "ingest", "ingest.2"} <= set(cluster.procs_)
    # Not restarts_.count: it starts again from 0 once a restarted process has run STEADY seconds.
    assert killer.killed and cluster.procs_["selector.2"] is not killer.killed_procs["selector.2"]

    store = Resources(settings).open().store
    assert store.checkpoint(f"{settings.group('selector')}/1") and store.checkpoint(f"{settings.group('selector')}/2")
    assert set(demo.produced) <= seen.predicted.keys()
    picks = store.samples_by_id(demo.produced).values()
    assert {s.id for s in picks if s.reason in SELECTED} == set(seen.requested)
    assert all(len(store.labels_for(i)) == 1 for i in seen.labels)
    # Each selector holds its own budget over windows of its share of the traffic. How the
    # share falls is up to the group's rebalances: while selector 2 is down or slow to come
    # back, selector 1 takes its partitions, so selector 2 may end under one full window;
    # its partial window must still not overspend.
    target = settings.budget * settings.budget_window
    for instance in (1, 2):
        spends, partial = stream_spends(picks, f"{settings.group('selector')}/{instance}", settings.budget_window)
        print(f"\nselector {instance} (selector.2 killed at {killer.killed}): spend per window {spends}, "
              f"{partial} in the partial window")
        assert all(abs(n - target) <= 0.1 * target for n in spends), spends
        assert partial <= 1.1 * target, f"{partial} picks in a partial window, budget {target}"
