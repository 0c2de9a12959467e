"""SampleStore on SQLite and on a real PostgreSQL: idempotency, corrections, training set."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from activestream.errors import InvalidInput, NotFound
from activestream.storage.queue import LabelQueue
from activestream.storage.store import Label, Sample, SampleStore, metadata
from conftest import pg_database

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def pg_url():
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    url, drop = pg_database()
    yield url
    drop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """An empty store with its schema, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = SampleStore(url)
    metadata.drop_all(s.engine)
    s.create_schema()
    yield s
    s.close()


def label_state(store: SampleStore, ids) -> list[Label]:
    return [lab for sid in sorted(ids) for lab in store.labels_for(sid)]


def test_init_does_no_io(tmp_path):
    s = SampleStore(f"sqlite:///{tmp_path / 'missing' / 'store.db'}")
    assert s.url.endswith("store.db") and s._engine is None
    s.close()


def test_sqlite_folder_is_created_on_first_use(tmp_path):
    s = SampleStore(f"sqlite:///{tmp_path / 'new' / 'dir' / 'store.db'}")
    s.create_schema()
    assert (tmp_path / "new" / "dir" / "store.db").is_file() and s.count_samples() == 0
    s.close()


def test_create_schema_is_idempotent(store):
    store.create_schema()
    store.create_schema()
    assert store.count_samples() == 0


def test_sample_round_trip(store):
    sample = Sample("s1", blob_key="s1.png", source="cam-3", model_version=np.int64(2), predicted=np.int64(5),
                    score=np.float32(0.5), reason="uncertain", selection_prob=0.25, meta={"w": 4.0, "tags": ["a"]},
                    created=datetime(2024, 1, 1, 14, tzinfo=timezone(timedelta(hours=2))))
    assert store.add_samples([sample]) == 1
    got = store.get_sample("s1")
    assert got == Sample("s1", "s1.png", "cam-3", 2, 5, 0.5, "uncertain", 0.25, {"w": 4.0, "tags": ["a"]},
                         datetime(2024, 1, 1, 12, tzinfo=timezone.utc))
    assert got.created.tzinfo == timezone.utc


def test_created_is_filled_in_utc(store):
    before = datetime.now(timezone.utc)
    store.add_samples([Sample("s1")])
    store.add_labels([Label("s1", 0, "ann")])
    assert before <= store.get_sample("s1").created <= datetime.now(timezone.utc)
    assert before <= store.labels_for("s1")[0].created <= datetime.now(timezone.utc)


def test_sample_redelivery_is_ignored(store):
    batch = [Sample(f"s{i}", blob_key=f"s{i}.png", score=i) for i in range(500)]
    assert store.add_samples(batch) == 500
    assert store.add_samples(batch) == 0
    assert store.add_samples([Sample("s1", score=99.0), Sample("new"), Sample("new")]) == 1
    assert store.get_sample("s1").score == 1.0
    assert store.count_samples() == 501
    assert store.add_samples([]) == 0


def test_get_sample_not_found(store):
    with pytest.raises(NotFound, match="'ghost'.*add_samples"):
        store.get_sample("ghost")


def test_label_redelivery_changes_nothing(store):
    first = Label("s1", 3, "ann", created=at(0))
    assert store.add_labels([first]) == 1
    assert store.add_labels([first]) == 0
    assert store.add_labels([Label("s1", 3, "ann")]) == 0  # same class, redelivered without a time
    assert store.labels_for("s1") == [first]


def test_label_correction_replaces_old_label(store):
    store.add_labels([Label("s1", 3, "ann", created=at(0)), Label("s1", 3, "bob", created=at(1))])
    assert store.add_labels([Label("s1", 4, "ann", created=at(5))]) == 1
    assert store.labels_for("s1") == [Label("s1", 3, "bob", created=at(1)), Label("s1", 4, "ann", created=at(5))]
    assert store.add_labels([Label("s1", 4, "ann", kind="gold", created=at(6))]) == 1
    assert store.labels_for("s1")[-1].kind == "gold"


