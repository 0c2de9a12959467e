"""Images by reference: file:// under roots (traversal, symlinks), http(s):// against a real
server on 127.0.0.1 (allow-list, redirects, size cap, timeout, concurrency), s3:// on moto.

Nothing here depends on the machine's speed: the timeout test's server never answers
until the test is over, and the concurrency test counts requests in flight."""

from __future__ import annotations

import asyncio
import http.server
import os
import threading

import pytest
from s3_server import s3, s3_endpoint  # noqa: F401 - fixtures

from activestream.errors import ConfigError, InvalidInput
from activestream.storage.fetch import FetchPolicy, Fetcher, read_under_roots

LIMIT = 1000


@pytest.fixture
def tree(tmp_path):
    """``root/`` holding images and links; ``outside/`` beside it holding a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "cam").mkdir(parents=True)
    outside.mkdir()
    (root / "cam" / "a.png").write_bytes(b"image-a")
    (outside / "secret.png").write_bytes(b"secret")
    return root, outside


def fetch_file(uri: str, root, limit: int = LIMIT) -> bytes:
    return read_under_roots(uri, (str(root),), limit)


def kind(call) -> str:
    with pytest.raises(InvalidInput) as err:
        call()
    return err.value.kind


# -- file:// ----------------------------------------------------------------------------------

def test_a_file_under_a_root_is_read(tree):
    root, _ = tree
    assert fetch_file(f"file://{root}/cam/a.png", root) == b"image-a"
    assert fetch_file(f"file://localhost{root}/cam/a.png", root) == b"image-a"


@pytest.mark.parametrize("tail", ["/../outside/secret.png", "/cam/../../outside/secret.png",
                                  "/cam/%2E%2E/%2E%2E/outside/secret.png", "/../../../../etc/passwd"])
def test_traversal_out_of_the_root_is_refused(tree, tail):
    root, _ = tree
    assert kind(lambda: fetch_file(f"file://{root}{tail}", root)) == "outside_roots"


def test_a_sibling_folder_sharing_the_roots_name_prefix_is_outside(tree, tmp_path):
    root, _ = tree
    (tmp_path / "root-evil").mkdir()
    (tmp_path / "root-evil" / "x.png").write_bytes(b"x")
    assert kind(lambda: fetch_file(f"file://{tmp_path}/root-evil/x.png", root)) == "outside_roots"


def test_symlink_escapes_are_refused(tree):
    root, outside = tree
    os.symlink(outside / "secret.png", root / "cam" / "link.png")      # a file link pointing out
    os.symlink(outside, root / "cam" / "door")                          # a folder link pointing out
    assert kind(lambda: fetch_file(f"file://{root}/cam/link.png", root)) == "outside_roots"
    assert kind(lambda: fetch_file(f"file://{root}/cam/door/secret.png", root)) == "outside_roots"


def test_a_symlink_that_stays_inside_the_roots_is_followed(tree):
    root, _ = tree
    os.symlink(root / "cam" / "a.png", root / "latest.png")
    assert fetch_file(f"file://{root}/latest.png", root) == b"image-a"


def test_a_root_that_is_itself_a_symlink_is_resolved(tree, tmp_path):
    root, _ = tree
    os.symlink(root, tmp_path / "alias")
    assert fetch_file(f"file://{root}/cam/a.png", tmp_path / "alias") == b"image-a"


def test_missing_too_large_not_a_file_and_no_roots(tree):
    root, _ = tree
    (root / "big.png").write_bytes(b"x" * (LIMIT + 1))
    assert kind(lambda: fetch_file(f"file://{root}/cam/none.png", root)) == "image_not_found"
    assert kind(lambda: fetch_file(f"file://{root}/big.png", root)) == "too_large"
    assert kind(lambda: fetch_file(f"file://{root}/cam", root)) == "image_not_found"
    assert kind(lambda: read_under_roots(f"file://{root}/cam/a.png", (), LIMIT)) == "outside_roots"
    assert kind(lambda: fetch_file(f"file://otherhost{root}/cam/a.png", root)) == "unsupported_uri"


@pytest.mark.timeout(60)
def test_a_fifo_under_a_root_is_refused_without_waiting_for_a_writer(tree):
    root, _ = tree
    os.mkfifo(root / "cam" / "pipe.png")
    assert kind(lambda: fetch_file(f"file://{root}/cam/pipe.png", root)) == "image_not_found"


def test_roots_must_be_absolute():
    with pytest.raises(ConfigError, match="ACTIVESTREAM_FETCH_ROOTS"):
        FetchPolicy.parse(roots="images/")


# -- http(s):// -------------------------------------------------------------------------------

class Site:
    """A real HTTP server on 127.0.0.1 in a thread; ``routes`` maps a path to (status, headers, body)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.release = threading.Event()  # the /hang route answers only once this is set
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _handler(self):
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with site.lock:
                    site.in_flight += 1
                    site.most_in_flight = max(site.most_in_flight, site.in_flight)
                try:
                    if self.path.startswith("/hang") or self.path.startswith("/slow"):
                        site.release.wait(60)
                    status, headers, body = site.routes.get(self.path, (404, {}, b"no"))
                    self.send_response(status)
                    for k, v in {"Content-Length": str(len(body)), **headers}.items():
                        if v is not None:
                            self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with site.lock:
                        site.in_flight -= 1

        return Handler

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def http_fetcher(site: Site, timeout: float = 30.0, concurrency: int = 4) -> Fetcher:
    return Fetcher(FetchPolicy(hosts=(f"127.0.0.1:{site.port}",), timeout=timeout, max_bytes=LIMIT,
                               concurrency=concurrency))


