"""Shared pieces of the labeling tests: a model version with classes, images, requests."""

from __future__ import annotations

import time

import numpy as np

from activestream.labeling.service import LabelingService, MemorySink
from activestream.learners.preprocess import encode_png
from activestream.storage.registry import ModelRegistry
from activestream.streams.messages import LabelRequestV1

CLASSES = [str(d) for d in range(10)]


class Clock:
    """A hand-moved clock: lease expiry without sleeping."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def register_model(registry: ModelRegistry, name: str = "classifier", classes=CLASSES):
    """A promoted version whose metadata names the classes (the weights do not matter here)."""
    spec = {"arch": "small_cnn", "classes": list(classes), "channels": 1, "height": 8, "width": 8}
    return registry.register(name, {"w": np.zeros(1, np.float32)}, spec=spec, parent=None, train_size=0,
                             metrics={}, status="promoted")


def register_classifier(service: LabelingService, seed: int = 1):
    """A real (untrained) network as the newest promoted version: the serving one."""
    from activestream.learners.classifier import Classifier, state_arrays
    from activestream.learners.models import ModelSpec

    spec = ModelSpec("small_cnn", tuple(CLASSES), 1, 8, 8)
    clf = Classifier.fresh(spec, seed=seed)
    meta = service.registry.register(service.settings.model_name, state_arrays(clf.model), spec=spec.to_dict(),
                                     parent=1, train_size=0, metrics={}, status="promoted")
    clf.version = meta.version
    return clf


def digit_images(n: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:n]
    return [((digits.images[i] * 16).clip(0, 255).astype(np.uint8), int(digits.target[i])) for i in order]


def make_requests(service: LabelingService, n: int, prefix: str = "img", audit_every: int = 0,
                  seed: int = 0) -> list[LabelRequestV1]:
    """``n`` requests whose images are in the service's blob store; every ``audit_every``-th is an audit item."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (image, _truth) in enumerate(digit_images(n, seed)):
        item_id = f"{prefix}-{i:04d}"
        service.blobs.put(item_id, encode_png(image))
        probs = rng.dirichlet(np.ones(len(CLASSES)))
        top = [(int(c), float(probs[c])) for c in np.argsort(-probs)[:3]]
        audit = audit_every and i % audit_every == audit_every - 1
        score = float(1 - probs.max())
        out.append(LabelRequestV1(id=item_id, uri=f"blob:{item_id}", reason="audit" if audit else "uncertain",
                                  score=score, probability=0.05, model="classifier", version=1, top=top,
                                  priority=score, ts=time.time()))
    return out


def make_service(settings, clock=None, sink=None) -> LabelingService:
    service = LabelingService.open(settings, sink if sink is not None else MemorySink(), clock=clock or Clock())
    register_model(service.registry, settings.model_name)
    return service


class FakeLabelStudio:
    """A stand-in Label Studio on 127.0.0.1 (a real HTTP server in a thread) that records every request.

    It answers ``GET /api/users/{id}/`` from ``users``, serves ``files`` by path,
    answers other paths from ``answers`` (``(method, path) -> (status, json, headers)``)
    and everything else with 404. ``seen`` holds ``(method, path, Authorization header)``,
    ``bodies`` the JSON bodies sent, in the same order.
    """

    def __init__(self, users: dict[int, str] | None = None, files: dict[str, bytes] | None = None):
        import http.server
        import threading

        self.users = dict(users or {})
        self.files = dict(files or {})
        self.answers: dict[tuple[str, str], tuple[int, object, dict]] = {}
        self.seen: list[tuple[str, str, str | None]] = []
        self.bodies: list[object] = []
        self.server_ = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server_.server_address[1]}"
        self.thread_ = threading.Thread(target=self.server_.serve_forever, daemon=True)
        self.thread_.start()

    def _answer(self, method: str, path: str) -> tuple[int, bytes, dict]:
        import json
        import re

        if (method, path) in self.answers:
            status, body, headers = self.answers[(method, path)]
            return status, json.dumps(body).encode(), headers
        user = re.fullmatch(r"/api/users/(\d+)/", path)
        if method == "GET" and user and int(user.group(1)) in self.users:
            return 200, json.dumps({"id": int(user.group(1)), "email": self.users[int(user.group(1))]}).encode(), {}
        if method == "GET" and path in self.files:
            return 200, self.files[path], {"Content-Type": "application/octet-stream"}
        return 404, b'{"detail": "not found"}', {}

    def _handler(self):
        import http.server

        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                import json

                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                fake.bodies.append(json.loads(raw) if raw else None)
                fake.seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, body, headers = fake._answer(self.command, self.path)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = _any

            def log_message(self, *args):
                pass

        return Handler

    def stop(self) -> None:
        self.server_.shutdown()
        self.server_.server_close()
        self.thread_.join(10)


def make_api(tmp_path, store_url=None, labelers=("ann", "bob"), items: int = 6, client=("10.0.0.1", 50000),
             **overrides):
    """A service with ``items`` requests, tokens ``token-<name>`` for ``labelers``, and a TestClient on its app
    coming from ``client`` (address, port); returns ``(service, client, clock)``."""
    from fastapi.testclient import TestClient

    from activestream.labeling.app import create_app
    from conftest import make_settings

    clock = Clock()
    if store_url is not None:
        overrides["store_url"] = store_url
    service = make_service(make_settings(tmp_path, **overrides), clock=clock)
    service.enqueue(make_requests(service, items))
    for name in labelers:
        service.queue.set_token(name, f"token-{name}", now=clock())
    return service, TestClient(create_app(service), client=client), clock


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer token-{name}"}
