"""The labeling queue: requests waiting for people, handed out under leases.

Tables (SQLAlchemy Core, SQLite or PostgreSQL, beside the store's):

* ``label_items``: one row per request (or gold item). A lease is ``(holder,
  until)``, live while ``until > now``. An item wants one label, two when it was
  sent to a second labeler for agreement, and is done when it has them; gold items
  (known answers, in ``gold``) are never done: every labeler may answer each once.
* ``label_answers``: what each labeler did with an item, one row per
  ``(item, labeler)``: ``labeled`` (with the class), ``skipped`` or ``unsure``.
* ``labelers``: names and the sha256 of their tokens (never the token itself).

Every state change is one transaction whose ``UPDATE ... WHERE`` re-checks the
state it expects (labels missing and no live lease), so two processes can
never both win an item: the loser's update touches no row and it tries the next
candidate. Time is a float of epoch seconds passed in by the caller (``now``), which
keeps the state machine testable without sleeping.

Hand-out order: three lanes. Each hand-out first draws the gold lane with
probability ``gold_share``; every ``audit_every``-th item of a labeler comes from
the audit lane (oldest first) when one waits, so audit items are never starved by
higher-scored ones; otherwise the highest priority, oldest first.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable

from sqlalchemy import Engine, and_, delete, event, func, insert, not_, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from activestream.errors import InvalidInput, NotFound
from activestream.storage.queue_tables import (ANSWERS, ITEMS, LABELERS, Answer, LeaseConflict, QueueItem,
                                               queue_metadata, token_hash)
from activestream.storage.store import SampleStore, _make_engine, create_tables, writing

__all__ = ["LabelQueue", "QueueItem", "Answer", "LeaseConflict", "queue_metadata", "token_hash", "ITEMS", "ANSWERS",
           "LABELERS"]

LANES = ("normal", "audit", "gold")
CANDIDATES = 16
ANALYZE_AFTER = 200

def _relaxed_sync(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def _live(now: float):
    return and_(ITEMS.c.holder.is_not(None), ITEMS.c.until > now)


def _unfinished():
    return or_(ITEMS.c.lane == "gold", ITEMS.c.labeled < ITEMS.c.wanted)


def _available(now: float):
    """Wants a label and nobody holds it (never leased, given back, or its lease expired)."""
    return and_(_unfinished(), not_(_live(now)))


def _item(row) -> QueueItem:
    m = row._mapping
    return QueueItem(id=m["id"], uri=m["uri"], reason=m["reason"], score=m["score"], probability=m["probability"],
                     model=m["model"], version=m["version"], top=[tuple(t) for t in m["top"]],
                     priority=m["priority"], lane=m["lane"], wanted=m["wanted"], gold=m["gold"])


class LabelQueue:
    """Items, leases and answers in the store's database (``store.engine``).

    >>> q = LabelQueue(SampleStore("sqlite://"), lease_seconds=60)
    >>> q.create_schema()
    >>> q.add([QueueItem("a", "blob:a", "uncertain", 0.9, 0.05, "clf", 1, [(3, 0.4)], 0.9)], now=0)
    1
    >>> q.lease("ann", now=1).id, q.lease("bob", now=2)
    ('a', None)
    >>> q.lease("bob", now=62).id    # ann's lease expired
    'a'
    """

    def __init__(self, store: SampleStore, lease_seconds: float = 120.0, gold_share: float = 0.0,
                 audit_every: int = 5, seed: int | None = None):
        self.store = store
        self.lease_seconds = lease_seconds
        self.gold_share = gold_share
        self.audit_every = audit_every
        self.rng_ = random.Random(seed)
        self._engine: Engine | None = None
        self._pid: int | None = None

    @property
    def engine(self) -> Engine:
        """The store's engine on PostgreSQL; on a SQLite file, an engine of our own (created per process).

        Our SQLite connections commit with ``synchronous=NORMAL``: in WAL mode that
        skips the fsync per commit, which is most of a lease's cost, and still never
        corrupts the file; a power cut may lose the last leases and answers, which are
        worth less than a labeler's wait (labels themselves also go to the store and
        to ``labels``).
        """
        url = make_url(self.store.url)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return self.store.engine
        if self._engine is not None and self._pid != os.getpid():
            self._engine.dispose(close=False)
            self._engine = None
        if self._engine is None:
            self._engine = _make_engine(self.store.url)
            event.listen(self._engine, "connect", _relaxed_sync)
            self._pid = os.getpid()
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def create_schema(self) -> None:
        create_tables(queue_metadata, self.engine)

    # -- arrivals ---------------------------------------------------------------------------
    def add(self, items: Iterable[QueueItem], now: float) -> int:
        """Persist items, ignoring ids already queued (redelivery); returns how many were new."""
        added = 0
        with writing(self.engine), self.engine.begin() as conn:
            known = set()
            rows = [self._row(i, now) for i in items]
            ids = [r["id"] for r in rows]
            for start in range(0, len(ids), 500):
                known |= set(conn.scalars(select(ITEMS.c.id).where(ITEMS.c.id.in_(ids[start:start + 500]))))
            fresh = [r for r in rows if r["id"] not in known and not known.add(r["id"])]
            if fresh:
                conn.execute(insert(ITEMS), fresh)
                added = len(fresh)
        if added >= ANALYZE_AFTER and self.engine.dialect.name == "postgresql":
            # A bulk arrival leaves the planner's statistics behind until autovacuum runs,
            # and with "one row" estimates it sorts every open item on each hand-out.
            with writing(self.engine), self.engine.begin() as conn:
                conn.execute(text("ANALYZE label_items"))
        return added

    @staticmethod
    def _row(item: QueueItem, now: float) -> dict:
        if item.lane not in LANES:
            raise InvalidInput("bad_lane", f"queue lane {item.lane!r} is unknown; use one of {LANES}")
        if (item.lane == "gold") != (item.gold is not None):
            raise InvalidInput("bad_gold", "an item is in the gold lane exactly when it carries a known answer")
        return dict(id=item.id, uri=item.uri, reason=item.reason, lane=item.lane, score=float(item.score),
                    probability=float(item.probability), model=item.model, version=int(item.version),
                    top=[[int(c), float(p)] for c, p in item.top], priority=float(item.priority), gold=item.gold,
                    wanted=int(item.wanted), labeled=0, holder=None, until=None, created=float(now))

    # -- hand-out ---------------------------------------------------------------------------
    def current(self, labeler: str, now: float) -> QueueItem | None:
        """The item leased to ``labeler`` right now, if any."""
        query = select(ITEMS).where(ITEMS.c.holder == labeler, ITEMS.c.until > now)
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(ITEMS.c.until.desc()).limit(1)).first()
        return _item(row) if row else None

    def lease(self, labeler: str, now: float) -> QueueItem | None:
        """The labeler's live item (lease renewed), else a newly leased one; None when nothing waits."""
        held, answered = self._state(labeler, now)
        if held:  # read first: most calls hold nothing, and any write locks all of SQLite
            with writing(self.engine), self.engine.begin() as conn:
                renewed = conn.execute(
                    update(ITEMS).where(ITEMS.c.holder == labeler, ITEMS.c.until > now)
                    .values(until=now + self.lease_seconds).returning(ITEMS)).first()
            if renewed is not None:
                return _item(renewed)
        skip_locked = self.engine.dialect.name == "postgresql"
        for lane in self._lanes(answered):
            while True:
                if skip_locked:
                    won = self._claim_skip_locked(labeler, lane, now)
                    if won is not None:
                        return won
                    if not self._candidates(labeler, lane, now):  # None may mean "all locked this instant"
                        break
                    continue
                ids = self._candidates(labeler, lane, now)
                if not ids:
                    break
                for item_id in ids:
                    won = self._claim(item_id, labeler, now)
                    if won is not None:
                        return won
        return None

    def _state(self, labeler: str, now: float) -> tuple[bool, int]:
        """Whether the labeler holds a live lease, and how many answers they gave: one round trip."""
        held = select(ITEMS.c.id).where(ITEMS.c.holder == labeler, ITEMS.c.until > now).limit(1).scalar_subquery()
        answered = select(func.count()).select_from(ANSWERS).where(ANSWERS.c.labeler == labeler).scalar_subquery()
        with self.engine.connect() as conn:
            item_id, count = conn.execute(select(held, answered)).one()
        return item_id is not None, count

    def _lanes(self, answered: int) -> list[str]:
        lanes = ["audit", "normal"] if (answered + 1) % self.audit_every == 0 else ["normal", "audit"]
        if self.gold_share > 0 and self.rng_.random() < self.gold_share:
            lanes.insert(0, "gold")
        return lanes

    @staticmethod
    def _candidate_query(labeler: str, lane: str, now: float, limit: int):
        mine = select(ANSWERS.c.item_id).where(ANSWERS.c.item_id == ITEMS.c.id, ANSWERS.c.labeler == labeler)
        order = (ITEMS.c.created,) if lane == "audit" else (ITEMS.c.priority.desc(), ITEMS.c.created)
        return (select(ITEMS.c.id).where(ITEMS.c.lane == lane, _available(now), not_(mine.exists()))
                .order_by(*order, ITEMS.c.id).limit(limit))

    def _candidates(self, labeler: str, lane: str, now: float) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(self._candidate_query(labeler, lane, now, CANDIDATES)))

    def _claim_skip_locked(self, labeler: str, lane: str, now: float) -> QueueItem | None:
        """PostgreSQL: pick and lease in one transaction, passing over rows another labeler is claiming.

        Without SKIP LOCKED every labeler would queue behind the row lock of the same
        head item, only to find it taken.
        """
        query = self._candidate_query(labeler, lane, now, 1).with_for_update(skip_locked=True, of=ITEMS)
        with writing(self.engine), self.engine.begin() as conn:
            item_id = conn.scalar(query)
            if item_id is None:
                return None
            row = conn.execute(update(ITEMS).where(ITEMS.c.id == item_id, _available(now))
                               .values(holder=labeler, until=now + self.lease_seconds).returning(ITEMS)).first()
        return _item(row) if row else None

    def _claim(self, item_id: str, labeler: str, now: float) -> QueueItem | None:
        """Lease one item if it is still available; the WHERE clause makes the race safe."""
        with writing(self.engine), self.engine.begin() as conn:
            row = conn.execute(
                update(ITEMS).where(ITEMS.c.id == item_id, _available(now))
                .values(holder=labeler, until=now + self.lease_seconds).returning(ITEMS)).first()
        return _item(row) if row else None

    # -- answers ----------------------------------------------------------------------------
    def answer(self, item_id: str, labeler: str, label: int, now: float) -> Answer:
        """Record ``labeler``'s class for an item; the same class again changes nothing.

        A new class from a labeler who already labeled the item is a correction
        (after undo, say): still one label. Raises ``NotFound`` for an unknown item
        and ``LeaseConflict`` when another labeler holds a live lease or the item
        already has the labels it wants.
        """
        with writing(self.engine), self.engine.begin() as conn:
            item = self._locked(conn, item_id)
            gold = item.gold is not None
            where = (ANSWERS.c.item_id == item_id, ANSWERS.c.labeler == labeler)
            prior = conn.execute(select(ANSWERS).where(*where)).first()
            release = update(ITEMS).where(ITEMS.c.id == item_id, ITEMS.c.holder == labeler)
            if prior is not None and prior.outcome == "labeled":
                conn.execute(release.values(holder=None, until=None))
                # A gold item's first answer is the one that measures the labeler: a
                # correction (after undo) must not let anyone repair their own score.
                if prior.label == label or gold:
                    return Answer(False, gold, item.lane, item.created)
                conn.execute(update(ANSWERS).where(*where).values(label=label, created=self._stamp(conn, labeler, now)))
                return Answer(True, gold, item.lane, item.created)
            self._check_free(item, labeler, now)
            values = dict(outcome="labeled", label=label, created=self._stamp(conn, labeler, now))
            if prior is None:
                conn.execute(insert(ANSWERS).values(item_id=item_id, labeler=labeler, **values))
            else:
                conn.execute(update(ANSWERS).where(*where).values(**values))
            # Re-checked in the UPDATE itself: SQLite reads outside the write lock, so a
            # concurrent answer may have taken the last wanted label since the read above.
            claimed = conn.execute(update(ITEMS).where(ITEMS.c.id == item_id, _unfinished(), self._free_for(labeler, now))
                                   .values(labeled=ITEMS.c.labeled + (0 if gold else 1), holder=None, until=None))
            if claimed.rowcount != 1:
                raise LeaseConflict(f"item {item_id!r} was taken by another labeler meanwhile")
        return Answer(True, gold, item.lane, item.created)

    def skip(self, item_id: str, labeler: str, now: float, unsure: bool = False) -> None:
        """Give a leased item back without a label; the labeler will not be handed it again."""
        with writing(self.engine), self.engine.begin() as conn:
            item = self._locked(conn, item_id)
            if not (item.holder == labeler and item.until > now):
                raise LeaseConflict(f"item {item_id!r} is not leased to {labeler!r}; fetch it with next first")
            prior = conn.execute(select(ANSWERS.c.outcome).where(ANSWERS.c.item_id == item_id,
                                                                 ANSWERS.c.labeler == labeler)).scalar()
            if prior == "labeled":
                raise LeaseConflict(f"item {item_id!r} already has your label; label it again to correct it")
            conn.execute(insert(ANSWERS).values(item_id=item_id, labeler=labeler, label=None,
                                                created=self._stamp(conn, labeler, now),
                                                outcome="unsure" if unsure else "skipped"))
            given_back = conn.execute(update(ITEMS).where(ITEMS.c.id == item_id, ITEMS.c.holder == labeler,
                                                          ITEMS.c.until > now).values(holder=None, until=None))
            if given_back.rowcount != 1:
                raise LeaseConflict(f"item {item_id!r} is not leased to {labeler!r} any more")

    def undo(self, labeler: str, now: float) -> QueueItem:
        """Lease the item of the labeler's last answer back to them, to answer it again.

        An undone label stays in force until the labeler gives another (the store
        replaces a labeler's label, and a label already on the topic cannot be taken
        back), so the item still counts as labeled; an undone skip is forgotten. A
        fresh item the labeler holds goes back to the queue.
        """
        with writing(self.engine), self.engine.begin() as conn:
            last = conn.execute(select(ANSWERS).where(ANSWERS.c.labeler == labeler)
                                .order_by(ANSWERS.c.created.desc()).limit(1)).first()
            if last is None:
                raise NotFound(f"{labeler!r} has no answer to undo")
            item = self._locked(conn, last.item_id)
            if item.holder not in (None, labeler) and item.until > now:
                raise LeaseConflict(f"item {item.id!r} is now leased to another labeler; it cannot be undone")
            if last.outcome != "labeled":
                if item.gold is None and item.labeled >= item.wanted:
                    raise LeaseConflict(f"item {item.id!r} was labeled by someone else since; it cannot be undone")
                conn.execute(delete(ANSWERS).where(ANSWERS.c.item_id == item.id, ANSWERS.c.labeler == labeler))
            conn.execute(update(ITEMS).where(ITEMS.c.holder == labeler, ITEMS.c.id != item.id)
                         .values(holder=None, until=None))
            leased = conn.execute(update(ITEMS).where(ITEMS.c.id == item.id, self._free_for(labeler, now))
                                  .values(holder=labeler, until=now + self.lease_seconds))
            if leased.rowcount != 1:
                raise LeaseConflict(f"item {item.id!r} is now leased to another labeler; it cannot be undone")
        return self.get(item.id)

    @staticmethod
    def _stamp(conn, labeler: str, now: float) -> float:
        """``now``, nudged past the labeler's last answer so "last" is never a tie."""
        last = conn.scalar(select(func.max(ANSWERS.c.created)).where(ANSWERS.c.labeler == labeler))
        return now if last is None or now > last else last + 1e-6

    def _locked(self, conn, item_id: str):
        query = select(ITEMS).where(ITEMS.c.id == item_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # answers on one item serialise; SQLite locks the whole file anyway
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no labeling item {item_id!r}; fetch items with next")
        return row

    @staticmethod
    def _free_for(labeler: str, now: float):
        """Nobody else holds a live lease on the row."""
        return or_(ITEMS.c.holder.is_(None), ITEMS.c.holder == labeler, ITEMS.c.until <= now)

    @staticmethod
    def _check_free(item, labeler: str, now: float) -> None:
        if item.holder not in (None, labeler) and item.until > now:
            raise LeaseConflict(f"item {item.id!r} is leased to another labeler until its lease expires")
        if item.gold is None and item.labeled >= item.wanted:
            raise LeaseConflict(f"item {item.id!r} already has the labels it needs")

    # -- reading ----------------------------------------------------------------------------
    def get(self, item_id: str) -> QueueItem:
        with self.engine.connect() as conn:
            row = conn.execute(select(ITEMS).where(ITEMS.c.id == item_id)).first()
        if row is None:
            raise NotFound(f"no labeling item {item_id!r}")
        return _item(row)

    def pending(self, limit: int, now: float) -> list[QueueItem]:
        """Items still wanting labels (gold excluded), in hand-out order of the normal lane."""
        query = (select(ITEMS).where(ITEMS.c.labeled < ITEMS.c.wanted, ITEMS.c.lane != "gold")
                 .order_by(ITEMS.c.priority.desc(), ITEMS.c.created, ITEMS.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(query)]

    def depth(self, now: float) -> dict[str, int]:
        """Items ``waiting`` (no live lease), ``leased`` (live) and ``done``; gold excluded."""
        todo = ITEMS.c.labeled < ITEMS.c.wanted
        query = select(func.count().filter(and_(todo, not_(_live(now)))), func.count().filter(and_(todo, _live(now))),
                       func.count().filter(not_(todo))).where(ITEMS.c.lane != "gold")
        with self.engine.connect() as conn:
            waiting, leased, done = conn.execute(query).one()
        return {"waiting": waiting, "leased": leased, "done": done}

    def answers(self, labeler: str | None = None) -> list[dict]:
        """Every answer (optionally one labeler's) with its item's lane, gold and top guess."""
        query = (select(ANSWERS, ITEMS.c.lane, ITEMS.c.gold, ITEMS.c.top)
                 .join(ITEMS, ITEMS.c.id == ANSWERS.c.item_id).order_by(ANSWERS.c.created))
        if labeler is not None:
            query = query.where(ANSWERS.c.labeler == labeler)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # -- labelers ---------------------------------------------------------------------------
    def set_token(self, name: str, token: str, now: float) -> None:
        """Create the labeler or replace their token (only its sha256 is stored)."""
        digest = token_hash(token)
        with writing(self.engine), self.engine.begin() as conn:
            if conn.execute(update(LABELERS).where(LABELERS.c.name == name).values(token_sha256=digest)).rowcount:
                return
            try:
                conn.execute(insert(LABELERS).values(name=name, token_sha256=digest, created=now))
            except SQLIntegrityError as e:
                raise InvalidInput("bad_token", f"could not store a token for {name!r}: {e}") from e

    def labeler_for(self, token: str) -> str | None:
        """The labeler whose token this is, or None."""
        with self.engine.connect() as conn:
            return conn.scalar(select(LABELERS.c.name).where(LABELERS.c.token_sha256 == token_hash(token)))

