"""The labeling queue: order, leases, answers, undo, gold; a stateful property test of the lease machine."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import select

from activestream.errors import NotFound
from activestream.labeling import quality
from activestream.storage.queue import LABELERS, LabelQueue, LeaseConflict, QueueItem
from activestream.storage.store import SampleStore

LEASE = 60.0


def item(i, priority=0.5, lane="normal", wanted=1, gold=None, created=None):
    return QueueItem(f"i{i}", f"blob:i{i}", "audit" if lane == "audit" else "uncertain", priority, 0.1, "clf", 1,
                     [(i % 3, 0.5), ((i + 1) % 3, 0.3)], priority, lane=lane, wanted=wanted, gold=gold)


def make_queue(tmp_path, **kw) -> LabelQueue:
    q = LabelQueue(SampleStore(f"sqlite:///{tmp_path / 'q.db'}"), lease_seconds=LEASE, **kw)
    q.create_schema()
    return q


def test_add_is_idempotent_and_hands_out_by_priority(tmp_path):
    q = make_queue(tmp_path)
    assert q.add([item(1, 0.2), item(2, 0.9), item(3, 0.5)], now=0) == 3
    assert q.add([item(2, 0.9), item(4, 0.1)], now=1) == 1
    got = [q.lease(f"l{n}", now=2).id for n in range(4)]
    assert got == ["i2", "i3", "i1", "i4"]
    assert q.lease("l9", now=2) is None
    assert [i.id for i in q.pending(10, now=2)] == ["i2", "i3", "i1", "i4"]


def test_a_live_lease_is_never_shared_and_an_expired_one_returns(tmp_path):
    q = make_queue(tmp_path)
    q.add([item(1)], now=0)
    assert q.lease("ann", now=0).id == "i1"
    assert q.lease("ann", now=30).id == "i1"            # asking again renews the same item
    assert q.lease("bob", now=80) is None               # renewed at 30: live until 90
    with pytest.raises(LeaseConflict):
        q.answer("i1", "bob", 2, now=80)
    assert q.lease("bob", now=91).id == "i1"            # ann vanished: the item comes back
    with pytest.raises(LeaseConflict):
        q.answer("i1", "ann", 2, now=92)                # and ann's late answer is refused while bob holds it
    assert q.answer("i1", "bob", 2, now=93).changed
    assert q.depth(now=93) == {"waiting": 0, "leased": 0, "done": 1}


def test_labeled_once_unless_sent_to_a_second_labeler(tmp_path):
    q = make_queue(tmp_path)
    q.add([item(1), item(2, wanted=2)], now=0)
    q.answer("i1", "ann", 1, now=1)
    with pytest.raises(LeaseConflict):
        q.answer("i1", "bob", 1, now=2)
    q.answer("i2", "ann", 0, now=3)
    assert q.lease("ann", now=4) is None                # ann never gets her own item twice
    assert q.lease("bob", now=4).id == "i2"
    q.answer("i2", "bob", 0, now=5)
    assert q.lease("cy", now=6) is None and q.depth(now=6)["done"] == 2


def test_repeating_an_answer_changes_nothing_and_a_new_class_corrects(tmp_path):
    q = make_queue(tmp_path)
    q.add([item(1)], now=0)
    assert q.answer("i1", "ann", 1, now=1).changed
    assert not q.answer("i1", "ann", 1, now=2).changed
    assert q.answer("i1", "ann", 2, now=3).changed
    rows = q.answers("ann")
    assert [(r["item_id"], r["label"]) for r in rows] == [("i1", 2)]


def test_skip_returns_the_item_to_others_only(tmp_path):
    q = make_queue(tmp_path)
    q.add([item(1)], now=0)
    with pytest.raises(LeaseConflict):
        q.skip("i1", "ann", now=0)                      # not leased to her
    q.lease("ann", now=0)
    q.skip("i1", "ann", now=1, unsure=True)
    assert q.lease("ann", now=2) is None
    assert q.lease("bob", now=2).id == "i1"
    assert [r["outcome"] for r in q.answers("ann")] == ["unsure"]


def test_undo_reopens_the_last_answer_for_a_correction(tmp_path):
    q = make_queue(tmp_path)
    q.add([item(1, 0.9), item(2, 0.5)], now=0)
    with pytest.raises(NotFound):
        q.undo("ann", now=0)
    q.lease("ann", now=0)
    q.answer("i1", "ann", 1, now=1)
    assert q.lease("ann", now=2).id == "i2"
    assert q.undo("ann", now=3).id == "i1"              # i2 goes back to the queue
    assert q.current("ann", now=3).id == "i1"
    assert q.lease("bob", now=3).id == "i2"
    with pytest.raises(LeaseConflict):
        q.skip("i1", "ann", now=4)                      # a labeled item is corrected, not skipped
    assert q.answer("i1", "ann", 0, now=5).changed
    assert q.depth(now=5) == {"waiting": 0, "leased": 1, "done": 1}
    assert q.lease("ann", now=200).id == "i2"           # bob's lease expired; i1 stays done
    assert q.lease("cy", now=200) is None


def test_undo_of_a_skip_is_refused_once_someone_else_labeled_it(tmp_path):
    q = make_queue(tmp_path)
    q.add([item(1)], now=0)
    q.lease("ann", now=0)
    q.skip("i1", "ann", now=1)
    q.lease("bob", now=2)
    with pytest.raises(LeaseConflict):
        q.undo("ann", now=3)                            # bob holds it
    q.answer("i1", "bob", 1, now=4)
    with pytest.raises(LeaseConflict):
        q.undo("ann", now=5)                            # and now it is labeled


def test_audit_items_are_interleaved_not_starved(tmp_path):
    q = make_queue(tmp_path, audit_every=3)
    q.add([item(i, priority=0.9) for i in range(10)] + [item(100 + i, 0.0, lane="audit") for i in range(3)], now=0)
    lanes = []
    for t in range(9):
        got = q.lease("ann", now=t)
        lanes.append(got.lane)
        q.answer(got.id, "ann", 0, now=t + 0.5)
    assert lanes == ["normal", "normal", "audit"] * 3


def test_gold_items_are_answered_once_per_labeler_and_never_done(tmp_path):
    q = make_queue(tmp_path, gold_share=1.0, seed=0)
    q.add([item(1, gold=2, lane="gold"), item(2)], now=0)
    for who in ("ann", "bob"):
        got = q.lease(who, now=1)
        assert got.id == "i1"
        assert q.answer("i1", who, 2, now=2).gold
    assert q.lease("ann", now=3).id == "i2"             # gold exhausted for ann: the normal lane
    assert q.depth(now=3)["done"] == 0                  # gold items never count as queue work


def test_a_gold_answer_cannot_be_corrected_after_undo(tmp_path):
    q = make_queue(tmp_path, gold_share=1.0, seed=0)
    q.add([item(1, gold=2, lane="gold")], now=0)
    assert q.lease("ann", now=1).id == "i1"
    q.answer("i1", "ann", 0, now=2)                     # wrong
    assert q.undo("ann", now=3).id == "i1"              # the page cannot tell gold from work, so undo works
    assert not q.answer("i1", "ann", 2, now=4).changed  # but the first answer is what measures ann
    assert [(a["labeler"], a["label"]) for a in q.answers()] == [("ann", 0)]


def test_two_processes_answering_at_once_give_one_label(tmp_path, monkeypatch):
    """SQLite reads outside the write lock: the answer's UPDATE must re-check, not trust its read."""
    ann_q, bob_q = make_queue(tmp_path), make_queue(tmp_path)
    ann_q.add([item(1)], now=0)
    check = LabelQueue._check_free

    def bob_answers_in_between(item_row, labeler, now):
        check(item_row, labeler, now)
        if labeler == "ann":
            bob_q.answer("i1", "bob", 1, now=now)       # another process, between ann's read and write

    monkeypatch.setattr(LabelQueue, "_check_free", staticmethod(bob_answers_in_between))
    with pytest.raises(LeaseConflict):
        ann_q.answer("i1", "ann", 2, now=1)
    assert [(a["labeler"], a["label"]) for a in ann_q.answers()] == [("bob", 1)]
    assert ann_q.depth(now=2) == {"waiting": 0, "leased": 0, "done": 1}


