"""Interop against a real Label Studio, started once for this module on 127.0.0.1.

Label Studio lives in its own virtual environment (``make labelstudio`` creates
``.venv-labelstudio``); without it these tests are skipped. Our side is the real
labeling app served by uvicorn on 127.0.0.1, with labels produced to ``labels`` on
the embedded broker. Label Studio reaches our ML backend and webhook over HTTP, as
it would in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn

from activestream.labeling import studio_tasks
from activestream.labeling.app import create_app
from activestream.labeling.service import KafkaSink, LabelingService
from activestream.labeling.studio_client import StudioClient
from activestream.labeling.studio_io import export_tasks, import_labels
from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import decode_image, encode_png
from activestream.streams.broker import EmbeddedBroker, free_port
from activestream.streams.messages import LabelV1
from activestream.streams.topics import ensure_topics
from tests.conftest import make_settings
from tests.label_helpers import CLASSES, digit_images, make_requests

pytestmark = [pytest.mark.labelstudio, pytest.mark.kafka]
torch.set_num_threads(1)

LABEL_STUDIO = Path(os.environ.get("ACTIVESTREAM_TEST_LABEL_STUDIO",
                                   Path(__file__).resolve().parents[1] / ".venv-labelstudio" / "bin" / "label-studio"))
EMAIL, PASSWORD, TOKEN = "admin@example.com", "interop-pass-1", "interop-token-1"
BACKEND_USER, BACKEND_TOKEN = "studio", "backend-token-1"
START_TIMEOUT = 300.0  # measured 18 s on an idle machine; a busy 2-core one takes minutes


def studio_env(folder: Path, url: str | None = None) -> dict:
    env = {**os.environ, "HOME": str(folder), "LABEL_STUDIO_BASE_DATA_DIR": str(folder / "base"),
           "LABEL_STUDIO_USERNAME": EMAIL, "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
           "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}
    if url:
        env["LABEL_STUDIO_HOST"] = url  # the address it hands our ML backend in /setup (to ask for user emails)
    return {k: v for k, v in env.items() if not k.startswith("ACTIVESTREAM_")}


def initialised_data() -> Path | None:
    """A data folder that Label Studio's own ``init`` migrated and gave our user and token.

    A fresh folder spends most of Label Studio's first start on database migrations;
    starting from a copy of this one took about 10 s here instead of about 100. It is
    made once per installed Label Studio version, inside its virtual environment.
    """
    venv = LABEL_STUDIO.parents[1]
    dists = sorted(venv.glob("lib/python*/site-packages/label_studio-*.dist-info"))
    if not (venv / "pyvenv.cfg").is_file() or not dists:
        return None
    target = venv / "activestream-test-data" / dists[-1].name
    if (target / "base").is_dir():
        return target
    target.parent.mkdir(exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    cmd = [str(LABEL_STUDIO), "init", "--data-dir", str(build / "data"), "--enable-legacy-api-token",
           "--username", EMAIL, "--password", PASSWORD, "--user-token", TOKEN]
    with open(build / "init.log", "wb") as log:
        subprocess.run(cmd, env=studio_env(build), stdout=log, stderr=subprocess.STDOUT, check=True,
                       timeout=START_TIMEOUT)
    try:
        os.rename(build, target)
    except OSError:  # another test run made it first
        shutil.rmtree(build, ignore_errors=True)
    return target


class LabelStudio:
    """One Label Studio process in a temp folder, stopped by PID."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process_: subprocess.Popen | None = None

    def start(self) -> "LabelStudio":
        template = initialised_data()
        if template is not None:
            shutil.copytree(template / "base", self.folder / "base")
        cmd = [str(LABEL_STUDIO), "start", "--internal-host", "127.0.0.1", "--port", str(self.port), "--no-browser",
               "--data-dir", str(self.folder / "data"), "--enable-legacy-api-token"]
        with open(self.folder / "label-studio.log", "wb") as log:
            self.process_ = subprocess.Popen(cmd, env=studio_env(self.folder, self.url), stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        self._wait()
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process_.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.process_.returncode}: {self.log_tail()}")
            try:
                # Our token must work: a busy port makes Label Studio move silently to the
                # next one, and whatever answers on ours would not know this token.
                r = httpx.get(f"{self.url}/api/current-user/whoami", headers=self.headers, timeout=5)
                if r.status_code == 200 and r.json().get("email") == EMAIL:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise RuntimeError(f"Label Studio not ready on {self.url} after {START_TIMEOUT:.0f} s: {self.log_tail()}")

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Token {TOKEN}"}

    def log_tail(self) -> str:
        return (self.folder / "label-studio.log").read_bytes()[-3000:].decode(errors="replace")

    def stop(self) -> None:
        if self.process_ is None or self.process_.poll() is not None:
            return
        os.killpg(self.process_.pid, signal.SIGTERM)  # its own session: the server and its children
        try:
            self.process_.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process_.pid, signal.SIGKILL)
            self.process_.wait(10)


