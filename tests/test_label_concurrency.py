"""Five labelers pulling at once, each over its own database connection pool (as separate processes would).

Nobody may hold an item another labeler holds under a live lease, a labeler who
vanishes mid-lease loses nothing, and every item ends labeled exactly as often as
it wants. The clock is moved by hand, so lease expiry needs no sleeping.
"""

from __future__ import annotations

import threading

from activestream.labeling.service import LabelingService, MemorySink
from activestream.storage.queue import LeaseConflict
from conftest import make_settings
from label_helpers import Clock, make_requests, make_service

ITEMS = 60
ACTIVE = ("ann", "bob", "cy", "dee")
VANISHER = "eve"


class Log:
    """Leases and releases in an order consistent with the database's.

    A release is logged before the call that releases, a lease after the call that
    leased: if the queue ever handed out an item still held, the replay sees it.
    """

    def __init__(self):
        self.events: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def add(self, kind: str, item: str, who: str) -> None:
        with self.lock:
            self.events.append((kind, item, who))

    def double_holds(self) -> list[tuple[str, str, str]]:
        holder, bad = {}, []
        for kind, item, who in self.events:
            if kind == "lease":
                if holder.get(item) not in (None, who):
                    bad.append((item, holder[item], who))
                holder[item] = who
            elif holder.get(item) == who:
                del holder[item]
        return bad


def work(service: LabelingService, who: str, log: Log, start: threading.Barrier, errors: list) -> None:
    start.wait()
    try:
        n = 0
        while (item := service.next_item(who)) is not None:
            log.add("lease", item.id, who)
            service.image_png(item.id)        # what the page does while the item is held
            log.add("release", item.id, who)
            if who == ACTIVE[0] and n % 5 == 1:  # one labeler skips some: others still cover every item
                service.skip(item.id, who)
            else:
                service.record_label(item.id, sum(map(ord, item.id)) % 10, who)
            n += 1
    except LeaseConflict as e:  # a holder refused its own item: the item was handed to someone else
        errors.append((who, e))


def pull_until_drained(services, first, clock, log, errors, rounds: int = 5) -> None:
    """All active labelers pull at once; again while items wait (one skipped after the others had stopped)."""
    for _ in range(rounds):
        start = threading.Barrier(len(ACTIVE))
        threads = [threading.Thread(target=work, args=(services[w], w, log, start, errors)) for w in ACTIVE]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        if first.queue.depth(clock())["waiting"] == 0:
            return


def test_five_labelers_never_share_a_live_item_and_nothing_is_lost(tmp_path, store_url):
    clock = Clock()
    settings = make_settings(tmp_path, store_url=store_url, label_second_share=0.2)
    first = make_service(settings, clock=clock)
    first.enqueue(make_requests(first, ITEMS))
    wanted = {i.id: i.wanted for i in first.pending(ITEMS)}
    assert len(wanted) == ITEMS and 1 < sum(wanted.values()) - ITEMS < ITEMS   # some go to a second labeler
    services = {who: LabelingService.open(settings, MemorySink(), clock=clock) for who in (*ACTIVE, VANISHER)}
    log, errors = Log(), []

    held = services[VANISHER].next_item(VANISHER)           # eve takes an item and is never heard from again
    log.add("lease", held.id, VANISHER)
    pull_until_drained(services, first, clock, log, errors)

    assert not errors and not log.double_holds()
    assert first.queue.depth(clock()) == {"waiting": 0, "leased": 1, "done": ITEMS - 1}

    clock.advance(settings.label_lease_seconds + 1)         # eve's lease expires: her item comes back
    log.add("release", held.id, VANISHER)
    pull_until_drained(services, first, clock, log, errors)

    assert not errors and not log.double_holds()
    assert first.queue.depth(clock()) == {"waiting": 0, "leased": 0, "done": ITEMS}
    answers = first.queue.answers()
    labeled = [a for a in answers if a["outcome"] == "labeled"]
    assert sorted(a["item_id"] for a in labeled) == sorted(i for i, n in wanted.items() for _ in range(n))
    assert all(a["labeler"] in ACTIVE for a in labeled)
    sent = [(m.id, m.labeler) for s in services.values() for m in s.producer.sent]
    assert sorted(sent) == sorted((a["item_id"], a["labeler"]) for a in labeled)
    stored = [(lab.sample_id, lab.labeler) for i in wanted for lab in first.store.labels_for(i)]
    assert sorted(stored) == sorted(sent)
    for s in (first, *services.values()):
        s.close()