def test_batch_with_repeated_key_equals_one_by_one(store):
    events = [Label("a", 1, "ann", created=at(0)), Label("a", 2, "ann", created=at(1)),
              Label("a", 2, "ann", created=at(2)), Label("b", 0, "ann", created=at(3)), Label("a", 1, "ann", created=at(4))]
    assert store.add_labels(events) == 4
    assert label_state(store, ["a", "b"]) == [Label("a", 1, "ann", created=at(4)), Label("b", 0, "ann", created=at(3))]


def test_invalid_labels_are_refused(store):
    for bad in (Label("s1", -1, "ann"), Label("s1", 1.5, "ann"), Label("s1", True, "ann"), Label("", 1, "ann"),
                Label("s1", 1, ""), Label("s1", 1, "ann", created=datetime(2024, 1, 1)), Label("s1", None, "ann")):
        with pytest.raises(InvalidInput):
            store.add_labels([bad])
    with pytest.raises(InvalidInput, match="timezone-aware"):
        store.add_samples([Sample("s1", created=datetime(2024, 1, 1))])
    with pytest.raises(InvalidInput) as err:
        store.add_samples([Sample("s1", score="high")])
    assert err.value.kind == "bad_sample" and isinstance(err.value.__cause__, ValueError)
    assert store.count_samples() == 0 and store.labels_for("s1") == []


def test_disagreement_majority_wins(store):
    store.add_samples([Sample("s1", blob_key="b1")])
    store.add_labels([Label("s1", 2, "ann", created=at(0)), Label("s1", 2, "bob", created=at(1)),
                      Label("s1", 7, "cid", created=at(2))])
    assert store.training_set() == [("s1", "b1", 2)]


def test_disagreement_tie_goes_to_most_recent_label(store):
    store.add_samples([Sample("s1", blob_key="b1"), Sample("s2", blob_key="b2")])
    store.add_labels([Label("s1", 2, "ann", created=at(0)), Label("s1", 7, "bob", created=at(1)),
                      Label("s2", 7, "ann", created=at(3)), Label("s2", 2, "bob", created=at(2))])
    assert store.training_set() == [("s1", "b1", 7), ("s2", "b2", 7)]
    store.add_labels([Label("s1", 2, "bob", created=at(4))])  # bob corrects himself: now 2 votes for 2
    assert store.training_set()[0] == ("s1", "b1", 2)


def test_training_set_filters_and_order(store):
    store.add_samples([Sample("c", blob_key="c.png"), Sample("a", blob_key="a.png"), Sample("b", blob_key="b.png"),
                       Sample("noblob"), Sample("unlabeled", blob_key="u.png"), Sample("g", blob_key="g.png")])
    store.add_labels([Label("c", 1, "ann", created=at(0)), Label("b", 2, "ann", created=at(5)),
                      Label("a", 3, "ann", created=at(5)), Label("a", 4, "bob", kind="seed", created=at(9)),
                      Label("noblob", 1, "ann", created=at(1)), Label("orphan", 1, "ann", created=at(1)),
                      Label("g", 5, "oracle", kind="gold", created=at(2))])
    assert store.training_set() == [("c", "c.png", 1), ("g", "g.png", 5), ("a", "a.png", 4), ("b", "b.png", 2)]
    assert store.training_set(kinds=["gold"]) == [("g", "g.png", 5)]
    assert store.training_set(kinds=["human"]) == [("c", "c.png", 1), ("a", "a.png", 3), ("b", "b.png", 2)]
    assert store.training_set(kinds=[]) == []


def test_counts(store):
    store.add_samples([Sample(f"s{i}", blob_key=f"s{i}") for i in range(4)] + [Sample("noblob")])
    store.add_labels([Label("s0", 1, "ann"), Label("s0", 1, "bob"), Label("s1", 1, "ann", kind="gold"),
                      Label("s2", 1, "ann", kind="seed"), Label("noblob", 1, "ann"), Label("never-stored", 1, "ann")])
    assert store.count_samples() == 5
    assert store.count_labeled() == 3 == len(store.training_set())  # what can be trained on, nothing else
    assert store.count_labeled(["human"]) == 1
    assert store.count_labeled(["gold", "seed"]) == 2


