"""Sample and label store on SQLAlchemy 2 Core: SQLite by default, PostgreSQL by URL.

Tables: ``samples`` (one row per selected image), ``labels`` (one per
``(sample_id, labeler)``; a new class from the same labeler is a correction) and
``pseudo_labels`` (model predictions, one per ``(sample_id, model_version)``, kept
apart: ``training_set`` never reads them). Labels have no foreign key to samples:
they come from another topic and may arrive first. Every write is one short
transaction of ``INSERT ... ON CONFLICT`` per batch, so redelivery is harmless. On
SQLite each connection uses WAL and a 30 s busy timeout, so processes can share a file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (JSON, Column, DateTime, Engine, Float, Integer, MetaData, String, Table,
                        TypeDecorator, create_engine, event, func, or_, select)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex

from activestream.errors import InvalidInput, NotFound
from activestream.storage import checkpoints
from activestream.storage.checkpoints import Checkpoint

__all__ = ["Label", "SampleStore", "Sample", "metadata", "SAMPLES", "LABELS", "PSEUDO_LABELS"]

LABEL_KINDS = ("human", "gold", "seed")
SQLITE_BUSY_MS = 30_000


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = MetaData()
SAMPLES = Table(
    "samples", metadata,
    Column("id", String, primary_key=True),
    Column("blob_key", String),
    Column("source", String, nullable=False),
    Column("model_version", Integer),
    Column("predicted", Integer),
    Column("score", Float),
    Column("reason", String),
    Column("selection_prob", Float),
    Column("meta", JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    Column("created", UTCDateTime, nullable=False),
)
LABELS = Table(
    "labels", metadata,
    Column("sample_id", String, primary_key=True),
    Column("labeler", String, primary_key=True),
    Column("label", Integer, nullable=False),
    Column("kind", String, nullable=False, index=True),
    # indexed for the newest-labels-first reads of recent_outcomes
    Column("created", UTCDateTime, nullable=False, index=True),
)
PSEUDO_LABELS = Table(
    "pseudo_labels", metadata,
    Column("sample_id", String, primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("label", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("created", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class Sample:
    """An image selected for labelling, and why.

    >>> Sample("img-1", blob_key="img-1.png", reason="uncertain", score=0.8).reason
    'uncertain'
    """

    id: str
    blob_key: str | None = None
    source: str = ""
    model_version: int | None = None
    predicted: int | None = None
    score: float | None = None
    reason: str | None = None
    selection_prob: float | None = None
    meta: dict = field(default_factory=dict)
    created: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """A selected sample's prediction beside its human label (see :meth:`SampleStore.outcomes`)."""

    sample_id: str
    model_version: int
    predicted: int
    reason: str
    selection_prob: float
    label: int
    labelled: datetime | None = None  # when its newest human label was given


@dataclass(frozen=True)
class Label:
    """One labeler's class for one sample; ``kind`` is "human", "gold" or "seed".

    >>> Label("img-1", 3, "alice").kind
    'human'
    """

    sample_id: str
    label: int
    labeler: str
    kind: str = "human"
    created: datetime | None = None


def _utc(value: datetime | None, what: str) -> datetime:
    """``value`` in UTC (now when ``None``); naive datetimes are refused, not guessed."""
    if value is None:
        return datetime.now(timezone.utc)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput("bad_datetime", f"{what} must be a timezone-aware datetime, got {value!r}; "
                                           "use datetime.now(timezone.utc)")
    return value.astimezone(timezone.utc)


def _opt(cast, value):
    return None if value is None else cast(value)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("bad_id", f"{what} must be a non-empty string, got {value!r}")
    return value


