"""Label Studio interop without Label Studio: task export, JSON-export import, the ML-backend endpoints.

The same paths against a real Label Studio are in ``test_label_studio_live.py``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import given, strategies as st

from activestream.errors import InvalidInput
from activestream.labeling import studio_tasks
from activestream.labeling.app import create_app
from activestream.labeling.service import check_name
from activestream.labeling.studio_backend import StudioBackend
from activestream.labeling.studio_io import export_tasks, import_labels
from activestream.learners.preprocess import decode_image
from tests.label_helpers import CLASSES, FakeLabelStudio, make_requests, make_service, register_classifier
from tests.conftest import make_settings

torch.set_num_threads(1)


@pytest.fixture
def studio():
    """The project's Label Studio: user 7 is dee, user 8 is bo."""
    fake = FakeLabelStudio(users={7: "dee@example.com", 8: "bo@example.com"})
    yield fake
    fake.stop()


@pytest.fixture
def service(tmp_path, studio):
    svc = make_service(make_settings(tmp_path, label_studio_urls=studio.url))
    svc.enqueue(make_requests(svc, 6))
    yield svc
    svc.close()


def annotate(task: dict, task_id: int, *annotations: tuple[int, object, str]) -> dict:
    """``task`` as Label Studio exports it, with annotations ``(annotation id, completed_by, class name)``."""
    return {**task, "id": task_id, "annotations": [
        {"id": aid, "completed_by": who, "was_cancelled": False,
         "result": [studio_tasks.choice_result(name)]} for aid, who, name in annotations]}


def ann(email: str, user_id: int = 7) -> dict:
    return {"id": user_id, "email": email, "first_name": "", "last_name": ""}


# -- formats -----------------------------------------------------------------------------------

def test_label_config_is_xml_naming_every_class_in_index_order():
    classes = ["T-shirt/top", "a & b", 'say "x"', "<odd>"]
    root = ET.fromstring(studio_tasks.label_config(classes))
    image, choices = root.find("Image"), root.find("Choices")
    assert image.get("name") == choices.get("toName") == studio_tasks.TO_NAME
    assert choices.get("name") == studio_tasks.FROM_NAME
    assert [c.get("value") for c in choices.findall("Choice")] == classes


@given(st.text(min_size=1, max_size=200))
def test_labeler_names_are_valid_labeler_names(user):
    assert check_name(studio_tasks.labeler_name(user)).startswith(("labelstudio.", "labelstudio-"))


# small alphabets around "@" and "_" find the near misses of an escaping scheme
users = st.one_of(st.text(min_size=1, max_size=80), st.text(alphabet="_at@.-x", min_size=1, max_size=12))


@given(users, users)
def test_different_users_get_different_labeler_names(a, b):
    if a != b:
        assert studio_tasks.labeler_name(a) != studio_tasks.labeler_name(b)


def test_export_carries_image_id_and_the_picking_versions_guess(service):
    tasks = export_tasks(service)
    items = service.pending(100)
    assert [t["data"]["activestream_id"] for t in tasks] == [i.id for i in items] and len(tasks) == 6
    for task, item in zip(tasks, items):
        png = studio_tasks.image_from_uri(task["data"]["image"])
        assert png == service.image_png(item.id)
        (pred,) = task["predictions"]
        best, p = item.top[0]
        assert pred["model_version"] == str(item.version)
        assert pred["score"] == pytest.approx(p)
        assert pred["result"] == [studio_tasks.choice_result(CLASSES[best])]
        assert set(task["data"]) == {"image", "activestream_id"}     # why it was picked is not shown


# -- the JSON export back in -------------------------------------------------------------------

def single(service, tasks: list[dict]) -> list[dict]:
    """The tasks whose items want one label (a stable few want a second labeler)."""
    return [t for t in tasks if service.item(t["data"]["activestream_id"]).wanted == 1]