def test_pseudo_labels_are_kept_apart(store):
    store.add_samples([Sample("s1", blob_key="b1"), Sample("s2", blob_key="b2")])
    store.add_labels([Label("s1", 1, "ann")])
    rows = [("s1", 3, 9, 0.99), ("s2", 3, np.int64(4), np.float32(0.97)), ("s2", 4, 4, 0.98)]
    assert store.add_pseudo_labels(rows) == 3
    assert store.add_pseudo_labels(rows + [("s2", 3, 4, 0.97)]) == 0
    assert store.training_set() == [("s1", "b1", 1)]
    assert store.count_labeled() == 1
    assert store.labels_for("s2") == []
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pseudo_labels")).scalar_one() == 3
    with pytest.raises(InvalidInput):
        store.add_pseudo_labels([("s1", 3, 9)])


EVENTS = st.lists(
    st.builds(Label, sample_id=st.sampled_from(["a", "b", "c"]), label=st.integers(0, 3),
              labeler=st.sampled_from(["ann", "bob", "cid"]), kind=st.sampled_from(["human", "gold", "seed"]),
              created=st.integers(0, 50).map(at)),
    max_size=25,
)
SPLITS = st.lists(st.integers(1, 5), min_size=1, max_size=10)


def replay(store: SampleStore, ns: str, events: list[Label], splits: list[int]) -> None:
    """Add namespaced events in batches of the given sizes (cycled)."""
    events = [Label(ns + e.sample_id, e.label, e.labeler, e.kind, e.created) for e in events]
    i = k = 0
    while i < len(events):
        store.add_labels(events[i:i + splits[k % len(splits)]])
        i, k = i + splits[k % len(splits)], k + 1


def snapshot(store: SampleStore, ns: str):
    ids = [ns + s for s in "abc"]
    return label_state(store, ids), [row for row in store.training_set() if row[0].startswith(ns)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, splits=SPLITS)
def test_replaying_label_events_twice_leaves_same_state(store, events, splits):
    ns = uuid.uuid4().hex[:8] + "-"
    store.add_samples([Sample(ns + s, blob_key=s + ".png") for s in "abc"])
    replay(store, ns, events, splits)
    once = snapshot(store, ns)
    replay(store, ns, events, splits[::-1])
    assert snapshot(store, ns) == once


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, splits=SPLITS)
def test_batching_does_not_change_label_state(store, events, splits):
    one, many = uuid.uuid4().hex[:8] + "-", uuid.uuid4().hex[:8] + "-"
    replay(store, one, events, [1])
    replay(store, many, events, splits)
    strip = lambda labels: [(x.sample_id[9:], x.labeler, x.label, x.kind, x.created) for x in labels]  # noqa: E731
    assert strip(snapshot(store, one)[0]) == strip(snapshot(store, many)[0])


def _write_concurrently(url: str, worker: int, barrier) -> None:
    store = SampleStore(url)
    store.create_schema()
    barrier.wait()
    for i in range(150):
        store.add_samples([Sample(f"w{worker}-{i}", blob_key="k"), Sample(f"shared-{i}")])
        store.add_labels([Label(f"shared-{i}", worker, f"labeler{worker}"), Label(f"w{worker}-{i}", 1, "ann")])
        store.add_pseudo_labels([(f"shared-{i}", 1, 0, 0.5)])
    store.close()


def test_two_processes_write_same_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_write_concurrently, args=(url, w, barrier)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0], "a writer failed (database is locked?)"
    store = SampleStore(url)
    assert store.count_samples() == 450
    assert store.count_labeled() == 300  # the shared samples have no image
    assert len(store.labels_for("shared-7")) == 2
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    store.close()


def test_in_memory_sqlite_keeps_data_across_calls():
    store = SampleStore("sqlite://")
    store.create_schema()
    store.add_samples([Sample("s1", blob_key="b")])
    store.add_labels([Label("s1", 1, "ann")])
    assert store.training_set() == [("s1", "b", 1)]
    store.close()


