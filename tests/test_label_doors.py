"""The doors of the labelers' API: credentials before bodies, body limits, wrong-token limits, leases.

Requests that must not have their body read go straight through the ASGI interface
with a ``receive`` that counts what the app pulls: "never read" is then a count of
zero, not a timing. The clock is moved by hand: nothing sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from label_helpers import bearer, make_api

MB = 1 << 20


@pytest.fixture
def api(tmp_path, store_url):
    service, client, clock = make_api(tmp_path, store_url)
    yield service, client, clock
    service.close()


def asgi_post(app, path: str, headers: dict, chunks: int, chunk_size: int) -> tuple[int, int]:
    """POST ``chunks`` body chunks of ``chunk_size`` bytes; returns (status, chunks the app pulled)."""
    pulled = 0

    async def receive():
        nonlocal pulled
        if pulled >= chunks:
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": b"{" * chunk_size, "more_body": pulled < chunks}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in {"content-type": "application/json",
                                                                        **headers}.items()],
             "client": ("10.0.0.7", 40000), "server": ("127.0.0.1", 8090), "state": {}}
    asyncio.run(app(scope, receive, send))
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    return start["status"], pulled


@pytest.mark.parametrize("path", ["/api/items/img-0000/label", "/api/items/img-0000/skip", "/ml-backend/webhook"])
def test_a_stranger_gets_401_before_any_of_the_body_is_read(api, path):
    service, client, _ = api
    forty_mb = {"content-length": str(40 * MB)}
    for creds in ({}, {"authorization": "Bearer not-a-token"}, {"authorization": "Basic c3R1ZGlvOndyb25n"}):
        assert asgi_post(client.app, path, {**forty_mb, **creds}, chunks=40, chunk_size=MB) == (401, 0), creds
    # streamed without a length: the same
    assert asgi_post(client.app, path, {}, chunks=40, chunk_size=MB) == (401, 0)


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read_whole(api):
    service, client, _ = api
    item = client.post("/api/next", headers=bearer("ann")).json()["item"]["id"]
    path, limit = f"/api/items/{item}/label", service.settings.label_max_body_bytes
    auth = {"authorization": "Bearer token-ann"}
    assert asgi_post(client.app, path, {**auth, "content-length": str(40 * MB)}, chunks=40, chunk_size=MB) == (413, 0)
    status, pulled = asgi_post(client.app, path, auth, chunks=40 * 64, chunk_size=16384)   # streamed, no length
    assert status == 413 and pulled <= limit // 16384 + 1
    r = client.post(path, content=b" " * (limit + 1), headers={**bearer("ann"), "Content-Type": "application/json"})
    assert r.status_code == 413
    streamed = client.post(path, content=iter([b" " * 4096] * (limit // 4096 + 2)),
                           headers={**bearer("ann"), "Content-Type": "application/json"})
    assert streamed.status_code == 413 and "ACTIVESTREAM_LABEL_MAX_BODY_BYTES" in streamed.json()["detail"]
    assert client.post(path, json={"label": 3}, headers=bearer("ann")).status_code == 200   # a normal body passes
    assert service.store.labels_for(item)[0].label == 3


def test_the_ml_backend_has_its_own_body_limit(tmp_path):
    # Label Studio's tasks carry images inline: its limit is larger than the page's.
    service, client, _ = make_api(tmp_path, labelers=("studio",), label_max_body_bytes=1000,
                                  label_studio_max_body_bytes=100_000)
    auth = ("studio", "token-studio")
    padded = {"action": "PROJECT_UPDATED", "pad": "x" * 50_000}
    assert client.post("/ml-backend/webhook", json=padded, auth=auth).json()["status"] == "ignored"
    r = client.post("/ml-backend/webhook", content=iter([b" " * 10_000] * 11), auth=auth,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "ACTIVESTREAM_LABEL_STUDIO_MAX_BODY_BYTES" in r.json()["detail"]
    assert client.post("/ml-backend/webhook", json={**padded, "pad": "x" * 100_000}, auth=auth).status_code == 413
    assert client.post("/api/items/img-0000/skip", json={"unsure": True, "pad": "x" * 1000},
                       headers=bearer("studio")).status_code == 413
    service.close()


def test_wrong_tokens_from_one_address_get_429_with_retry_after(tmp_path):
    service, client, clock = make_api(tmp_path, label_signin_failures=3, label_signin_window=30.0)
    other = type(client)(client.app, client=("10.0.0.2", 50000))
    wrong = {"Authorization": "Bearer guess"}
    assert [client.get("/api/config", headers=wrong).status_code for _ in range(3)] == [401] * 3
    r = client.get("/api/config", headers=wrong)
    assert r.status_code == 429 and r.headers["retry-after"] == "10"      # 3 tries per 30 s: one back every 10 s
    assert client.get("/api/config", headers=bearer("ann")).status_code == 429   # a right guess would not show
    assert client.post("/ml-backend/setup", json={}, auth=("studio", "guess")).status_code == 429
    assert other.get("/api/config", headers=bearer("ann")).status_code == 200    # another address is not held up
    clock.advance(10)
    assert client.get("/api/config", headers=bearer("ann")).status_code == 200
    assert client.get("/api/config", headers=wrong).status_code == 401
    assert client.get("/api/config", headers=wrong).status_code == 429
    service.close()


def test_500_guesses_get_only_the_default_burst_of_answers(tmp_path):
    service, client, _ = make_api(tmp_path)
    codes = [client.get("/api/stats", headers={"Authorization": f"Bearer guess-{i}"}).status_code for i in range(500)]
    burst = service.settings.label_signin_failures
    assert codes == [401] * burst + [429] * (500 - burst)
    service.close()


def test_requests_without_credentials_and_wrong_basic_auth_are_told_apart(tmp_path):
    service, client, _ = make_api(tmp_path, labelers=("ann", "studio"), label_signin_failures=2)
    assert {client.get("/api/config").status_code for _ in range(20)} == {401}     # nothing guessed: not counted
    assert client.post("/ml-backend/setup", json={}, auth=("studio", "nope")).status_code == 401
    assert client.post("/ml-backend/setup", json={}, auth=("ann", "token-studio")).status_code == 401  # name mismatch
    assert client.post("/ml-backend/setup", json={}, auth=("studio", "token-studio")).status_code == 429
    service.close()


def test_submitting_needs_my_live_lease(api):
    service, client, clock = api
    never = service.pending(10)[-1].id                                 # handed to nobody
    r = client.post(f"/api/items/{never}/label", json={"label": 1}, headers=bearer("bob"))
    assert r.status_code == 409 and "POST /api/next" in r.json()["detail"]
    assert service.producer.sent == [] and service.store.labels_for(never) == []

    item = client.post("/api/next", headers=bearer("ann")).json()["item"]["id"]
    assert client.post(f"/api/items/{item}/label", json={"label": 1}, headers=bearer("bob")).status_code == 409
    assert client.post(f"/api/items/{item}/label", json={"label": 4}, headers=bearer("ann")).status_code == 200
    # the same answer again is a retry (the response may have been lost): taken, still one label
    assert client.post(f"/api/items/{item}/label", json={"label": 4}, headers=bearer("ann")).status_code == 200
    assert client.post(f"/api/items/{item}/label", json={"label": 5}, headers=bearer("ann")).status_code == 409
    assert client.post("/api/undo", headers=bearer("ann")).json()["item"]["id"] == item
    assert client.post(f"/api/items/{item}/label", json={"label": 5}, headers=bearer("ann")).status_code == 200
    assert [(lab.label, lab.labeler) for lab in service.store.labels_for(item)] == [(5, "ann")]

    late = client.post("/api/next", headers=bearer("ann")).json()["item"]["id"]
    clock.advance(service.settings.label_lease_seconds + 1)            # ann's lease lapses
    assert client.post(f"/api/items/{late}/label", json={"label": 2}, headers=bearer("ann")).status_code == 409
    assert service.store.labels_for(late) == []


def test_an_image_shows_only_to_the_labeler_it_was_handed_to(api):
    service, client, _ = api
    never = service.pending(10)[-1].id
    assert client.get(f"/api/items/{never}/image", headers=bearer("bob")).status_code == 403
    item = client.post("/api/next", headers=bearer("ann")).json()["item"]
    assert client.get(item["image"], headers=bearer("bob")).status_code == 403
    assert client.get(item["image"], headers=bearer("ann")).content.startswith(b"\x89PNG")
    client.post(f"/api/items/{item['id']}/label", json={"label": 1}, headers=bearer("ann"))
    assert client.get(item["image"], headers=bearer("ann")).status_code == 200   # answered by her
    assert client.get(item["image"], headers=bearer("bob")).status_code == 403
    skipped = client.post("/api/next", headers=bearer("bob")).json()["item"]
    client.post(f"/api/items/{skipped['id']}/skip", headers=bearer("bob"))
    assert client.get(skipped["image"], headers=bearer("bob")).status_code == 200
    assert client.get("/api/items/nope/image", headers=bearer("bob")).status_code == 404


def test_every_documented_operation_with_credentials_is_behind_a_door(api):
    from activestream.labeling.doors import door

    _, client, _ = api
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, op in operations.items():
            wants = {name for req in op.get("security", []) for name in req}
            expected = {"bearer": {"HTTPBearer"}, "basic": {"HTTPBasic"}, None: set()}[door(path)]
            assert wants == expected, (method, path)