class Ours:
    """The labeling app on uvicorn in a thread, labels to the embedded broker."""

    def __init__(self, folder: Path, bootstrap: str, studio_url: str):
        settings = make_settings(folder, bootstrap=bootstrap, label_studio_urls=studio_url)  # /setup comes from it
        ensure_topics(settings, bootstrap)
        self.sink = KafkaSink(bootstrap, settings.topic_labels)
        self.service = LabelingService.open(settings, self.sink)
        self.service.queue.set_token(BACKEND_USER, BACKEND_TOKEN, now=time.time())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.service), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "Ours":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the labeling app did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sink.close()
        self.service.close()


def promote_classifier(service: LabelingService, seed: int) -> Classifier:
    """A real (untrained) network registered as the newest promoted version: the one that serves."""
    spec = ModelSpec("small_cnn", tuple(CLASSES), 1, 8, 8)
    clf = Classifier.fresh(spec, seed=seed)
    meta = service.registry.register(service.settings.model_name, state_arrays(clf.model), spec=spec.to_dict(),
                                     parent=None, train_size=0, metrics={}, status="promoted")
    clf.version = meta.version
    return clf


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    if not LABEL_STUDIO.is_file():
        pytest.skip(f"Label Studio is not installed at {LABEL_STUDIO}: run `make labelstudio`")
    ls = LabelStudio(tmp_path_factory.mktemp("label-studio"))
    try:
        yield ls.start()
    finally:
        ls.stop()


@pytest.fixture(scope="module")
def ours(tmp_path_factory, studio):
    with EmbeddedBroker() as broker:
        app = Ours(tmp_path_factory.mktemp("ours"), broker.bootstrap, studio.url)
        promote_classifier(app.service, seed=1)
        app.service.enqueue(make_requests(app.service, 12))
        app.tasks = export_tasks(app.service)  # taken once: each test labels its own items
        app.start()
        try:
            yield app
        finally:
            app.stop()


@pytest.fixture
def api(studio):
    with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=120) as client:
        yield client


def new_project(api: httpx.Client, tasks: list[dict]) -> tuple[int, list[dict]]:
    """A Label Studio project with our labeling config and ``tasks`` imported; returns its id and tasks."""
    project = api.post("/api/projects", json={"title": f"activestream {time.monotonic_ns()}",
                                              "label_config": studio_tasks.label_config(CLASSES)})
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    imported = api.post(f"/api/projects/{pid}/import", json=tasks)
    assert imported.status_code == 201, imported.text
    assert imported.json()["task_count"] == len(tasks) and imported.json()["prediction_count"] == len(tasks)
    return pid, api.get("/api/tasks", params={"project": pid, "page_size": 100}).json()["tasks"]


def annotate(api: httpx.Client, task_id: int, class_name: str) -> dict:
    r = api.post(f"/api/tasks/{task_id}/annotations", json={"result": [studio_tasks.choice_result(class_name)]})
    assert r.status_code == 201, r.text
    return r.json()


def labels_on_topic(ours: Ours, item_ids: set[str], expect: int, timeout: float = 30.0) -> list[LabelV1]:
    """Messages on ``labels`` about these items, in topic order: read until ``expect`` of them
    have arrived and a further poll finds nothing more (so extra ones would show)."""
    from kafka import KafkaConsumer, TopicPartition

    settings = ours.service.settings
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    partition = TopicPartition(settings.topic_labels, 0)  # labels has one partition
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    found: list[LabelV1] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = [r for records in consumer.poll(timeout_ms=1000).values() for r in records]
            found += [m for m in (LabelV1.model_validate_json(r.value) for r in batch) if m.id in item_ids]
            if not batch and len(found) >= expect:
                break
    finally:
        consumer.close()
    return found


def by_item(tasks: list[dict]) -> dict[str, dict]:
    return {t["data"]["activestream_id"]: t for t in tasks}


def test_exported_tasks_import_with_their_images_ids_and_predictions(api, ours):
    sent = ours.tasks[:3]
    pid, tasks = new_project(api, sent)
    assert by_item(tasks).keys() == by_item(sent).keys()
    for task in tasks:
        mine = by_item(sent)[task["data"]["activestream_id"]]
        assert task["data"]["image"] == mine["data"]["image"]
    predictions = api.get("/api/predictions", params={"project": pid}).json()
    assert len(predictions) == 3
    got = {p["task"]: p for p in predictions}
    for task in tasks:
        pred, (want,) = got[task["id"]], by_item(sent)[task["data"]["activestream_id"]]["predictions"]
        assert (pred["model_version"], pred["result"]) == (want["model_version"], want["result"])
        assert pred["score"] == pytest.approx(want["score"])


