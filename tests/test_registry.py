"""ModelRegistry: safetensors round trip, sha256 checks, safe version allocation, status,
sealed (checksummed, optionally signed) metadata."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import multiprocessing
from datetime import datetime

import numpy as np
import pytest

from activestream.config import Settings, registry_from
from activestream.errors import ConfigError, IntegrityError, InvalidInput, NotFound
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
    stored = json.loads((folder / "metadata.json").read_text())
    assert {k: v for k, v in stored.items() if k != "seal"} == mv.to_dict()
    canonical = json.dumps(mv.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert stored["seal"] == {"sha256": hashlib.sha256(canonical).hexdigest()}  # no key, no signature


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
    again = reg.set_status("clf", 1, "promoted", by="ann", reason="again")  # a decision, recorded even if the same
    assert again.status == before.status and again.history[:-1] == before.history
    assert again.history[-1]["by"] == "ann" and again.promotion == before.promotion + 1
    assert len(list((tmp_path / "models" / "clf" / "000001").iterdir())) == 2  # no temp files left


def test_unknown_status_is_refused(reg):
    register(reg)
    for call in (lambda: reg.set_status("clf", 1, "live"), lambda: reg.latest("clf", "live"),
                 lambda: register(reg, status="live")):
        with pytest.raises(InvalidInput, match="candidate, promoted, rejected, retired") as err:
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


# -- sealed metadata ------------------------------------------------------------------------

KEY_A, KEY_B = b"a" * 32, b"b" * 32


def meta_path(root, version: int):
    return root / "clf" / f"{version:06d}" / "metadata.json"


def edit_meta(root, version: int, **fields) -> dict:
    """Change fields of a version's metadata.json in place, as someone with a text editor would."""
    path = meta_path(root, version)
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
    return data


def promoted_and_rejected(reg) -> None:
    register(reg, status="promoted")
    register(reg, seed=1, status="rejected")


def test_corrupt_metadata_of_another_version_does_not_stop_listing(reg, tmp_path, caplog):
    promoted_and_rejected(reg)
    meta_path(tmp_path / "models", 2).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="activestream.storage.registry"):
        assert reg.latest("clf").version == 1
        assert reg.latest("clf", status=None).version == 1  # what label ingest asks
        assert [v.version for v in reg.versions("clf")] == [1]
    warnings = [r for r in caplog.records if "000002" in r.getMessage()]
    assert len(warnings) == 1, "one warning per bad file, not one per call"
    for call in (lambda: reg.get("clf", 2), lambda: reg.load("clf", 2)):
        with pytest.raises(IntegrityError, match="corrupt.*delete the version folder"):
            call()


def test_status_flipped_by_hand_is_never_served(reg, tmp_path):
    promoted_and_rejected(reg)
    edit_meta(tmp_path / "models", 2, status="promoted")
    assert reg.latest("clf", "promoted").version == 1
    with pytest.raises(IntegrityError, match="does not match its checksum"):
        reg.load("clf", 2)


def test_edited_metric_is_refused(reg, tmp_path):
    register(reg, status="promoted")
    edit_meta(tmp_path / "models", 1, metrics={"acc": 0.99})
    assert reg.versions("clf") == [] and reg.latest("clf") is None
    with pytest.raises(IntegrityError, match="checksum"):
        reg.get("clf", 1)


def test_metadata_without_a_seal_is_refused_until_vouched_for(reg, tmp_path):
    mv = register(reg, status="promoted")
    data = json.loads(meta_path(tmp_path / "models", 1).read_text())
    meta_path(tmp_path / "models", 1).write_text(json.dumps({k: v for k, v in data.items() if k != "seal"}))
    assert reg.latest("clf") is None
    with pytest.raises(IntegrityError, match=r"no checksum.*reseal\(name, version\)"):
        reg.load("clf", 1)
    assert reg.reseal("clf", 1) == mv and reg.latest("clf") == mv


def test_copied_metadata_is_refused(reg, tmp_path):
    register(reg, status="rejected")
    register(reg, status="promoted")
    root = tmp_path / "models"
    meta_path(root, 1).write_bytes(meta_path(root, 2).read_bytes())  # same weights, a promoted version's seal
    assert [v.version for v in reg.versions("clf")] == [2]
    with pytest.raises(IntegrityError, match="describes clf v2, not clf v1"):
        reg.get("clf", 1)