def test_tokens_are_stored_hashed(tmp_path):
    q = make_queue(tmp_path)
    q.set_token("ann", "s3cret-token", now=0)
    assert q.labeler_for("s3cret-token") == "ann" and q.labeler_for("wrong") is None
    with q.engine.connect() as conn:
        stored = conn.execute(select(LABELERS.c.token_sha256)).scalar()
    assert "s3cret" not in stored and len(stored) == 64
    q.set_token("ann", "rotated", now=1)
    assert q.labeler_for("s3cret-token") is None and q.labeler_for("rotated") == "ann"


@pytest.mark.parametrize("pairs", [[(0, 0), (1, 1), (2, 1), (0, 2), (1, 1), (2, 2)], [(0, 1), (1, 0), (1, 1), (0, 0)]])
def test_kappa_matches_scikit_learn(pairs):
    a, b = zip(*pairs)
    assert quality.cohen_kappa(pairs) == pytest.approx(cohen_kappa_score(a, b))


def test_quality_from_answers(tmp_path):
    q = make_queue(tmp_path)
    # gold answer 2 on i1 (guess 1: wrong); gold answer 0 on i3 (guess 0: right)
    q.add([item(1, gold=2, lane="gold"), item(3, gold=0, lane="gold"), item(5, wanted=2), item(6, wanted=2)], now=0)
    q.answer("i1", "ann", 1, now=1)     # rubber stamp of the wrong guess
    q.answer("i3", "ann", 0, now=2)
    q.answer("i1", "bob", 2, now=3)
    q.answer("i5", "ann", 1, now=4)
    q.answer("i5", "bob", 1, now=5)
    q.answer("i6", "ann", 2, now=6)
    q.answer("i6", "bob", 0, now=7)
    report = quality.quality_report(q.answers(), now=8)
    ann, bob = report["labelers"]["ann"], report["labelers"]["bob"]
    assert (ann["gold_accuracy"], ann["rubber_stamp_rate"], ann["guess_wrong"]) == (0.5, 1.0, 1)
    assert (bob["gold_accuracy"], bob["rubber_stamp_rate"]) == (1.0, 0.0)
    assert report["agreement"]["items"] == 2
    assert report["agreement"]["kappa"] == pytest.approx(cohen_kappa_score([1, 2], [1, 0]))


