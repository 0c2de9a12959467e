"""BlobStore: key validation, sharding, atomic and idempotent writes."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.errors import ActivestreamError, InvalidInput, NotFound
from activestream.storage.blobs import BlobStore

VALID_KEY = st.from_regex(r"[A-Za-z0-9._:-]{1,200}", fullmatch=True).filter(lambda k: k not in (".", ".."))


@pytest.fixture
def blobs(tmp_path):
    return BlobStore(tmp_path / "blobs")


def test_put_get_exists_round_trip(blobs):
    assert not blobs.exists("img-1.png")
    assert blobs.put("img-1.png", b"\x00\x01payload") == "img-1.png"
    assert blobs.exists("img-1.png")
    assert blobs.get("img-1.png") == b"\x00\x01payload"


def test_put_is_idempotent_and_overwrites_whole_file(blobs):
    blobs.put("k", b"first version, long")
    blobs.put("k", b"first version, long")
    assert blobs.get("k") == b"first version, long"
    blobs.put("k", b"short")
    assert blobs.get("k") == b"short"


def test_files_are_sharded_by_sha1_of_key(blobs, tmp_path):
    blobs.put("sample:42", b"x")
    shard = hashlib.sha1(b"sample:42").hexdigest()[:2]
    assert (tmp_path / "blobs" / shard / "sample:42").read_bytes() == b"x"


def test_init_does_no_io(tmp_path):
    root = tmp_path / "not" / "yet"
    store = BlobStore(root)
    assert store.root == root
    assert not store.exists("k")
    assert not root.exists()


def test_get_missing_raises_helpful_not_found(blobs):
    with pytest.raises(NotFound, match="no blob with key 'ghost'") as err:
        blobs.get("ghost")
    assert isinstance(err.value.__cause__, FileNotFoundError)
    assert isinstance(err.value, ActivestreamError)


@pytest.mark.parametrize(
    "key", ["", ".", "..", "a/b", "../x", "a\\b", "x" * 201, "é", " a", "a b", "a\x00", None, 42]
)
def test_bad_keys_are_refused(blobs, key):
    for call in (lambda: blobs.put(key, b"x"), lambda: blobs.get(key), lambda: blobs.exists(key)):
        with pytest.raises(InvalidInput) as err:
            call()
        assert err.value.kind == "bad_key"


@pytest.mark.parametrize("key", ["x" * 200, "a:b-c_d.e", "...", "0"])
def test_edge_keys_are_accepted(blobs, key):
    assert blobs.get(blobs.put(key, b"ok")) == b"ok"


def test_non_bytes_data_is_refused(blobs):
    with pytest.raises(InvalidInput, match="must be bytes"):
        blobs.put("k", "text")  # type: ignore[arg-type]


def test_failed_write_keeps_old_blob_and_leaves_no_temp_file(blobs, monkeypatch):
    blobs.put("k", b"old")
    folder = blobs.path("k").parent

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        blobs.put("k", b"new")
    monkeypatch.undo()
    assert blobs.get("k") == b"old"
    assert sorted(p.name for p in folder.iterdir()) == ["k"]


def test_readers_never_see_a_partial_blob(blobs):
    a, b = b"a" * 200_000, b"b" * 100_000
    blobs.put("k", a)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            blobs.put("k", b)
            blobs.put("k", a)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = {blobs.get("k") for _ in range(300)}
    finally:
        stop.set()
        thread.join()
    assert seen <= {a, b}


@settings(max_examples=50, deadline=None)
@given(key=VALID_KEY, data=st.binary(max_size=256))
def test_any_valid_key_round_trips(tmp_path_factory, key, data):
    blobs = BlobStore(tmp_path_factory.mktemp("blobs"))
    assert blobs.get(blobs.put(key, data)) == data


def test_put_many_stores_every_valid_key_and_returns_each_refusal_in_order(tmp_path):
    blobs = BlobStore(tmp_path)
    items = [(f"img-{i}", b"%d" % i) for i in range(40)]
    items[7] = ("..", b"never")
    refusals = blobs.put_many(items)
    assert [i for i, r in enumerate(refusals) if r is not None] == [7] and refusals[7].kind == "bad_key"
    assert all(blobs.get(k) == v for k, v in items if k != "..")
    assert blobs.put_many([]) == [] and blobs.put_many([("one", b"1")]) == [None]