def test_a_key_signs_metadata_and_only_that_key_is_believed(tmp_path):
    root = tmp_path / "models"
    signed = ModelRegistry(root, key=KEY_A)
    mv = register(signed, status="promoted")
    stored = json.loads(meta_path(root, 1).read_text())
    canonical = json.dumps(mv.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert stored["seal"]["hmac_sha256"] == hmac.new(KEY_A, canonical, hashlib.sha256).hexdigest()
    assert signed.latest("clf") == mv and ModelRegistry(root, key=KEY_A.decode()).latest("clf") == mv
    other = ModelRegistry(root, key=KEY_B)
    assert other.latest("clf") is None
    with pytest.raises(IntegrityError, match="not signed with this registry's key"):
        other.load("clf", 1)
    assert ModelRegistry(root).latest("clf") == mv  # without a key, the checksum alone is checked


def test_with_a_key_a_recomputed_checksum_is_not_enough(tmp_path):
    root = tmp_path / "models"
    reg = ModelRegistry(root, key=KEY_A)
    promoted_and_rejected(reg)
    forged = edit_meta(root, 2, status="promoted")
    fields = {k: v for k, v in forged.items() if k != "seal"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    edit_meta(root, 2, seal={"sha256": digest, "hmac_sha256": forged["seal"]["hmac_sha256"]})
    assert reg.latest("clf").version == 1
    with pytest.raises(IntegrityError, match="key"):
        reg.load("clf", 2)
    unsigned = ModelRegistry(root)
    register(unsigned, seed=2, status="promoted")  # written without the key
    assert reg.latest("clf").version == 1
    with pytest.raises(IntegrityError, match="not signed"):
        reg.get("clf", 3)


def test_set_status_reseals_and_a_keyless_registry_cannot_strip_a_signature(tmp_path):
    root = tmp_path / "models"
    reg = ModelRegistry(root, key=KEY_A)
    register(reg, status="promoted")
    register(reg, status="candidate")
    assert reg.set_status("clf", 2, "promoted") == reg.latest("clf")
    with pytest.raises(ConfigError, match="signed.*key"):
        ModelRegistry(root).set_status("clf", 2, "rejected")
    assert reg.latest("clf").version == 2


def test_retired_is_a_status_and_never_promoted(reg):
    register(reg, status="promoted")
    register(reg, status="promoted")
    assert reg.set_status("clf", 2, "retired").status == "retired"  # a rollback
    assert reg.latest("clf").version == 1
    assert reg.latest("clf", "retired").version == 2
    assert register(reg, status="retired").status == "retired"


def test_registry_from_settings_reads_the_key_from_its_file(tmp_path):
    key_file = tmp_path / "model.key"
    key_file.write_bytes(KEY_A + b"\n")
    settings = Settings(home=str(tmp_path / "home"), model_key_file=str(key_file))
    reg = registry_from(settings)
    assert reg.key == KEY_A and reg.root == tmp_path / "home" / "models"
    assert registry_from(Settings(home=str(tmp_path))).key is None
    with pytest.raises(ConfigError, match="MODEL_KEY_FILE"):
        registry_from(Settings(home=str(tmp_path), model_key_file=str(tmp_path / "absent")))
    with pytest.raises(ConfigError, match="at least 16"):
        registry_from(Settings(home=str(tmp_path), model_key="short"))
    with pytest.raises(ConfigError, match="keep one"):
        registry_from(Settings(home=str(tmp_path), model_key_file=str(key_file), model_key=KEY_A.decode()))


def test_the_key_reaches_worker_processes_unmasked(tmp_path, monkeypatch):
    settings = Settings(home=str(tmp_path), model_key=KEY_B.decode())
    assert KEY_B.decode() not in repr(settings)  # logs and tracebacks show a mask
    env = settings.to_env()
    assert env["ACTIVESTREAM_MODEL_KEY"] == KEY_B.decode()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert registry_from(Settings()).key == KEY_B  # what a worker process rebuilds from its environment