def test_annotations_come_back_through_the_json_export(api, ours, studio):
    sent = ours.tasks[3:6]
    pid, tasks = new_project(api, sent)
    chosen = {t["data"]["activestream_id"]: CLASSES[(i * 3 + 1) % len(CLASSES)] for i, t in enumerate(tasks[:2])}
    for task in tasks[:2]:
        annotate(api, task["id"], chosen[task["data"]["activestream_id"]])

    # the plain export names users by id: resolved through Label Studio's users API
    plain = api.get(f"/api/projects/{pid}/export", params={"exportType": "JSON"}).json()
    assert len(plain) == 2 and all(isinstance(a["completed_by"], int) for t in plain for a in t["annotations"])
    report = import_labels(ours.service, plain, StudioClient(studio.url, TOKEN).user_email)
    labeler = "labelstudio.admin_at_example.com"
    assert {(lab.item_id, CLASSES[lab.label], lab.labeler) for lab in report.labels} == {
        (item, name, labeler) for item, name in chosen.items()}
    for item, name in chosen.items():
        assert [(lab.labeler, CLASSES[lab.label]) for lab in ours.service.store.labels_for(item)] == [(labeler, name)]
    assert {(m.id, CLASSES[m.label], m.labeler, m.kind) for m in labels_on_topic(ours, set(chosen), 2)} == {
        (item, name, labeler, "human") for item, name in chosen.items()}

    # an export snapshot with users expanded gives emails directly; the same labels again change nothing
    snap = api.post(f"/api/projects/{pid}/exports", json={
        "serialization_options": {"annotations__completed_by": {"only_id": False}}})
    assert snap.status_code == 201, snap.text
    body = api.get(f"/api/projects/{pid}/exports/{snap.json()['id']}/download", params={"exportType": "JSON"}).json()
    assert {a["completed_by"]["email"] for t in body for a in t["annotations"]} == {EMAIL}
    again = import_labels(ours.service, body)
    assert {(lab.item_id, CLASSES[lab.label]) for lab in again.labels} == set(chosen.items())
    assert len(labels_on_topic(ours, set(chosen), 2)) == 2


def test_ml_backend_serves_predictions_and_turns_annotation_events_into_labels(api, ours, studio):
    sent = ours.tasks[6:9]
    pid, tasks = new_project(api, sent)  # with the predictions of the version that picked them (v1)
    # and an image uploaded to Label Studio itself: not ours, fetched from Label Studio to predict
    upload = encode_png(digit_images(1, seed=5)[0][0])
    r = api.post(f"/api/projects/{pid}/import", files={"file": ("digit.png", upload, "image/png")})
    assert r.status_code == 201 and r.json()["task_count"] == 1, r.text
    tasks = api.get("/api/tasks", params={"project": pid, "page_size": 100}).json()["tasks"]
    (uploaded,) = [t for t in tasks if "activestream_id" not in t["data"]]
    assert uploaded["data"]["image"].startswith("/data/upload/")
    serving = promote_classifier(ours.service, seed=2)
    assert serving.version == 2

    client = StudioClient(studio.url, TOKEN)
    client.connect_backend(pid, f"{ours.url}/ml-backend", BACKEND_USER, BACKEND_TOKEN)

    # Label Studio asks /predict for every task without a prediction of the backend's version
    r = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                 json={"selectedItems": {"all": True, "excluded": []}})
    assert r.status_code == 200, r.text
    fresh = {p["task"]: p for p in api.get("/api/predictions", params={"project": pid}).json()
             if p["model_version"] == "2"}
    assert set(fresh) == {t["id"] for t in tasks}
    for task in tasks:
        png = upload if task is uploaded else ours.service.image_png(task["data"]["activestream_id"])
        p = serving.predict_proba(decode_image(png, serving.spec)[None])[0]
        assert fresh[task["id"]]["result"] == [studio_tasks.choice_result(CLASSES[int(np.argmax(p))])]
        assert fresh[task["id"]]["score"] == pytest.approx(float(p.max()), rel=1e-4)

    # an annotation made in Label Studio arrives through the webhook, and so does its update
    task = next(t for t in tasks if t is not uploaded)
    item = task["data"]["activestream_id"]
    annotation = annotate(api, task["id"], "7")
    wait_for(lambda: [lab.label for lab in ours.service.store.labels_for(item)] == [7], "ANNOTATION_CREATED label")
    r = api.patch(f"/api/annotations/{annotation['id']}", json={"result": [studio_tasks.choice_result("2")]})
    assert r.status_code == 200, r.text
    wait_for(lambda: [lab.label for lab in ours.service.store.labels_for(item)] == [2], "ANNOTATION_UPDATED label")
    assert [(m.label, m.labeler) for m in labels_on_topic(ours, {item}, 2)] == [
        (7, "labelstudio.admin_at_example.com"), (2, "labelstudio.admin_at_example.com")]


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for the {what}"
        time.sleep(0.2)
