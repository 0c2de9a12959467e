"""ModelRegistry: safetensors round trip, sha256 checks, safe version allocation, status."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from datetime import datetime

import numpy as np
import pytest

from activestream.errors import IntegrityError, InvalidInput, NotFound
from activestream.storage.registry import ModelRegistry, ModelVersion

SPEC = {"arch": "small_cnn", "classes": ["cat", "dog"], "input_shape": [3, 32, 32],
        "normalisation": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "fc.index": np.arange(10, dtype=np.int64).reshape(2, 5),
    }


def register(reg: ModelRegistry, name: str = "clf", seed: int = 0, **kw) -> ModelVersion:
    args = dict(spec=SPEC, parent=None, train_size=100, metrics={"acc": 0.75})
    return reg.register(name, weights(seed), **{**args, **kw})


@pytest.fixture
def reg(tmp_path):
    return ModelRegistry(tmp_path / "models")


def test_round_trip_float32_and_int64(reg):
    mv = register(reg, metrics={"acc": 0.75, "loss": 1}, train_size=123)
    tensors, meta = reg.load("clf", mv.version)
    expected = weights()
    assert tensors.keys() == expected.keys()
    for key, array in expected.items():
        assert tensors[key].dtype == array.dtype
        np.testing.assert_array_equal(tensors[key], array)
    assert meta == mv
    assert (mv.name, mv.version, mv.parent, mv.train_size, mv.status) == ("clf", 1, None, 123, "candidate")
    assert mv.metrics == {"acc": 0.75, "loss": 1.0}
    assert mv.spec == SPEC
    assert datetime.fromisoformat(mv.created).utcoffset().total_seconds() == 0


def test_layout_uri_and_plain_json_metadata(reg, tmp_path):
    mv = register(reg)
    folder = tmp_path / "models" / "clf" / "000001"
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.safetensors"]
    assert mv.uri == (folder / "model.safetensors").resolve().as_uri()
    assert json.loads((folder / "metadata.json").read_text()) == mv.to_dict()


def test_non_contiguous_arrays_are_stored(reg):
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T
    mv = reg.register("clf", {"w": array}, spec={}, parent=None, train_size=0, metrics={})
    np.testing.assert_array_equal(reg.load("clf", mv.version)[0]["w"], array)


def test_versions_increment_per_name_and_record_parent(reg):
    assert [register(reg).version for _ in range(3)] == [1, 2, 3]
    assert register(reg, name="other").version == 1
    child = register(reg, parent=3)
    assert (child.version, child.parent) == (4, 3)
    assert [v.version for v in reg.versions("clf")] == [1, 2, 3, 4]
    assert reg.versions("unknown") == []


def test_flipped_byte_is_detected_before_loading(reg, tmp_path):
    mv = register(reg)
    path = tmp_path / "models" / "clf" / "000001" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        reg.load("clf", 1)
    message = str(err.value)
    assert str(path) in message and mv.sha256 in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message


def test_missing_weights_or_corrupt_metadata_are_integrity_errors(reg, tmp_path):
    register(reg)
    register(reg)
    (tmp_path / "models" / "clf" / "000001" / "model.safetensors").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        reg.load("clf", 1)
    (tmp_path / "models" / "clf" / "000002" / "metadata.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="corrupt"):
        reg.get("clf", 2)


def test_incomplete_version_dir_is_ignored_and_never_reused(reg, tmp_path):
    register(reg)
    (tmp_path / "models" / "clf" / "000002").mkdir()
    (tmp_path / "models" / "clf" / "000002" / "model.safetensors").write_bytes(b"half")
    assert [v.version for v in reg.versions("clf")] == [1]
    assert reg.latest("clf", status=None).version == 1
    with pytest.raises(NotFound):
        reg.get("clf", 2)
    assert register(reg).version == 3


def test_get_missing_version_is_not_found(reg):
    register(reg)
    with pytest.raises(NotFound, match=r"no version 9 .*complete versions: \[1\]"):
        reg.get("clf", 9)
    with pytest.raises(NotFound):
        reg.load("nope", 1)


def test_latest_and_set_status(reg, tmp_path):
    assert reg.latest("clf") is None
    register(reg)
    register(reg)
    assert reg.latest("clf") is None
    assert reg.latest("clf", status=None).version == 2
    promoted = reg.set_status("clf", 1, "promoted")
    assert promoted.status == "promoted" and reg.get("clf", 1) == promoted
    assert reg.latest("clf").version == 1
    reg.set_status("clf", 2, "rejected")
    assert reg.latest("clf", "rejected").version == 2
    assert reg.latest("clf", "candidate") is None
    before = reg.get("clf", 1)
    assert reg.set_status("clf", 1, "promoted") == before
    assert len(list((tmp_path / "models" / "clf" / "000001").iterdir())) == 2  # no temp files left


def test_unknown_status_is_refused(reg):
    register(reg)
    for call in (lambda: reg.set_status("clf", 1, "live"), lambda: reg.latest("clf", "live"),
                 lambda: register(reg, status="live")):
        with pytest.raises(InvalidInput, match="candidate, promoted, rejected") as err:
            call()
        assert err.value.kind == "bad_status"
    with pytest.raises(NotFound):
        reg.set_status("clf", 5, "promoted")


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 201])
def test_bad_model_names_are_refused(reg, name):
    with pytest.raises(InvalidInput) as err:
        register(reg, name=name)
    assert err.value.kind == "bad_key"


def test_bad_tensors_spec_and_version_are_refused(reg, tmp_path):
    with pytest.raises(InvalidInput, match="numpy.ndarray"):
        reg.register("clf", {"w": [1.0, 2.0]}, spec={}, parent=None, train_size=0, metrics={})
    with pytest.raises(InvalidInput, match="JSON"):
        register(reg, spec={"f": object()})
    with pytest.raises(InvalidInput, match="version"):
        reg.get("clf", 0)
    assert not (tmp_path / "models" / "clf").exists() or reg.versions("clf") == []


def test_init_does_no_io(tmp_path):
    root = tmp_path / "absent"
    reg = ModelRegistry(root)
    assert reg.root == root and reg.versions("clf") == [] and not root.exists()


def test_model_version_dict_round_trip_and_missing_field():
    mv = ModelVersion("m", 1, None, "2024-01-01T00:00:00+00:00", 1, {}, "0" * 64, {}, "candidate", "file:///x")
    assert ModelVersion.from_dict(json.loads(json.dumps(mv.to_dict()))) == mv
    with pytest.raises(InvalidInput, match="sha256"):
        ModelVersion.from_dict({k: v for k, v in mv.to_dict().items() if k != "sha256"})


def _register_five(root: str, seed: int, barrier) -> None:
    reg = ModelRegistry(root)
    barrier.wait()
    for _ in range(5):
        register(reg, seed=seed)


def test_concurrent_registration_allocates_unique_versions(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_register_five, args=(str(tmp_path), seed, barrier)) for seed in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    reg = ModelRegistry(tmp_path)
    versions = reg.versions("clf")
    assert [v.version for v in versions] == list(range(1, 11))
    for v in versions:  # every version holds its own, intact weights
        tensors, _ = reg.load("clf", v.version)
        assert tensors["conv.weight"].shape == (4, 3, 3, 3)
    assert len({v.sha256 for v in versions}) == 2  # two seeds, two distinct weight sets
    assert len({v.uri for v in versions}) == 10