def test_import_records_labels_once_and_a_users_newer_annotation_wins(service):
    tasks = single(service, export_tasks(service))
    a, b, c = (t["data"]["activestream_id"] for t in tasks[:3])
    export = [annotate(tasks[0], 1, (10, ann("ann@example.com"), "3")),
              annotate(tasks[1], 2, (11, ann("ann@example.com"), "4")),
              annotate(tasks[2], 3, (12, ann("bo@example.com", 8), "5"))]
    report = import_labels(service, export)
    assert [(lab.item_id, lab.label, lab.labeler) for lab in report.labels] == [
        (a, 3, "labelstudio.ann_at_example.com"), (b, 4, "labelstudio.ann_at_example.com"),
        (c, 5, "labelstudio.bo_at_example.com")]
    sent = [(m.id, m.label, m.labeler, m.kind) for m in service.producer.sent]
    assert sent == [(lab.item_id, lab.label, lab.labeler, "human") for lab in report.labels]
    assert [(lab.labeler, lab.label) for lab in service.store.labels_for(c)] == [("labelstudio.bo_at_example.com", 5)]

    import_labels(service, export)  # the same export again: nothing new
    assert len(service.producer.sent) == 3

    # ann changed her mind in a newer annotation of the first task: hers is replaced, not added
    import_labels(service, [annotate(tasks[0], 1, (10, ann("ann@example.com"), "3"), (20, ann("ann@example.com"), "8"))])
    assert [(lab.labeler, lab.label) for lab in service.store.labels_for(a)] == [("labelstudio.ann_at_example.com", 8)]


def test_the_queue_still_decides_how_many_labelers_an_item_gets(service):
    task = single(service, export_tasks(service))[0]
    report = import_labels(service, [annotate(task, 1, (10, ann("ann@example.com"), "3"), (11, ann("bo@x.org", 8), "4"))])
    assert [lab.labeler for lab in report.labels] == ["labelstudio.ann_at_example.com"]
    assert report.skipped["queue_refused"] == 1 and len(service.producer.sent) == 1


def test_import_passes_over_skipped_empty_and_foreign_tasks(service):
    tasks = export_tasks(service)
    skipped = annotate(tasks[0], 1, (10, ann("ann@example.com"), "3"))
    skipped["annotations"][0]["was_cancelled"] = True
    empty = {**tasks[1], "id": 2, "annotations": [{"id": 11, "completed_by": ann("a@b.c"), "result": []}]}
    foreign = {"id": 3, "data": {"image": "https://example.com/x.png"},
               "annotations": [{"id": 12, "completed_by": ann("a@b.c"), "result": [studio_tasks.choice_result("1")]}]}
    report = import_labels(service, [skipped, empty, foreign])
    assert report.labels == [] and service.producer.sent == []
    assert dict(report.skipped) == {"skipped": 1, "empty": 1, "not_ours": 1}


@pytest.mark.parametrize("bad, kind", [
    ((13, ann("ann@example.com"), "cat"), "unknown_class"),   # a class the model does not have
    ((13, 7, "3"), "unknown_user"),                          # a bare user id nobody can resolve
])
def test_import_refuses_a_bad_annotation_before_recording_anything(service, bad, kind):
    tasks = export_tasks(service)
    export = [annotate(tasks[0], 1, (10, ann("ann@example.com"), "3")), annotate(tasks[1], 2, bad)]
    with pytest.raises(InvalidInput) as e:
        import_labels(service, export)
    assert e.value.kind == kind
    assert service.producer.sent == [] and service.store.labels_for(tasks[0]["data"]["activestream_id"]) == []


def test_import_resolves_bare_user_ids_when_given_a_resolver(service):
    tasks = export_tasks(service)
    report = import_labels(service, [annotate(tasks[0], 1, (10, 7, "2"))], users={7: "cy@example.com"}.get)
    assert [(lab.label, lab.labeler) for lab in report.labels] == [(2, "labelstudio.cy_at_example.com")]


# -- the ML backend ----------------------------------------------------------------------------

@pytest.fixture
def backend(service):
    token = "s3cret-token"
    service.queue.set_token("studio", token, now=0)
    client = TestClient(create_app(service))
    client.auth = ("studio", token)
    return client