def _class(value: object, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise InvalidInput("bad_label", f"{what} must be a class index (int >= 0), got {value!r}")
    return int(value)


def _rows(make, items: Iterable, what: str) -> list[dict]:
    """Turn input objects into table rows, naming the offending object on failure."""
    rows = []
    for item in items:
        try:
            rows.append(make(item))
        except (TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"bad_{what}", f"cannot store {what} {item!r} ({e}); see the {what} field types") from e
    return rows


def _sample_row(s: Sample) -> dict:
    return dict(
        id=_text(s.id, "Sample.id"), blob_key=s.blob_key, source=s.source or "",
        model_version=_opt(int, s.model_version), predicted=_opt(int, s.predicted),
        score=_opt(float, s.score), reason=s.reason, selection_prob=_opt(float, s.selection_prob),
        meta=dict(s.meta or {}), created=_utc(s.created, "Sample.created"),
    )


def _label_row(lab: Label) -> dict:
    return dict(
        sample_id=_text(lab.sample_id, "Label.sample_id"), labeler=_text(lab.labeler, "Label.labeler"),
        label=_class(lab.label, "Label.label"), kind=_text(lab.kind, "Label.kind"),
        created=_utc(lab.created, "Label.created"),
    )


def _pseudo_row(row: tuple[str, int, int, float]) -> dict:
    sample_id, version, label, confidence = row
    return dict(sample_id=_text(sample_id, "pseudo label sample_id"), model_version=int(version),
                label=_class(label, "pseudo label"), confidence=float(confidence),
                created=datetime.now(timezone.utc))


def _rounds(rows: list[dict], key: tuple[str, ...]) -> list[list[dict]]:
    """Split a batch so no statement touches a row twice (PostgreSQL refuses that).

    Round ``i`` holds the ``i``-th occurrence of each key, so running the rounds in
    order equals applying the rows one by one; usually there is just one round.
    """
    rounds: list[list[dict]] = []
    seen: dict[tuple, int] = defaultdict(int)
    for row in rows:
        k = tuple(row[c] for c in key)
        if seen[k] == len(rounds):
            rounds.append([])
        rounds[seen[k]].append(row)
        seen[k] += 1
    return rounds


def _resolve(votes: list[tuple[int, datetime]]) -> int:
    """Majority class; ties go to the class labelled most recently (then the larger class)."""
    count: dict[int, int] = defaultdict(int)
    newest: dict[int, datetime] = {}
    for label, created in votes:
        count[label] += 1
        newest[label] = max(created, newest.get(label, created))
    return max(count, key=lambda c: (count[c], newest[c], c))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
    # WAL is a property of the file: once set it stays. Setting it needs a moment alone
    # with the file and SQLite answers "locked" at once, without waiting, when another
    # process is there (two workers opening a new store together): try again.
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
    while mode.lower() != "wal":
        try:
            cur.execute("PRAGMA journal_mode = WAL")  # an in-memory database stays "memory"
            break
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cur.close()


_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def writing(engine: Engine):
    """A context for one write transaction on ``engine``: ``with writing(e): with e.begin() ...``.

    SQLite lets one writer in at a time and makes the others poll with growing sleeps
    (1, 2, 5, 10 ... ms), which is what several labelers' threads queueing on one file
    would feel; the threads of one process wait on a lock instead and go in the moment
    it is free. Other databases lock rows themselves: nothing to hold.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    key = str(engine.url.database)
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(key, threading.RLock())


def create_tables(meta: MetaData, engine: Engine, attempts: int = 5) -> None:
    """``meta.create_all(engine)``, safe when several processes create the same tables at once."""
    for attempt in range(attempts):
        try:
            meta.create_all(engine)
            return
        except DBAPIError:  # another process created a table between our check and our CREATE
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def create_indexes(table: Table, engine: Engine, attempts: int = 5) -> None:
    """Create ``table``'s declared indexes that it lacks: ``create_all`` adds none to a table
    that exists, so a store made before an index was declared gets it here."""
    for attempt in range(attempts):
        try:
            with writing(engine), engine.begin() as conn:
                for index in table.indexes:
                    conn.execute(CreateIndex(index, if_not_exists=True))
            return
        except DBAPIError:  # PostgreSQL: another process created it between the check and the CREATE
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_MS / 1000}}
    if parsed.database in (None, "", ":memory:"):  # one shared connection, or each would see its own empty db
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif not parsed.database.startswith("file:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


#: What makes a label an outcome: a human answer about a prediction the stream selected.
_OUTCOME = (LABELS.c.kind == "human", SAMPLES.c.predicted.is_not(None), SAMPLES.c.selection_prob.is_not(None))

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class SampleStore:
    """Samples, labels and pseudo labels in one SQL database named by a SQLAlchemy URL.

    The engine is created on first use (never in ``__init__``), and again in a
    forked child process. ``sqlite://`` is a private in-memory database.

    >>> store = SampleStore("sqlite://")
    >>> store.create_schema()
    >>> store.add_samples([Sample("s1", blob_key="s1.png"), Sample("s1", blob_key="s1.png")])
    1
    >>> store.add_labels([Label("s1", 4, "alice"), Label("s1", 4, "bob")])
    2
    >>> store.training_set()
    [('s1', 's1.png', 4)]
    >>> store.close()
    """

    def __init__(self, url: str):
        self.url = url
        self._engine: Engine | None = None
        self._pid: int | None = None

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use and per process."""
        if self._engine is not None and self._pid != os.getpid():
            self._engine.dispose(close=False)  # inherited by fork: leave the parent's connections alone
            self._engine = None
        if self._engine is None:
            self._engine = _make_engine(self.url)
            self._pid = os.getpid()
        return self._engine

    def create_schema(self) -> None:
        """Create the tables if they do not exist (safe to call from several processes)."""
        create_tables(metadata, self.engine)
        create_tables(checkpoints.checkpoint_metadata, self.engine)
        create_indexes(LABELS, self.engine)

    def _insert(self, table: Table):
        """An ``INSERT`` that knows ``ON CONFLICT`` in this engine's dialect."""
        dialect = self.engine.dialect.name
        if dialect not in _INSERTS:
            raise InvalidInput("bad_store_url", f"store URL {self.url!r} uses {dialect}; use sqlite:/// or postgresql+psycopg://")
        return _INSERTS[dialect](table)

    def _write(self, stmt, rows: list[dict], key: tuple[str, ...]) -> int:
        """Run ``stmt`` over a batch in one short transaction; returns the rows it touched."""
        if not rows:
            return 0
        with writing(self.engine), self.engine.begin() as conn:
            return sum(len(conn.execute(stmt, batch).all()) for batch in _rounds(rows, key))

    def add_samples(self, samples: Iterable[Sample], checkpoint: Checkpoint | None = None) -> int:
        """Insert samples, ignoring ids already stored; returns how many were new.

        With ``checkpoint``, the stage state it holds is written in the same transaction.
        """
        stmt = self._insert(SAMPLES).on_conflict_do_nothing(index_elements=["id"])
        rows = _rows(_sample_row, samples, "sample")
        if checkpoint is None:
            return self._write(stmt.returning(SAMPLES.c.id), rows, ("id",))
        with writing(self.engine), self.engine.begin() as conn:
            new = len(conn.execute(stmt.returning(SAMPLES.c.id), rows).all()) if rows else 0
            checkpoints.write(conn, self._insert, checkpoint)
            return new

    def checkpoint(self, key: str) -> tuple[bytes, dict] | None:
        """The state and meta last checkpointed under ``key``; None if there is none."""
        with self.engine.connect() as conn:
            return checkpoints.read(conn, key)

    def positions(self, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The next offset to decide per ``(topic, partition)`` of ``group``; absent when none is known."""
        with self.engine.connect() as conn:
            return checkpoints.positions(conn, group, partitions)

    def forget_positions(self, group_prefix: str) -> int:
        """Drop the stream positions of the consumer groups ``<group_prefix>.*``; returns how many.

        For a broker that starts empty (the embedded one keeps its topics in memory): its
        offsets start again at 0, and positions kept from the last broker would have the
        selector take every new image for one it had decided.
        """
        with writing(self.engine), self.engine.begin() as conn:
            return checkpoints.forget_positions(conn, group_prefix)

    def recent_samples(self, limit: int, reasons: Sequence[str]) -> list[Sample]:
        """The ``limit`` newest samples stored for one of ``reasons``, newest first."""
        query = (select(SAMPLES).where(SAMPLES.c.reason.in_(list(reasons)))
                 .order_by(SAMPLES.c.created.desc(), SAMPLES.c.id.desc()).limit(limit))
        return [Sample(**row._mapping) for row in self._read(query)]

    def samples_by_id(self, ids: Iterable[str]) -> dict[str, Sample]:
        """The stored samples among ``ids``."""
        wanted = list(ids)
        if not wanted:
            return {}
        return {row.id: Sample(**row._mapping) for row in self._read(select(SAMPLES).where(SAMPLES.c.id.in_(wanted)))}

    def add_labels(self, labels: Iterable[Label]) -> int:
        """Insert labels; same class again changes nothing, a new class from the same labeler replaces it.

        Returns how many rows were inserted or changed. A batch has the same effect
        as its labels added one by one, so replaying a stream in order converges.
        """
        stmt = self._insert(LABELS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["sample_id", "labeler"],
            set_={"label": stmt.excluded.label, "kind": stmt.excluded.kind, "created": stmt.excluded.created},
            where=or_(LABELS.c.label != stmt.excluded.label, LABELS.c.kind != stmt.excluded.kind),
        )
        rows = _rows(_label_row, labels, "label")
        return self._write(stmt.returning(LABELS.c.sample_id), rows, ("sample_id", "labeler"))

    def add_pseudo_labels(self, rows: Iterable[tuple[str, int, int, float]]) -> int:
        """Store ``(sample_id, model_version, label, confidence)`` model predictions; returns how many were new."""
        key = ("sample_id", "model_version")
        stmt = self._insert(PSEUDO_LABELS).on_conflict_do_nothing(index_elements=list(key))
        return self._write(stmt.returning(PSEUDO_LABELS.c.sample_id), _rows(_pseudo_row, rows, "pseudo_label"), key)

    def _read(self, query) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def get_sample(self, sample_id: str) -> Sample:
        """The stored sample; ``NotFound`` if there is none with this id."""
        row = next(iter(self._read(select(SAMPLES).where(SAMPLES.c.id == sample_id))), None)
        if row is None:
            raise NotFound(f"no sample with id {sample_id!r} in the store at {self.url}; add it with add_samples first")
        return Sample(**row._mapping)

    def labels_for(self, sample_id: str) -> list[Label]:
        """Every human/gold/seed label of one sample, oldest first."""
        query = select(LABELS).where(LABELS.c.sample_id == sample_id).order_by(LABELS.c.created, LABELS.c.labeler)
        return [Label(**row._mapping) for row in self._read(query)]

    def labelers_of(self, ids: Iterable[str], chunk: int = 500) -> set[tuple[str, str]]:
        """``(sample_id, labeler)`` of every stored label of these samples."""
        ids, found = list(ids), set()
        for i in range(0, len(ids), chunk):
            query = select(LABELS.c.sample_id, LABELS.c.labeler).where(LABELS.c.sample_id.in_(ids[i:i + chunk]))
            found.update((row.sample_id, row.labeler) for row in self._read(query))
        return found

    def count_samples(self, reasons: Sequence[str] | None = None, since: datetime | None = None) -> int:
        """How many samples are stored; only those stored for one of ``reasons`` and
        created at or after ``since``, when given."""
        query = select(func.count()).select_from(SAMPLES)
        if reasons is not None:
            query = query.where(SAMPLES.c.reason.in_(list(reasons)))
        if since is not None:
            query = query.where(SAMPLES.c.created >= _utc(since, "since"))
        return self._read(query)[0][0]

    def count_labeled(self, kinds: Sequence[str] = LABEL_KINDS) -> int:
        """How many samples :meth:`training_set` holds: stored with an image and labeled
        at least once with one of these kinds (a label for an id never stored is not one)."""
        query = (
            select(func.count(LABELS.c.sample_id.distinct()))
            .join(SAMPLES, SAMPLES.c.id == LABELS.c.sample_id)
            .where(SAMPLES.c.blob_key.is_not(None), LABELS.c.kind.in_(list(kinds)))
        )
        return self._read(query)[0][0]

    def training_set(self, kinds: Sequence[str] = LABEL_KINDS) -> list[tuple[str, str, int]]:
        """``(sample_id, blob_key, label)`` for every labelled sample that has a blob.

        Disagreeing labelers are resolved by majority, ties by the most recent
        label. Ordered by each sample's first label time, then id.
        """
        query = (
            select(LABELS.c.sample_id, SAMPLES.c.blob_key, LABELS.c.label, LABELS.c.created)
            .join(SAMPLES, SAMPLES.c.id == LABELS.c.sample_id)
            .where(SAMPLES.c.blob_key.is_not(None), LABELS.c.kind.in_(list(kinds)))
        )
        votes: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
        blob: dict[str, str] = {}
        for sample_id, blob_key, label, created in self._read(query):
            votes[sample_id].append((label, created))
            blob[sample_id] = blob_key
        order = sorted(votes, key=lambda s: (min(c for _, c in votes[s]), s))
        return [(s, blob[s], _resolve(votes[s])) for s in order]

    def outcomes(self) -> list[Outcome]:
        """Every stream-selected sample with a human label: what was predicted, why and with
        which probability the sample was selected, and its label (majority of labelers).

        The raw material of honest accuracy estimates; ordered by sample id.
        """
        return self._outcomes()

    def recent_outcomes(self, limit: int, reasons: Sequence[str] | None = None,
                        since: datetime | None = None) -> list[Outcome]:
        """:meth:`outcomes` of the samples labelled last: those that the ``limit`` newest human
        labels (given at or after ``since``, when given) are about, among samples stored for
        one of ``reasons``; newest label first, each sample once.

        A bounded read however much the store holds: ``limit`` label rows (newest first,
        by an index), then the labels of at most ``limit`` samples to resolve each one.
        """
        newest = (select(LABELS.c.sample_id).join(SAMPLES, SAMPLES.c.id == LABELS.c.sample_id)
                  .where(*_OUTCOME)
                  .order_by(LABELS.c.created.desc(), LABELS.c.sample_id.desc(), LABELS.c.labeler.desc())
                  .limit(limit))
        if reasons is not None:
            newest = newest.where(SAMPLES.c.reason.in_(list(reasons)))
        if since is not None:
            newest = newest.where(LABELS.c.created >= _utc(since, "since"))
        ids = list(dict.fromkeys(row.sample_id for row in self._read(newest)))
        if not ids:
            return []
        found = {o.sample_id: o for o in self._outcomes(SAMPLES.c.id.in_(ids))}
        return [found[s] for s in ids]

    def _outcomes(self, *where) -> list[Outcome]:
        query = (
            select(SAMPLES.c.id, SAMPLES.c.model_version, SAMPLES.c.predicted, SAMPLES.c.reason,
                   SAMPLES.c.selection_prob, LABELS.c.label, LABELS.c.created)
            .join(LABELS, LABELS.c.sample_id == SAMPLES.c.id)
            .where(*_OUTCOME, *where)
        )
        votes: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
        facts: dict[str, tuple] = {}
        for sample_id, version, predicted, reason, prob, label, created in self._read(query):
            votes[sample_id].append((label, created))
            facts[sample_id] = (version, predicted, reason or "", prob)
        return [Outcome(s, *facts[s], _resolve(votes[s]), max(c for _, c in votes[s])) for s in sorted(votes)]

    def close(self) -> None:
        """Dispose of the engine; the store reconnects if used again."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
