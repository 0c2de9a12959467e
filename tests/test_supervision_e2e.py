"""A supervised worker that dies is started again; one that refuses its configuration is not;
every worker answers health, readiness and metrics probes."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

import pytest

from activestream.errors import ConfigError
from activestream.streams.broker import free_port
from activestream.streams.cluster import LocalCluster
from tests.conftest import make_settings

pytestmark = pytest.mark.kafka


def wait_exit(proc, timeout: float = 120.0) -> int:
    return proc.wait(timeout)


def test_a_killed_worker_is_restarted_after_its_backoff(tmp_path, broker):
    settings = make_settings(tmp_path, bootstrap=broker.bootstrap)
    with LocalCluster(settings, workers=("ingest",)) as cluster:
        first = cluster.procs_["ingest"]
        cluster.kill_worker("ingest", signal.SIGKILL)
        now = time.monotonic()
        assert cluster.supervise(now) == [f"worker ingest exited with code {-signal.SIGKILL}; restarting in 1 s"]
        assert cluster.supervise(now + 0.5) == [] and cluster.procs_["ingest"] is first  # still backing off
        assert cluster.supervise(now + 1.0) == ["worker ingest restarted (restart 1)"]
        assert cluster.procs_["ingest"] is not first and cluster.procs_["ingest"].poll() is None
        cluster.kill_worker("ingest", signal.SIGKILL)
        now = time.monotonic()
        assert "restarting in 2 s" in cluster.supervise(now)[0]  # the backoff doubles


def test_a_worker_that_refuses_its_configuration_stops_the_run(tmp_path, broker):
    settings = make_settings(tmp_path, bootstrap=broker.bootstrap)
    cluster = LocalCluster(settings, workers=())
    cluster.start()
    try:
        proc = cluster.start_worker("learner", 2)  # the learner runs as one process
        assert wait_exit(proc) == 2
        with pytest.raises(ConfigError, match="refuses its configuration"):
            cluster.supervise()
    finally:
        cluster.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_every_worker_answers_health_readiness_and_metrics(tmp_path, broker):
    port = free_port()
    settings = make_settings(tmp_path, bootstrap=broker.bootstrap, metrics_port=port)
    with LocalCluster(settings, workers=("selector", "ingest")) as cluster:
        for name, offset in (("selector", 1), ("ingest", 2)):
            base = f"http://127.0.0.1:{port + offset}"
            deadline = time.monotonic() + 180
            while True:  # started, and ready once it consumes
                assert cluster.procs_[name].poll() is None, f"{name} exited"
                try:
                    if get(f"{base}/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"{name} never became ready"
                time.sleep(0.5)
            assert get(f"{base}/healthz") == (200, "ok\n")
            status, text = get(f"{base}/metrics")
            assert status == 200 and "activestream_handler_errors_total" in text


def test_a_new_embedded_broker_forgets_the_stream_positions_a_reused_home_kept(tmp_path):
    """The embedded broker keeps its topics in memory: offsets start at 0 again, and
    positions kept from the last run would have the selector skip the new images."""
    from activestream.storage.checkpoints import Checkpoint
    from activestream.storage.store import SampleStore

    settings = make_settings(tmp_path)
    store = SampleStore(settings.store)
    store.create_schema()
    kept = {("predictions", 0): 5000}
    store.add_samples([], Checkpoint("k", b"", settings.group("selector"), kept))
    store.add_samples([], Checkpoint("other", b"", "elsewhere.selector", kept))
    with LocalCluster(settings, workers=()):
        assert store.positions(settings.group("selector"), kept) == {}
        assert store.positions("elsewhere.selector", kept) == kept  # another deployment's groups stay