LABELER_NAMES = ("ann", "bob", "cy")


class LeaseMachine(RuleBasedStateMachine):
    """The queue against a plain-Python model of who may hold and label what."""

    items = Bundle("items")

    def __init__(self):
        super().__init__()
        self.q = LabelQueue(SampleStore("sqlite://"), lease_seconds=LEASE)
        self.q.create_schema()
        self.now = 0.0
        self.n = 0
        self.wanted: dict[str, int] = {}
        self.holder: dict[str, tuple[str, float]] = {}         # item -> (labeler, until)
        self.answers: dict[tuple[str, str], str] = {}          # (item, labeler) -> outcome
        self.labels: dict[tuple[str, str], int] = {}           # (item, labeler) -> label
        self.order: list[tuple[str, str]] = []                 # answers, oldest first

    def teardown(self):
        self.q.store.close()

    def labeled(self, item_id):
        return sum(1 for (i, _), o in self.answers.items() if i == item_id and o == "labeled")

    def live_holder(self, item_id):
        h = self.holder.get(item_id)
        return h[0] if h and h[1] > self.now else None

    def held_by(self, who):
        return [i for i in self.wanted if self.live_holder(i) == who]

    def available_to(self, who):
        return {i for i in self.wanted if self.labeled(i) < self.wanted[i] and self.live_holder(i) is None
                and (i, who) not in self.answers}

    @rule(target=items, wanted=st.sampled_from([1, 1, 2]), priority=st.floats(0, 1))
    def add(self, wanted, priority):
        self.n += 1
        new = item(self.n, priority=priority, wanted=wanted)
        assert self.q.add([new], now=self.now) == 1
        self.wanted[new.id] = wanted
        return new.id

    @rule(seconds=st.sampled_from([1.0, 30.0, LEASE + 1]))
    def advance(self, seconds):
        self.now += seconds

    @rule(who=st.sampled_from(LABELER_NAMES))
    def lease(self, who):
        held = self.held_by(who)
        possible = self.available_to(who)
        got = self.q.lease(who, now=self.now)
        if held:
            assert got is not None and got.id in held
        elif not possible:
            assert got is None
        else:
            assert got is not None and got.id in possible, "an available item was not handed out"
        if got is not None:
            self.holder[got.id] = (who, self.now + LEASE)

    @rule(who=st.sampled_from(LABELER_NAMES), item_id=items, label=st.integers(0, 2))
    def answer(self, who, item_id, label):
        other = self.live_holder(item_id) not in (None, who)
        mine = self.answers.get((item_id, who)) == "labeled"
        full = self.labeled(item_id) >= self.wanted[item_id]
        try:
            self.q.answer(item_id, who, label, now=self.now)
        except LeaseConflict:
            assert not mine and (other or full)
            return
        assert mine or not (other or full), "an answer was accepted on someone else's lease or a full item"
        if not mine:
            self.order.append((item_id, who))
        elif self.labels[(item_id, who)] != label:  # a repeat changes nothing, not even which answer is last
            self.order.remove((item_id, who))
            self.order.append((item_id, who))
        self.answers[(item_id, who)] = "labeled"
        self.labels[(item_id, who)] = label
        if self.live_holder(item_id) == who:
            del self.holder[item_id]

    @rule(who=st.sampled_from(LABELER_NAMES), unsure=st.booleans())
    def skip(self, who, unsure):
        held = self.held_by(who)
        if not held:
            return
        item_id = held[0]
        if self.answers.get((item_id, who)) == "labeled":
            with pytest.raises(LeaseConflict):
                self.q.skip(item_id, who, now=self.now, unsure=unsure)
            return
        self.q.skip(item_id, who, now=self.now, unsure=unsure)
        self.answers[(item_id, who)] = "unsure" if unsure else "skipped"
        self.order.append((item_id, who))
        del self.holder[item_id]

    @rule(who=st.sampled_from(LABELER_NAMES))
    def undo(self, who):
        mine = [k for k in self.order if k[1] == who]
        if not mine:
            with pytest.raises(NotFound):
                self.q.undo(who, now=self.now)
            return
        item_id = mine[-1][0]
        outcome = self.answers[(item_id, who)]
        blocked = self.live_holder(item_id) not in (None, who) or (
            outcome != "labeled" and self.labeled(item_id) >= self.wanted[item_id])
        if blocked:
            with pytest.raises(LeaseConflict):
                self.q.undo(who, now=self.now)
            return
        assert self.q.undo(who, now=self.now).id == item_id
        if outcome != "labeled":
            del self.answers[(item_id, who)]
            self.order.remove((item_id, who))
        for held in self.held_by(who):
            del self.holder[held]
        self.holder[item_id] = (who, self.now + LEASE)

    @invariant()
    def nothing_lost_or_duplicated(self):
        depth = self.q.depth(now=self.now)
        done = sum(1 for i in self.wanted if self.labeled(i) >= self.wanted[i])
        assert depth["done"] == done
        assert depth["waiting"] + depth["leased"] + depth["done"] == len(self.wanted)
        for i in self.wanted:
            assert self.labeled(i) <= self.wanted[i]

    @invariant()
    def leases_agree(self):
        for who in LABELER_NAMES:
            current = self.q.current(who, now=self.now)
            held = self.held_by(who)
            assert (current.id if current else None) == (held[0] if held else None)
            assert len(held) <= 1


LeaseMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_lease_state_machine = LeaseMachine.TestCase