def test_storage_imports_no_edge_or_torch_modules():
    code = ("import sys, activestream.storage, activestream.storage.s3, activestream.storage.fetch, "
            "activestream.storage.fetch_http, activestream.storage.listing; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'faust', 'kafka', 'aiokafka', 'prometheus_client', 'torch'} or m.startswith('activestream.streams')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_outcomes_pair_stream_predictions_with_resolved_human_labels(store):
    store.add_samples([
        Sample("a", model_version=2, predicted=1, reason="audit", selection_prob=0.01),
        Sample("b", model_version=2, predicted=0, reason="uncertain", selection_prob=0.5),
        Sample("seed-1"),  # a seed image: no prediction, no selection
        Sample("c", model_version=3, predicted=4, reason="uncertain", selection_prob=0.2),
    ])
    store.add_labels([
        Label("a", 1, "ann", created=at(0)), Label("b", 2, "ann", created=at(1)),
        Label("b", 2, "bob", created=at(2)), Label("b", 0, "cid", created=at(3)),
        Label("seed-1", 5, "seed", kind="seed", created=at(0)),
        Label("c", 4, "gold-set", kind="gold", created=at(0)),  # not a human answer to a request
    ])
    rows = store.outcomes()
    assert [(o.sample_id, o.model_version, o.predicted, o.reason, o.label) for o in rows] == [
        ("a", 2, 1, "audit", 1), ("b", 2, 0, "uncertain", 2)]
    assert [o.selection_prob for o in rows] == [0.01, 0.5]


def counting_reads(store: SampleStore) -> list[int]:
    """Rows each later read of ``store`` returns, appended as it reads."""
    counts, read = [], store._read

    def counted(query):
        rows = read(query)
        counts.append(len(rows))
        return rows

    store._read = counted
    return counts


def test_recent_outcomes_are_the_newest_labelled_samples_each_once_in_a_bounded_read(store):
    samples = [Sample(f"s{i:03d}", model_version=1, predicted=i % 3, reason="audit" if i % 2 else "uncertain",
                      selection_prob=0.1) for i in range(400)]
    store.add_samples(samples)
    store.add_labels(Label(s.id, s.predicted, "ann", created=at(i)) for i, s in enumerate(samples))
    store.add_labels([Label("s001", 2, "bob", created=at(500)), Label("s001", 2, "cid", created=at(501)),
                      Label("s003", 0, "gold-set", kind="gold", created=at(502))])  # not a human answer
    reads = counting_reads(store)
    newest = store.recent_outcomes(5, ("audit",))
    # the 5 newest human labels are about 4 samples; s001's three labelers make it class 2
    assert [o.sample_id for o in newest] == ["s001", "s399", "s397", "s395"]
    assert (newest[0].label, newest[0].labelled, newest[1].labelled) == (2, at(501), at(399))
    assert len(reads) == 2 and reads[0] == 5 and reads[1] <= 5 * 3  # however many the store holds
    assert [o.sample_id for o in store.recent_outcomes(100, ("audit",), since=at(396))] == ["s001", "s399", "s397"]
    assert {o.reason for o in store.recent_outcomes(10)} == {"audit", "uncertain"}
    assert store.recent_outcomes(10, ("audit",), since=at(600)) == []


def test_create_schema_gives_an_older_store_the_label_time_index(store):
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_labels_created"))
    store.create_schema()
    assert "ix_labels_created" in {ix["name"] for ix in inspect(store.engine).get_indexes("labels")}


def _open_new_store(url: str, barrier) -> None:
    store = SampleStore(url)
    barrier.wait()
    store.create_schema()
    LabelQueue(store).create_schema()
    store.add_samples([Sample("x")])
    store.close()


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """Workers started together create the same new store: WAL switch and tables race."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(12):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_new_store, args=(url, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 4
        assert SampleStore(url).count_samples() == 1


def test_labelers_of_names_each_stored_label_of_the_asked_samples(store):
    store.add_labels([Label("a", 1, "ann"), Label("a", 2, "oracle"), Label("b", 1, "ann"), Label("c", 0, "bob")])
    assert store.labelers_of(["a", "b", "missing"], chunk=2) == {("a", "ann"), ("a", "oracle"), ("b", "ann")}
    assert store.labelers_of([]) == set()