def fetch_all(fetcher: Fetcher, uris: list[str]) -> list:
    async def go():
        try:
            return await fetcher.fetch_many(uris)
        finally:
            await fetcher.close()
    return asyncio.run(go())


def test_http_fetch_from_an_allowed_host_and_a_redirect_on_the_same_host(site):
    site.routes["/a.png"] = (200, {}, b"png-bytes")
    site.routes["/moved"] = (302, {"Location": "/a.png"}, b"")
    assert fetch_all(http_fetcher(site), [site.url("/a.png"), site.url("/moved")]) == [b"png-bytes"] * 2


def test_http_hosts_not_allowed_redirects_to_another_host_and_404(site):
    site.routes["/a.png"] = (200, {}, b"png-bytes")
    site.routes["/away"] = (302, {"Location": site.url("/a.png", host="localhost")}, b"")
    site.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    results = fetch_all(http_fetcher(site), [site.url("/a.png", host="localhost"), site.url("/away"),
                                             site.url("/loop"), site.url("/gone.png"), "ftp://x/a.png"])
    assert [r.kind for r in results] == ["host_not_allowed", "redirect_refused", "redirect_refused",
                                         "image_not_found", "unsupported_uri"]


def test_http_size_cap_with_and_without_a_content_length(site):
    site.routes["/declared"] = (200, {}, b"x" * (LIMIT + 1))
    site.routes["/undeclared"] = (200, {"Content-Length": None, "Connection": "close"}, b"x" * (LIMIT + 1))
    site.routes["/exact"] = (200, {}, b"x" * LIMIT)
    results = fetch_all(http_fetcher(site), [site.url("/declared"), site.url("/undeclared"), site.url("/exact")])
    assert [getattr(r, "kind", r) for r in results] == ["too_large", "too_large", b"x" * LIMIT]


def test_http_timeout_is_dead_lettered_and_the_loop_stays_free(site):
    ticks = []

    async def go():
        fetcher = http_fetcher(site, timeout=0.5)

        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)

        task = asyncio.ensure_future(ticker())
        try:
            return await fetcher.fetch_many([site.url("/hang")])
        finally:
            task.cancel()
            await fetcher.close()

    [result] = asyncio.run(go())
    assert result.kind == "fetch_timeout"
    assert ticks, "the event loop ran other work while the fetch waited"


def test_fetches_run_concurrently_and_bounded(site):
    for i in range(8):
        site.routes[f"/slow{i}"] = (200, {}, b"%d" % i)

    async def go():
        fetcher = http_fetcher(site, concurrency=3)
        pending = asyncio.ensure_future(fetcher.fetch_many([site.url(f"/slow{i}") for i in range(8)]))
        while site.in_flight < 3:  # three are held by the server at once: they run concurrently
            await asyncio.sleep(0.01)
        site.release.set()
        try:
            return await pending
        finally:
            await fetcher.close()

    assert asyncio.run(asyncio.wait_for(go(), 120)) == [b"%d" % i for i in range(8)]
    assert site.most_in_flight == 3


# -- s3:// ------------------------------------------------------------------------------------

def test_s3_keys_missing_keys_and_the_size_cap(s3):
    s3.client.put_object(Bucket=s3.name, Key="cam/a.png", Body=b"png")
    s3.client.put_object(Bucket=s3.name, Key="cam/big.png", Body=b"x" * (LIMIT + 1))
    fetcher = Fetcher(FetchPolicy(buckets=(s3.name, "no-such-bucket-here"), max_bytes=LIMIT))
    results = fetch_all(fetcher, [s3.url("cam/a.png"), s3.url("cam/none.png"), s3.url("cam/big.png"),
                                  "s3://no-such-bucket-here/a.png"])
    assert results[0] == b"png"
    assert [r.kind for r in results[1:]] == ["image_not_found", "too_large", "fetch_failed"]


def test_s3_only_in_allow_listed_buckets_and_prefixes(s3):
    """The credentials reach more than images (the blob store and the models may share the
    bucket): a URI outside the allow-list is refused before anything is read."""
    for key in ("cam/a.png", "models/1/model.safetensors"):
        s3.client.put_object(Bucket=s3.name, Key=key, Body=b"bytes")
    results = fetch_all(Fetcher(FetchPolicy(buckets=(f"{s3.name}/cam/",), max_bytes=LIMIT)),
                        [s3.url("cam/a.png"), s3.url("models/1/model.safetensors"), "s3://other-bucket/cam/a.png"])
    assert results[0] == b"bytes"
    assert [r.kind for r in results[1:]] == ["bucket_not_allowed"] * 2
    assert "ACTIVESTREAM_FETCH_BUCKETS" in str(results[1])
    nothing = fetch_all(Fetcher(FetchPolicy(max_bytes=LIMIT)), [s3.url("cam/a.png")])  # the default: no bucket
    assert nothing[0].kind == "bucket_not_allowed"


def test_fetch_settings_are_checked_at_startup(tmp_path):
    from pydantic import ValidationError

    from activestream.config import Settings

    with pytest.raises(ValidationError, match="not an absolute path"):
        Settings(fetch_roots="images/")
    with pytest.raises(ValidationError, match="not host or host:port"):
        Settings(fetch_hosts="https://img.example.com/")
    with pytest.raises(ValidationError, match="not bucket or bucket/prefix"):
        Settings(fetch_buckets="s3://cams/")
    ok = Settings(fetch_roots=f"{tmp_path}, /data", fetch_hosts="img.example.com, 127.0.0.1:8080")
    assert FetchPolicy.parse(ok.fetch_roots, ok.fetch_hosts).hosts == ("img.example.com", "127.0.0.1:8080")