def test_health_is_open_and_every_other_endpoint_wants_a_labelers_name_and_token(backend):
    assert backend.get("/ml-backend/health", auth=None).json()["status"] == "UP"
    for path in ("/ml-backend/setup", "/ml-backend/predict", "/ml-backend/webhook"):
        for auth in (None, ("studio", "wrong"), ("someone-else", "s3cret-token")):
            r = backend.post(path, json={"tasks": []}, auth=auth)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic"), (path, auth)



def test_only_the_label_studio_account_may_speak_for_label_studio_users(service, backend):
    service.queue.set_token("ann", "anns-token", now=0)     # a page labeler, valid token
    for path in ("/ml-backend/setup", "/ml-backend/predict", "/ml-backend/webhook"):
        assert backend.post(path, json={"tasks": []}, auth=("ann", "anns-token")).status_code == 403, path


def test_predict_answers_every_task_with_the_serving_versions_guess(service, backend):
    clf = register_classifier(service)
    tasks = [{**t, "id": i} for i, t in enumerate(export_tasks(service))]
    tasks.append({"id": 99, "data": {"image": "https://example.com/elsewhere.png"}})  # nothing we can read
    answer = backend.post("/ml-backend/predict", json={"tasks": tasks, "project": "1.1700000000"}).json()
    assert answer["model_version"] == str(clf.version) == "2"
    *ours, foreign = answer["results"]
    assert foreign == {"model_version": "2", "score": 0.0, "result": []}
    images = np.stack([decode_image(service.image_png(t["data"]["activestream_id"]), clf.spec) for t in tasks[:-1]])
    probs = clf.predict_proba(images)
    for result, p in zip(ours, probs):
        assert result["model_version"] == "2"
        assert result["result"] == [studio_tasks.choice_result(CLASSES[int(p.argmax())])]
        assert result["score"] == pytest.approx(float(p.max()), rel=1e-5)


def test_predict_reads_an_inline_image_of_a_task_that_is_not_ours(service, backend):
    clf = register_classifier(service)
    png = service.image_png(service.pending(1)[0].id)
    task = {"id": 5, "data": {"image": studio_tasks.png_data_uri(png)}}
    (result,) = backend.post("/ml-backend/predict", json={"tasks": [task]}).json()["results"]
    p = clf.predict_proba(decode_image(png, clf.spec)[None])[0]
    assert result["result"] == [studio_tasks.choice_result(CLASSES[int(p.argmax())])]


def test_setup_names_the_serving_version_and_remembers_the_project_privately(service, backend, studio):
    register_classifier(service)
    setup = {"project": "3.1700000000", "schema": "<View/>", "hostname": studio.url + "/", "access_token": "t0k"}
    assert backend.post("/ml-backend/setup", json=setup).json() == {"model_version": "2"}
    path = service.settings.home_path / "labelstudio.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = StudioBackend(service)  # a restarted service still knows where project 3's Label Studio is
    assert again._connections() == {3: {"hostname": studio.url, "token": "t0k"}}


def connect(backend, studio, project: int = 3) -> None:
    """Label Studio's ``/setup`` for ``project``: where to ask who annotated."""
    setup = {"project": f"{project}.1700000000", "hostname": studio.url, "access_token": "t0k"}
    assert backend.post("/ml-backend/setup", json=setup).status_code == 200


def event(action: str, task: dict, annotation_id: int, completed_by: object, name: str) -> dict:
    return {"action": action, "project": {"id": 3}, "task": {**task, "id": 1},
            "annotation": {"id": annotation_id, "task": 1, "completed_by": completed_by, "was_cancelled": False,
                           "result": [studio_tasks.choice_result(name)]}}


