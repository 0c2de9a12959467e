"""Worker start-up refuses settings it cannot honour, before touching the broker."""

from __future__ import annotations

import pytest

from activestream.errors import ConfigError
from activestream.streams.worker import run_worker
from tests.conftest import make_settings


@pytest.mark.parametrize("name, instance, words", [
    ("painter", 1, "unknown worker"),
    ("learner", 2, "only the predictor, selector, ingest"),
    ("predictor", 0, "numbered from 1"),
])
def test_run_worker_rejects_what_it_cannot_run(tmp_path, name, instance, words):
    settings = make_settings(tmp_path, bootstrap="127.0.0.1:1")
    with pytest.raises(ConfigError, match=words):
        run_worker(name, settings, instance)


def test_run_worker_needs_a_broker(tmp_path):
    with pytest.raises(ConfigError, match="ACTIVESTREAM_BOOTSTRAP"):
        run_worker("predictor", make_settings(tmp_path))
