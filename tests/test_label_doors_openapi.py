"""``label serve``'s app on a real socket (uvicorn on 127.0.0.1, as ``label serve`` configures it).

Schemathesis generates requests for every operation of the OpenAPI document, signed
in with real credentials, and no answer may be a server error. The raw-socket checks
show what a client sees: a stranger announcing 40 MB gets 401 although only a
kilobyte was ever sent, and a forged X-Forwarded-For does not buy more guesses.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from activestream.labeling.app import create_app
from activestream.labeling.doors import door
from activestream.labeling.server import uvicorn_config
from activestream.labeling.signins import FailedSignIns
from activestream.streams.broker import free_port
from conftest import make_settings
from label_helpers import make_requests, make_service, register_classifier


class Served:
    """The app over a service with a serving network, 8 items, labeler ann and the Label Studio account."""

    def __init__(self, folder):
        self.service = make_service(make_settings(folder, label_port=free_port(), log_level="warning"))
        register_classifier(self.service)
        self.service.enqueue(make_requests(self.service, 8))
        self.service.queue.set_token("ann", "token-ann", now=0)
        self.service.queue.set_token("studio", "token-studio", now=0)
        settings_ = self.service.settings
        self.signins = FailedSignIns(settings_.label_signin_failures, settings_.label_signin_window)
        self.app = create_app(self.service, self.signins)
        config = uvicorn_config(self.service.settings, self.app)
        self.url = f"http://{config.host}:{config.port}"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the labeling app did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.service.close()

    def auth(self, path: str) -> dict:
        kind = door(path)
        if kind == "bearer":
            return {"Authorization": "Bearer token-ann"}
        if kind == "basic":
            return {"Authorization": "Basic " + base64.b64encode(b"studio:token-studio").decode()}
        return {}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = Served(tmp_path_factory.mktemp("served")).start()
    yield app
    app.stop()


def test_no_operation_answers_with_a_server_error(served):
    # Plain hypothesis over each operation's strategy: schemathesis' pytest integration
    # (from_fixture) does not run under pytest 9 (it sets Function._nodeid).
    operations = [result.ok() for result in schemathesis.openapi.from_url(f"{served.url}/openapi.json")
                  .get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /api/next", "POST /api/items/{item_id}/label", "GET /api/items/{item_id}/image",
        "POST /ml-backend/setup", "POST /ml-backend/predict", "POST /ml-backend/webhook"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case):
            response = case.call(base_url=served.url, headers=served.auth(case.path), timeout=60)
            case.validate_response(response, checks=[not_a_server_error])

        no_server_error()


def raw(url: str, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read the answer's status line and headers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_stranger_announcing_40_mb_gets_401_having_sent_one_kb(served):
    for path, creds in (("/api/items/img-0000/label", b""), ("/ml-backend/webhook", b"")):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {40 << 20}\r\n").encode() + creds + b"\r\n"
        assert raw(served.url, head + b"{" * 1024).startswith(b"HTTP/1.1 401 "), path


def test_an_announced_body_over_the_limit_gets_413_having_sent_one_kb(served):
    head = (b"POST /api/items/img-0000/label HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer token-ann\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(40 << 20).encode() + b"\r\n\r\n")
    assert raw(served.url, head + b"{" * 1024).startswith(b"HTTP/1.1 413 ")


def test_a_forged_x_forwarded_for_buys_no_more_guesses(served):
    burst = served.service.settings.label_signin_failures
    statuses = []
    try:
        for i in range(burst + 1):
            answer = raw(served.url, (f"GET /api/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess-{i}\r\n"
                                      f"X-Forwarded-For: 10.9.{i}.1\r\n\r\n").encode())
            statuses.append(answer.split(b" ")[1])
    finally:
        served.signins.buckets_.clear()  # a fresh count for whatever runs next
    assert statuses == [b"401"] * burst + [b"429"]
