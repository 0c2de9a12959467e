"""The version in force and the operator's decisions: promote, roll back, retire, each recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from activestream.errors import ConfigError, IntegrityError
from activestream.storage.decisions import in_force, promote, retire, rollback
from activestream.storage.registry import ModelRegistry
from activestream.streams.serving import ServingModel
from tests.conftest import run_async

KEY = b"k" * 32


@pytest.fixture
def reg(tmp_path):
    return ModelRegistry(tmp_path / "models", key=KEY)


def register(reg: ModelRegistry, status: str = "promoted", **kw) -> int:
    return reg.register("clf", {"w": np.ones(2, np.float32)}, spec={}, parent=None, train_size=0, metrics={},
                        status=status, **kw).version


def versions(reg: ModelRegistry, *statuses: str) -> list[int]:
    return [register(reg, s) for s in statuses]


def test_in_force_is_the_version_promoted_last_not_the_newest(reg):
    assert in_force(reg, "clf") is None
    versions(reg, "promoted", "promoted", "candidate", "rejected")
    assert in_force(reg, "clf").version == 2
    promote(reg, "clf", 1, by="ann", reason="v2 is worse on night images")
    assert in_force(reg, "clf").version == 1
    assert register(reg, "promoted") == 5  # the learner promotes a new round: it goes into force
    assert in_force(reg, "clf").version == 5


def test_metadata_sealed_before_histories_keeps_its_seal_and_orders_by_version(reg, tmp_path):
    versions(reg, "promoted", "promoted")
    for v in (1, 2):  # as written before versions had a history
        path = Path(reg.root) / "clf" / f"{v:06d}" / "metadata.json"
        data = json.loads(path.read_text())
        del data["history"]
        path.write_text(json.dumps(data))
        reg.reseal("clf", v)
    assert [mv.history for mv in reg.versions("clf")] == [(), ()]
    assert in_force(reg, "clf").version == 2
    promote(reg, "clf", 1, by="ann", reason="back to v1")
    assert in_force(reg, "clf").version == 1


def test_every_decision_records_who_and_why_and_is_sealed(reg):
    versions(reg, "promoted", "candidate")
    promote(reg, "clf", 2, by="ann", reason="better on the audit set")
    last = reg.get("clf", 2).history[-1]
    assert (last["status"], last["by"], last["reason"]) == ("promoted", "ann", "better on the audit set")
    assert [e["status"] for e in reg.get("clf", 2).history] == ["candidate", "promoted"]
    path = Path(reg.root) / "clf" / "000002" / "metadata.json"
    data = json.loads(path.read_text())
    data["history"][-1]["by"] = "mallory"  # rewriting who decided breaks the seal
    path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match="checksum"):
        reg.get("clf", 2)


def test_rollback_retires_the_version_in_force_and_returns_to_the_one_before(reg):
    versions(reg, "promoted", "promoted", "rejected", "promoted")
    now = rollback(reg, "clf", by="ann", reason="v4 mislabels trucks")
    assert now.version == 2 and in_force(reg, "clf").version == 2
    assert reg.get("clf", 4).status == "retired"
    assert reg.get("clf", 4).history[-1]["reason"] == "rolled back to v2: v4 mislabels trucks"
    assert rollback(reg, "clf", by="ann", reason="again").version == 1


def test_rollback_to_a_version_retires_every_one_promoted_after_it(reg):
    versions(reg, "promoted", "promoted", "promoted")
    assert rollback(reg, "clf", by="ann", reason="both bad", to=1).version == 1
    assert [mv.status for mv in reg.versions("clf")] == ["promoted", "retired", "retired"]


@pytest.mark.parametrize("to, words", [(3, "already in force"), (2, "rejected.*promote 2"), (9, "no version 9")])
def test_rollback_refuses_what_it_cannot_return_to(reg, to, words):
    versions(reg, "promoted", "rejected", "promoted")
    with pytest.raises(ConfigError, match=words):
        rollback(reg, "clf", by="ann", reason="x", to=to)
    assert in_force(reg, "clf").version == 3


def test_nothing_to_roll_back_to_is_a_clear_error(reg):
    with pytest.raises(ConfigError, match="no version in force"):
        rollback(reg, "clf", by="ann", reason="x")
    versions(reg, "promoted", "candidate")
    with pytest.raises(ConfigError, match="only promoted version.*promote an older one"):
        rollback(reg, "clf", by="ann", reason="x")


@pytest.mark.parametrize("status", ["rejected", "retired"])
def test_a_withdrawn_version_is_promoted_only_with_force(reg, status):
    versions(reg, "promoted", status)
    with pytest.raises(ConfigError, match=f"v2 is {status}.*--force"):
        promote(reg, "clf", 2, by="ann", reason="x")
    assert in_force(reg, "clf").version == 1
    assert promote(reg, "clf", 2, by="ann", reason="checked by hand", force=True).status == "promoted"
    assert in_force(reg, "clf").version == 2


def test_retire_withdraws_a_version_and_never_the_last_one(reg):
    versions(reg, "promoted", "promoted", "candidate")
    retire(reg, "clf", 3, by="ann", reason="trained on leaked labels")
    assert reg.get("clf", 3).status == "retired" and in_force(reg, "clf").version == 2
    retire(reg, "clf", 2, by="ann", reason="drifts")
    assert in_force(reg, "clf").version == 1
    with pytest.raises(ConfigError, match="only promoted version.*promote another"):
        retire(reg, "clf", 1, by="ann", reason="x")


def test_predictors_follow_a_rollback_and_never_serve_a_withdrawn_version(reg):
    from activestream.learners.classifier import Classifier, state_arrays
    from activestream.learners.models import ModelSpec

    spec = ModelSpec("small_cnn", tuple("abc"), 1, 8, 8)
    for seed in (1, 2):
        reg.register("clf", state_arrays(Classifier.fresh(spec, seed=seed).model), spec=spec.to_dict(), parent=None,
                     train_size=0, metrics={}, status="promoted")
    serving = ServingModel(reg, "clf")
    run_async(serving.refresh())
    assert serving.current.version == 2
    rollback(reg, "clf", by="ann", reason="x")
    run_async(serving.refresh(announced=1))
    assert serving.current.version == 1
    run_async(serving.refresh(announced=2))  # a stale or replayed announcement of v2 changes nothing
    assert serving.current.version == 1
