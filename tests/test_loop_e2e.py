"""The whole loop on the embedded broker over Fashion-MNIST, as `activestream run` runs it."""

from __future__ import annotations

import asyncio

import pytest

from activestream.config import registry_from
from activestream.learners.classifier import Classifier
from activestream.learners.models import ModelSpec
from activestream.run import run_loop
from tests.conftest import make_settings, run_async

pytestmark = pytest.mark.kafka


def test_loop_serves_better_versions(tmp_path, fashion):
    settings = make_settings(
        tmp_path, dataset="fashion-mnist", images=20_000, rate=300, seed_size=500, budget=0.05,
        retrain_every=150, label_delay=0.2, threads=0,
    )
    observer, demo = run_async(run_loop(settings, asyncio.Event(), timeout=420), timeout=600)
    seen = observer.seen

    assert len(demo.produced) == 20_000
    missing = set(demo.produced) - seen.predicted.keys()
    assert not missing, f"{len(missing)} images without a prediction, e.g. {sorted(missing)[:3]}"

    registry = registry_from(settings)
    known = {m.version for m in registry.versions(settings.model_name)}
    assert set(seen.versions_served) <= known, "a prediction names a version the registry does not hold"
    served = sorted(seen.versions_served)
    assert len(served) >= 3, f"only versions {served} served predictions"

    share = len(seen.requested.keys() & set(demo.produced)) / len(demo.produced)
    assert abs(share - settings.budget) <= 0.2 * settings.budget, f"selected share {share:.4f}"

    def test_accuracy(version: int) -> float:
        arrays, meta = registry.load(settings.model_name, version)
        clf = Classifier.from_arrays(ModelSpec.from_dict(meta.spec), arrays, version)
        return clf.accuracy(fashion.test_x, fashion.test_y)

    seed_acc = test_accuracy(demo.seed_version)
    last = registry.latest(settings.model_name, status="promoted").version
    last_acc = test_accuracy(last)
    print(f"\nseed v{demo.seed_version} test accuracy {seed_acc:.4f}; last v{last} test accuracy {last_acc:.4f}; "
          f"served {served}; selected share {share:.4f}")
    assert last_acc > seed_acc
