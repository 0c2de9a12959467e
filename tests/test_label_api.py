"""The labelers' HTTP API on SQLite and on PostgreSQL: auth, 404/409/422, answers reaching store and sink."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from activestream.errors import InvalidInput, NotFound
from activestream.storage.queue import QueueItem
from conftest import make_settings
from label_helpers import Clock, make_requests, make_service


def build(tmp_path, store_url, **overrides):
    from activestream.labeling.app import create_app

    clock = Clock()
    service = make_service(make_settings(tmp_path, store_url=store_url, **overrides), clock=clock)
    service.enqueue(make_requests(service, 6))
    for name in ("ann", "bob"):
        service.queue.set_token(name, f"token-{name}", now=clock())
    return service, TestClient(create_app(service)), clock


def auth(name):
    return {"Authorization": f"Bearer token-{name}"}


@pytest.fixture
def api(tmp_path, store_url):
    service, client, clock = build(tmp_path, store_url)
    yield service, client, clock
    service.close()


def test_no_valid_token_is_401(api):
    _, client, _ = api
    for method, path in [("post", "/api/next"), ("get", "/api/stats"), ("get", "/api/config"),
                         ("post", "/api/items/img-0000/label"), ("post", "/api/undo"),
                         ("get", "/api/items/img-0000/image")]:
        assert getattr(client, method)(path).status_code == 401, path
        bad = getattr(client, method)(path, headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer", path


def test_unknown_item_is_404(api):
    _, client, _ = api
    assert client.post("/api/items/nope/label", json={"label": 1}, headers=auth("ann")).status_code == 404
    assert client.post("/api/items/nope/skip", headers=auth("ann")).status_code == 404
    assert client.get("/api/items/nope/image", headers=auth("ann")).status_code == 404


def test_invalid_label_is_422(api):
    _, client, _ = api
    item = client.post("/api/next", headers=auth("ann")).json()["item"]["id"]
    for body in ({"label": 10}, {"label": -1}, {"label": "cat"}, {}, {"label": 1.5}):
        assert client.post(f"/api/items/{item}/label", json=body, headers=auth("ann")).status_code == 422, body


def test_someone_elses_lease_is_409(api):
    service, client, clock = api
    item = client.post("/api/next", headers=auth("ann")).json()["item"]["id"]
    assert client.post(f"/api/items/{item}/label", json={"label": 1}, headers=auth("bob")).status_code == 409
    assert client.post(f"/api/items/{item}/skip", headers=auth("bob")).status_code == 409
    assert client.post("/api/next", headers=auth("bob")).json()["item"]["id"] != item
    clock.advance(service.settings.label_lease_seconds + 1)   # ann vanished: the item goes to the next who asks
    assert client.post("/api/next", headers=auth("bob")).json()["item"]["id"] == item
    assert client.post(f"/api/items/{item}/label", json={"label": 1}, headers=auth("bob")).status_code == 200
    assert client.post(f"/api/items/{item}/label", json={"label": 2}, headers=auth("ann")).status_code == 409


def test_answers_reach_store_and_labels_with_the_labeler(api):
    service, client, _ = api
    done = []
    for _ in range(3):
        item = client.post("/api/next", headers=auth("ann")).json()["item"]
        assert client.get(item["image"], headers=auth("ann")).content.startswith(b"\x89PNG")
        r = client.post(f"/api/items/{item['id']}/label", json={"label": 4}, headers=auth("ann"))
        assert r.status_code == 200
        done.append(item["id"])
    skipped = client.post("/api/next", headers=auth("ann")).json()["item"]["id"]
    assert client.post(f"/api/items/{skipped}/skip", json={"unsure": True}, headers=auth("ann")).status_code == 204
    assert [(m.id, m.label, m.labeler, m.kind) for m in service.producer.sent] == [(i, 4, "ann", "human") for i in done]
    assert [(lab.label, lab.labeler) for i in done for lab in service.store.labels_for(i)] == [(4, "ann")] * 3
    assert service.store.labels_for(skipped) == []
    stats = client.get("/api/stats", headers=auth("ann")).json()
    assert stats["me"]["labeled"] == 3 and stats["me"]["unsure"] == 1
    assert stats["queue"] == {"waiting": 3, "leased": 0, "done": 3}


def test_undo_then_a_new_class_replaces_the_label(api):
    service, client, _ = api
    first = client.post("/api/next", headers=auth("ann")).json()["item"]["id"]
    client.post(f"/api/items/{first}/label", json={"label": 1}, headers=auth("ann"))
    client.post("/api/next", headers=auth("ann"))
    assert client.post("/api/undo", headers=auth("ann")).json()["item"]["id"] == first
    assert client.post("/api/next", headers=auth("ann")).json()["item"]["id"] == first
    assert client.post(f"/api/items/{first}/skip", headers=auth("ann")).status_code == 409
    client.post(f"/api/items/{first}/label", json={"label": 7}, headers=auth("ann"))
    assert [lab.label for lab in service.store.labels_for(first)] == [7]
    assert [m.label for m in service.producer.sent] == [1, 7]   # the topic converges on the last class


@pytest.mark.parametrize("mode", ["show", "hide", "after"])
def test_guesses_follow_the_project_setting(tmp_path, store_url, mode):
    service, client, _ = build(tmp_path, store_url, label_guesses=mode)
    item = client.post("/api/next", headers=auth("ann")).json()["item"]
    answered = client.post(f"/api/items/{item['id']}/label", json={"label": 0}, headers=auth("ann")).json()
    top = service.item(item["id"]).top
    expected = [{"label": c, "name": str(c), "p": p} for c, p in top]
    assert item["guesses"] == (expected if mode == "show" else None)
    assert answered["guesses"] == (expected if mode == "after" else None)
    service.close()


def test_gold_items_look_like_any_other(api):
    service, client, _ = api
    service.queue.add([QueueItem("gold-1", "blob:img-0000", "gold", 0.0, 1.0, "classifier", 1, [(3, 0.9)], 9.0,
                                 lane="gold", gold=5)], now=0)
    service.queue.gold_share = 1.0
    item = client.post("/api/next", headers=auth("ann")).json()["item"]
    assert item["id"] == "gold-1" and set(item) == {"id", "image", "guesses"}
    r = client.post("/api/items/gold-1/label", json={"label": 3}, headers=auth("ann"))
    body = r.json()                                               # the known answer (5) is not revealed
    assert set(body) == {"id", "label", "guesses"} and body["label"] == 3
    assert [g["label"] for g in body["guesses"] or []] in ([], [3])
    assert service.producer.sent == [] and service.store.labels_for("gold-1") == []
    me = client.get("/api/stats", headers=auth("ann")).json()["me"]
    assert (me["gold_accuracy"], me["rubber_stamp_rate"]) == (0.0, 1.0)


def test_record_label_contract(api):
    service, _, _ = api
    with pytest.raises(NotFound):
        service.record_label("nope", 1, "studio-user")
    with pytest.raises(InvalidInput):
        service.record_label("img-0000", 99, "studio-user")
    service.record_label("img-0000", 2, "studio-user")
    service.record_label("img-0000", 2, "studio-user")            # idempotent: a retry re-sends the same label
    assert [(m.id, m.label, m.labeler) for m in service.producer.sent] == [("img-0000", 2, "studio-user")] * 2
    assert [(lab.label, lab.labeler) for lab in service.store.labels_for("img-0000")] == [(2, "studio-user")]
    assert "img-0000" not in [p.id for p in service.pending(10)] and len(service.pending(10)) == 5


def test_openapi_documents_the_api(api):
    _, client, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/next", "/api/items/{item_id}/label", "/api/items/{item_id}/skip", "/api/undo", "/api/stats"):
        assert path in paths
    assert client.get("/").text.startswith("<!doctype html>")
    for asset in ("/", "/static/app.js", "/static/app.css"):   # nothing fetched from the internet
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text and "@import" not in text, asset
