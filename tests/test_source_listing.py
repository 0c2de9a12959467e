"""The user's own images before any broker: listing a folder, naming images, reading them,
and what a source sends, skips and refuses."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activestream.config import Settings
from activestream.errors import ConfigError, InvalidInput
from activestream.storage.listing import image_id, list_images, read_image
from activestream.streams.messages import ID_PATTERN
from activestream.streams.source import Source, answers_for, check_reference, open_source, source_items, with_fetch_root


def touch(root, *rels: str, data: bytes = b"x") -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_a_folder_is_listed_recursively_in_order_without_hidden_files(tmp_path):
    touch(tmp_path, "b/2.PNG", "a/deep/er/1.jpeg", "a/0.webp", "a/notes.txt", ".git/x.jpg", "b/.thumb.jpg", "b/Thumbs.db")
    found = list_images(str(tmp_path))
    assert [f.key for f in found.images] == ["a/0.webp", "a/deep/er/1.jpeg", "b/2.PNG"]
    assert found.not_images == 2
    assert found.classes == ("a", "b")  # ImageFolder reads images at any depth of a class folder too
    assert found.images[0].uri == (tmp_path / "a" / "0.webp").as_uri()


@pytest.mark.parametrize("rels", [("1.jpg", "2.jpg"), ("1.jpg", "a/2.jpg", "b/3.jpg"), ("a/1.jpg", "a/2.jpg")])
def test_only_image_folder_layout_has_classes(tmp_path, rels):
    touch(tmp_path, *rels)
    assert list_images(str(tmp_path)).classes is None


def test_answers_only_when_every_folder_is_a_class_of_the_model(tmp_path):
    touch(tmp_path, "dog/1.jpg", "cat/2.jpg")
    listing = list_images(str(tmp_path))
    assert answers_for(listing, ("bird", "cat", "dog")) == {"cat": 1, "dog": 2}
    assert answers_for(listing, ("cat", "bird")) is None
    assert answers_for(listing, None) is None


def test_a_missing_folder_or_an_empty_one_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        list_images(str(tmp_path / "nope"))
    touch(tmp_path, "a.txt")
    with pytest.raises(ConfigError, match=r"no images .*1 other file"):
        open_source(Source(str(tmp_path)))
    with pytest.raises(ConfigError, match="folder or s3://"):
        list_images("http://example.com/photos")


@given(st.lists(st.text(min_size=1, max_size=150).filter(lambda t: "/" not in t), min_size=1, max_size=3),
       st.lists(st.text(min_size=1, max_size=150).filter(lambda t: "/" not in t), min_size=1, max_size=3))
def test_image_ids_are_valid_and_distinct_for_distinct_keys(a, b):
    ka, kb = "/".join(a), "/".join(b)
    ia, ib = image_id("photos", ka), image_id("photos", kb)
    assert re.fullmatch(ID_PATTERN, ia) and re.fullmatch(ID_PATTERN, image_id("photos", ka, 12345))
    assert (ia == ib) == (ka == kb)


def test_reading_refuses_what_cannot_be_sent(tmp_path):
    touch(tmp_path, "big.jpg", data=b"x" * 11)
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    found = {f.key: f for f in list_images(str(tmp_path)).images}
    assert read_image(found["big.jpg"], 11) == b"x" * 11
    with pytest.raises(InvalidInput) as e:
        read_image(found["big.jpg"], 10)
    assert e.value.kind == "too_large"
    with pytest.raises(InvalidInput) as e:
        read_image(found["gone.jpg"], 10)
    assert e.value.kind == "unreadable"


def _items(source: Source, max_bytes: int = 100) -> tuple[list, Counter]:
    skipped: Counter = Counter()

    async def collect():
        return [item async for item in source_items(open_source(source, ("a", "b")), max_bytes, skipped)]

    return asyncio.run(collect()), skipped


def test_by_value_skips_unreadable_files_and_by_reference_sends_every_image(tmp_path):
    touch(tmp_path / "p", "a/1.jpg", "b/2.jpg", "b/broken.jpg", data=b"jpeg?")
    (tmp_path / "p" / "a" / "gone.jpg").symlink_to(tmp_path / "p" / "a" / "deleted.jpg")
    items, skipped = _items(Source(str(tmp_path / "p"), "value", repeat=2))
    assert [(i.id, i.png, i.uri, i.truth) for i in items[:3]] == [
        ("p:a:1.jpg", b"jpeg?", None, 0), ("p:b:2.jpg", b"jpeg?", None, 1), ("p:b:broken.jpg", b"jpeg?", None, 1)]
    assert [i.id for i in items[3:]] == ["p:a:1.jpg-r1", "p:b:2.jpg-r1", "p:b:broken.jpg-r1"]
    assert skipped == {"unreadable": 2}  # once a pass
    items, skipped = _items(Source(str(tmp_path / "p"), "reference", prefix="cam"))
    assert [(i.id, i.png, i.uri) for i in items][:2] == [
        ("cam:a:1.jpg", None, (tmp_path / "p" / "a" / "1.jpg").as_uri()),
        ("cam:a:gone.jpg", None, (tmp_path / "p" / "a" / "gone.jpg").as_uri())]
    assert len(items) == 4 and not skipped


def test_a_folder_by_reference_must_be_open_to_the_predictors(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    by_ref = Source(str(folder), "reference")
    with pytest.raises(ConfigError, match="ACTIVESTREAM_FETCH_ROOTS"):
        check_reference(by_ref, Settings(fetch_roots=str(tmp_path / "elsewhere")))
    check_reference(by_ref, Settings(fetch_roots=str(tmp_path)))
    check_reference(Source(str(folder), "value"), Settings())
    opened = with_fetch_root(Settings(fetch_roots="/srv/a"), by_ref)
    assert opened.fetch_roots == f"/srv/a,{folder.resolve()}"
    check_reference(by_ref, opened)


def test_a_prefix_by_reference_must_be_open_to_the_predictors():
    by_ref = Source("s3://cams/night", "reference")
    for allowed in ("", "other", "cams/day/"):
        with pytest.raises(ConfigError, match="ACTIVESTREAM_FETCH_BUCKETS"):
            check_reference(by_ref, Settings(fetch_buckets=allowed))
    for allowed in ("cams", "cams/night/", "x,cams/"):
        check_reference(by_ref, Settings(fetch_buckets=allowed))
    check_reference(Source("s3://cams/night", "value"), Settings())
    assert with_fetch_root(Settings(fetch_buckets="x"), by_ref).fetch_buckets == "x,cams/night/"
    assert with_fetch_root(Settings(), Source("s3://cams", "reference")).fetch_buckets == "cams"
