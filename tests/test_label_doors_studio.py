"""The ML backend's doors: only configured Label Studio hosts, no local files, annotators named by Label Studio.

Label Studio is played by small real HTTP servers on 127.0.0.1 that record what they
receive: the configured one, and an "elsewhere" that must never hear from us.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from activestream.errors import ConfigError
from activestream.labeling import studio_tasks
from activestream.labeling.app import create_app
from activestream.labeling.service import LabelingService, MemorySink
from activestream.labeling.studio_client import StudioClient, StudioError
from activestream.learners.preprocess import encode_png
from conftest import make_settings
from label_helpers import FakeLabelStudio, digit_images, make_requests, make_service, register_classifier

PNG = encode_png(digit_images(1, seed=3)[0][0])


@pytest.fixture
def studio():
    fake = FakeLabelStudio(users={7: "dee@example.com"}, files={"/data/upload/1/digit.png": PNG})
    yield fake
    fake.stop()


@pytest.fixture
def elsewhere():
    fake = FakeLabelStudio(users={7: "mallory@example.com"}, files={"/data/upload/1/digit.png": PNG})
    yield fake
    fake.stop()


def backend_for(tmp_path, urls: str, fresh: bool = True):
    """The app over a service whose Label Studios are ``urls``; ``fresh=False`` reopens the last one's home."""
    settings = make_settings(tmp_path, label_studio_urls=urls)
    service = make_service(settings) if fresh else LabelingService.open(settings, MemorySink())
    if fresh:
        service.enqueue(make_requests(service, 4))
    service.queue.set_token("studio", "studio-token", now=0)
    client = TestClient(create_app(service))
    client.auth = ("studio", "studio-token")
    return service, client


@pytest.fixture
def backend(tmp_path, studio):
    service, client = backend_for(tmp_path, studio.url)
    yield service, client
    service.close()


def setup(client, hostname: str, project: int = 3):
    return client.post("/ml-backend/setup", json={"project": f"{project}.1700000000", "hostname": hostname,
                                                  "access_token": "ls-token"})


def annotated(service, completed_by: object) -> dict:
    item = service.pending(10)[0].id
    return {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "task": {"id": 1, "data": {"activestream_id": item}},
            "annotation": {"id": 5, "completed_by": completed_by, "result": [studio_tasks.choice_result("6")]}}


@pytest.mark.parametrize("spelling", ["{elsewhere}", "file:///etc", "{elsewhere}/", "http://user@{host}",
                                      "{studio}?next=x", "ftp://{host}"])
def test_setup_is_refused_for_a_label_studio_that_is_not_configured(backend, studio, elsewhere, spelling):
    service, client = backend
    hostname = spelling.format(elsewhere=elsewhere.url, studio=studio.url, host=studio.url.split("//")[1])
    r = setup(client, hostname)
    assert r.status_code == 403 and "ACTIVESTREAM_LABEL_STUDIO_URLS" in r.json()["detail"]
    assert not (service.settings.home_path / "labelstudio.json").exists()
    # nothing was kept: an annotation by user 7 cannot be resolved, and nobody was asked
    r = client.post("/ml-backend/webhook", json=annotated(service, 7))
    assert r.status_code == 422 and r.json()["kind"] == "unknown_user"
    assert elsewhere.seen == [] and studio.seen == []


def test_setup_with_no_configured_label_studio_refuses_every_host(tmp_path, studio):
    service, client = backend_for(tmp_path, "")
    assert setup(client, studio.url).status_code == 403
    service.close()


def test_a_configured_label_studio_in_another_spelling_is_kept_as_configured(backend, studio):
    service, client = backend
    assert setup(client, studio.url.upper().replace("HTTP://", "http://") + "/").status_code == 200
    kept = json.loads((service.settings.home_path / "labelstudio.json").read_text())
    assert kept == {"3": {"hostname": studio.url, "token": "ls-token"}}


def test_predict_never_reads_local_files(backend, tmp_path):
    service, client = backend
    register_classifier(service)
    (tmp_path / "leak").mkdir()
    (tmp_path / "leak" / "digit.png").write_bytes(PNG)
    hostname = f"file://{tmp_path / 'leak'}"
    assert setup(client, hostname).status_code == 403
    # a connection kept before this check existed, in the file a restart reads back
    kept = {"3": {"hostname": hostname, "token": "t"}}
    (service.settings.home_path / "labelstudio.json").write_text(json.dumps(kept))
    for ref in ("/digit.png", f"{hostname}/digit.png"):
        r = client.post("/ml-backend/predict", json={"project": "3.1700000000", "tasks": [{"data": {"image": ref}}]})
        assert r.json()["results"] == [{"model_version": "2", "score": 0.0, "result": []}], ref


def test_predict_fetches_uploads_only_from_a_label_studio_that_is_still_configured(tmp_path, studio):
    service, client = backend_for(tmp_path, studio.url)
    register_classifier(service)
    task = {"data": {"image": "/data/upload/1/digit.png"}}
    assert setup(client, studio.url).status_code == 200
    r = client.post("/ml-backend/predict", json={"project": "3.1700000000", "tasks": [task]})
    assert r.json()["results"][0]["result"] != []                      # fetched from the configured one
    assert ("GET", "/data/upload/1/digit.png", "Token ls-token") in studio.seen
    service.close()

    studio.seen.clear()                                                # the operator removes it from the setting
    again, client = backend_for(tmp_path, "", fresh=False)
    r = client.post("/ml-backend/predict", json={"project": "3.1700000000", "tasks": [task]})
    assert r.json()["results"][0]["result"] == [] and studio.seen == []
    again.close()


@pytest.mark.parametrize("completed_by", [{"id": 7, "email": "mallory@example.com"}, 7])
def test_the_webhook_names_the_annotator_as_the_configured_label_studio_does(backend, studio, completed_by):
    service, client = backend
    assert setup(client, studio.url).status_code == 200
    r = client.post("/ml-backend/webhook", json=annotated(service, completed_by))
    assert r.json()["labeler"] == "labelstudio.dee_at_example.com"    # user 7 there, whatever the payload says
    assert [m.labeler for m in service.producer.sent] == ["labelstudio.dee_at_example.com"]


def test_the_webhook_refuses_an_annotator_named_only_by_the_payload(backend, studio):
    service, client = backend
    assert setup(client, studio.url).status_code == 200
    r = client.post("/ml-backend/webhook", json=annotated(service, {"email": "mallory@example.com"}))
    assert r.status_code == 422 and r.json()["kind"] == "unknown_user"
    assert service.producer.sent == []


def test_the_client_talks_http_only_and_follows_no_redirect(studio, elsewhere):
    with pytest.raises(ConfigError):
        StudioClient("file:///etc", "t")
    studio.answers[("GET", "/api/users/7/")] = (302, {}, {"Location": f"{elsewhere.url}/api/users/7/"})
    with pytest.raises(StudioError, match="302"):
        StudioClient(studio.url, "ls-token").user_email(7)
    assert elsewhere.seen == []                                        # the token did not follow the redirect