def test_webhook_annotation_events_become_labels_by_the_annotator(service, backend, studio):
    connect(backend, studio)
    task = export_tasks(service)[0]
    item = task["data"]["activestream_id"]
    r = backend.post("/ml-backend/webhook", json=event("ANNOTATION_CREATED", task, 5, 7, "6"))
    assert r.json() == {"status": "recorded", "id": item, "label": 6, "labeler": "labelstudio.dee_at_example.com"}
    assert ("GET", "/api/users/7/", "Token t0k") in studio.seen   # asked the project's Label Studio who 7 is
    backend.post("/ml-backend/webhook", json=event("ANNOTATION_UPDATED", task, 5, 7, "9"))
    assert [(m.id, m.label, m.labeler) for m in service.producer.sent] == [
        (item, 6, "labelstudio.dee_at_example.com"), (item, 9, "labelstudio.dee_at_example.com")]
    assert [lab.label for lab in service.store.labels_for(item)] == [9]

    assert backend.post("/ml-backend/webhook", json={"action": "TASKS_CREATED", "tasks": []}).json()["status"] == "ignored"
    assert len(service.producer.sent) == 2


def test_webhook_refuses_a_user_it_cannot_name_and_records_nothing(service, backend):
    task = export_tasks(service)[0]
    r = backend.post("/ml-backend/webhook", json=event("ANNOTATION_CREATED", task, 5, 7, "6"))
    assert r.status_code == 422 and r.json()["kind"] == "unknown_user"
    assert service.producer.sent == []


def test_png_data_uri_round_trip():
    assert studio_tasks.image_from_uri(studio_tasks.png_data_uri(b"\x89PNGabc")) == b"\x89PNGabc"
    assert studio_tasks.image_from_uri("https://example.com/a.png") is None
    with pytest.raises(InvalidInput):
        studio_tasks.image_from_uri("data:image/png;base64," + base64.b64encode(b"x").decode() + "!!")


def test_cli_exports_the_queue_and_imports_labels_back(service, tmp_path, capsys):
    from activestream.cli import main

    home = str(service.settings.home_path)
    tasks_file, config_file, export_file = tmp_path / "tasks.json", tmp_path / "config.xml", tmp_path / "export.json"
    with pytest.raises(SystemExit) as done:
        main(["label", "export", "--home", home, "-o", str(tasks_file), "--config-out", str(config_file)])
    assert done.value.code == 0
    tasks = json.loads(tasks_file.read_text())
    assert tasks == export_tasks(service)
    assert [c.get("value") for c in ET.fromstring(config_file.read_text()).iter("Choice")] == CLASSES

    task = single(service, tasks)[0]
    export_file.write_text(json.dumps([annotate(task, 1, (3, ann("ed@example.com"), "5"))]))
    with pytest.raises(SystemExit) as done:
        main(["label", "import", "--home", home, str(export_file)])
    assert done.value.code == 0
    assert "recorded 1 label(s)" in capsys.readouterr().err
    stored = service.store.labels_for(task["data"]["activestream_id"])
    assert [(lab.labeler, lab.label) for lab in stored] == [("labelstudio.ed_at_example.com", 5)]


def test_webhook_label_for_an_item_that_has_its_labels_is_refused(service, backend, studio):
    connect(backend, studio)
    task = single(service, export_tasks(service))[0]
    service.record_label(task["data"]["activestream_id"], 1, "ann")  # labeled on our page already
    r = backend.post("/ml-backend/webhook", json=event("ANNOTATION_CREATED", task, 5, 7, "6"))
    assert r.status_code == 409
    assert [(m.labeler, m.label) for m in service.producer.sent] == [("ann", 1)]


def test_webhook_answers_502_when_label_studio_cannot_be_asked_who_annotated(service, backend, studio):
    connect(backend, studio)
    studio.stop()  # nothing listens there any more
    task = export_tasks(service)[0]
    r = backend.post("/ml-backend/webhook", json=event("ANNOTATION_CREATED", task, 5, 7, "6"))
    assert r.status_code == 502 and "cannot reach Label Studio" in r.json()["detail"]
    assert service.producer.sent == []


@pytest.mark.parametrize("ref", ["https://elsewhere.example/x.png", "//elsewhere.example/x.png", "x.png",
                                 "http://127.0.0.1:9/data/x.png"])
def test_images_are_fetched_from_the_projects_label_studio_only(ref):
    from activestream.labeling.studio_client import StudioClient, StudioError

    with pytest.raises(StudioError, match="is not on Label Studio"):
        StudioClient("http://127.0.0.1:8", "t0k").download(ref, 1000)
