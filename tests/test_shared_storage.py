"""The blob store and the model registry in an S3-compatible bucket (moto on 127.0.0.1):
the same verbs as on a local folder, sha256 and seal checks included."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from s3_server import s3, s3_endpoint  # noqa: F401 - fixtures

from activestream.config import Settings, blobs_from, registry_from
from activestream.errors import ConfigError, IntegrityError, NotFound
from activestream.storage.blobs import BlobStore
from activestream.storage.objects import LocalObjects, open_objects
from activestream.storage.registry import ModelRegistry
from activestream.storage.s3 import S3Objects

KEY = b"k" * 32


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    return {"w": np.random.default_rng(seed).standard_normal((3, 4)).astype(np.float32)}


def register(reg: ModelRegistry, seed: int = 0, status: str = "candidate"):
    return reg.register("clf", tensors(seed), spec={"arch": "linear"}, parent=None, train_size=5,
                        metrics={"acc": 0.5}, status=status)


def test_blobs_round_trip_in_a_bucket_and_a_replaced_object_is_refused(s3):
    blobs = BlobStore(s3.url("loop/blobs"))
    assert not blobs.exists("img-1")
    blobs.put("img-1", b"\x89PNG one")
    assert blobs.exists("img-1") and blobs.get("img-1") == b"\x89PNG one"
    assert blobs.uri("img-1").startswith(f"s3://{s3.name}/loop/blobs/")
    with pytest.raises(NotFound, match="no blob with key 'ghost'"):
        blobs.get("ghost")
    # someone replaces the bytes behind activestream's back, keeping the recorded sha256
    key = blobs.uri("img-1").split(f"s3://{s3.name}/", 1)[1]
    old = s3.client.head_object(Bucket=s3.name, Key=key)["Metadata"]
    s3.client.put_object(Bucket=s3.name, Key=key, Body=b"\x89PNG two", Metadata=old)
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        blobs.get("img-1")
    s3.client.put_object(Bucket=s3.name, Key=key, Body=b"\x89PNG two")  # and without one
    with pytest.raises(IntegrityError, match="no sha256"):
        blobs.get("img-1")


def test_registry_round_trip_with_a_seal_in_a_bucket(s3):
    reg = ModelRegistry(s3.url("loop/models"), key=KEY)
    v1, v2 = register(reg, 1), register(reg, 2, status="promoted")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.uri == f"s3://{s3.name}/loop/models/clf/000001/model.safetensors"
    loaded, meta = ModelRegistry(s3.url("loop/models"), key=KEY).load("clf", 2)  # another process, same bucket
    np.testing.assert_array_equal(loaded["w"], tensors(2)["w"])
    assert meta == v2 and reg.latest("clf") == v2
    assert reg.set_status("clf", 1, "rejected").status == "rejected"
    assert [v.status for v in reg.versions("clf")] == ["rejected", "promoted"]
    assert ModelRegistry(s3.url("loop/models"), key=b"x" * 32).latest("clf") is None  # another key: refused


def test_registry_in_a_bucket_refuses_edited_metadata_and_swapped_weights(s3, caplog):
    reg = ModelRegistry(s3.url("m"), key=KEY)
    register(reg, 1)
    register(reg, 2)
    meta_key = "m/clf/000001/metadata.json"
    edited = json.loads(s3.client.get_object(Bucket=s3.name, Key=meta_key)["Body"].read())
    edited["status"] = "promoted"
    S3Objects(s3.name, "", s3.client).put(meta_key, json.dumps(edited).encode())  # a valid object sha256
    with pytest.raises(IntegrityError, match="does not match its checksum"):
        reg.get("clf", 1)
    assert [v.version for v in reg.versions("clf")] == [2] and reg.latest("clf") is None
    weights = S3Objects(s3.name, "m", s3.client)
    weights.put("clf/000002/model.safetensors", weights.get("clf/000001/model.safetensors"))
    with pytest.raises(IntegrityError, match="expected sha256"):
        reg.load("clf", 2)


def test_an_incomplete_version_in_a_bucket_is_ignored_and_never_reused(s3):
    reg = ModelRegistry(s3.url("m"))
    register(reg)
    assert reg.objects.claim("clf/000002")  # a writer that died after claiming its number
    assert [v.version for v in reg.versions("clf")] == [1]
    with pytest.raises(NotFound):
        reg.get("clf", 2)
    assert register(reg).version == 3


def test_registrations_from_many_machines_at_once_get_unique_versions(s3):
    def five():
        reg = ModelRegistry(s3.url("m"))  # each "machine" with its own client
        for i in range(5):
            register(reg, seed=i)

    threads = [threading.Thread(target=five) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    versions = ModelRegistry(s3.url("m")).versions("clf")
    assert [v.version for v in versions] == list(range(1, 16))


def test_settings_put_blobs_and_models_under_the_storage_url(tmp_path, s3):
    settings = Settings(home=str(tmp_path / "home"), storage_url=s3.url("shared/"))
    blobs, reg = blobs_from(settings), registry_from(settings)
    assert isinstance(blobs.objects, S3Objects) and blobs.objects.prefix == "shared/blobs"
    assert isinstance(reg.objects, S3Objects) and reg.objects.prefix == "shared/models"
    local = Settings(home=str(tmp_path / "home"))
    assert blobs_from(local).root == tmp_path / "home" / "blobs"
    assert registry_from(local).root == tmp_path / "home" / "models"


def test_a_storage_url_of_another_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ACTIVESTREAM_STORAGE_URL"):
        open_objects("ftp://host/x")
    assert isinstance(open_objects(f"file://{tmp_path}"), LocalObjects)


def test_a_worker_refuses_to_start_on_a_bucket_that_does_not_exist(tmp_path, s3):
    from activestream.streams.worker import Resources

    settings = Settings(home=str(tmp_path / "home"), storage_url=f"s3://{s3.name}-absent/loop")
    with pytest.raises(ConfigError, match="does not exist"):
        Resources(settings).open()
    Resources(Settings(home=str(tmp_path / "home"), storage_url=s3.url("loop"))).open()  # the real one: fine


def test_listing_versions_again_reads_only_metadata_that_changed(s3):
    reg = ModelRegistry(s3.url("m"), key=KEY)
    for seed in range(3):
        register(reg, seed)
    reads = []
    real_get = reg.objects.get
    reg.objects.get = lambda key: reads.append(key) or real_get(key)
    assert [v.version for v in reg.versions("clf")] == [1, 2, 3]
    assert len(reads) == 3
    reads.clear()
    assert [v.version for v in reg.versions("clf")] == [1, 2, 3] and reads == []  # one listing, no reads
    other = ModelRegistry(s3.url("m"), key=KEY)
    other.set_status("clf", 2, "promoted")  # another machine changes a status
    assert reg.latest("clf").version == 2 and reads == ["clf/000002/metadata.json"]
