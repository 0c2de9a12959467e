"""``http(s)://`` images, only from allow-listed hosts, through httpx.

A host is allowed when ``hosts`` names it (any port) or names it with its port
(``host:port``). Redirects are followed by hand, a few hops at most, and only to the
same host (and never from https down to http): an allowed server cannot send the
fetcher on to an address it was not allowed to reach. The body is read in chunks and
refused as soon as it passes the size cap, whatever ``Content-Length`` claimed.
"""

from __future__ import annotations

from activestream.errors import InvalidInput

__all__ = ["HttpFetcher", "host_allowed"]

MAX_REDIRECTS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_allowed(url, hosts: tuple[str, ...]) -> bool:
    """Whether ``url`` (an ``httpx.URL``) names an allow-listed host.

    >>> import httpx
    >>> host_allowed(httpx.URL("http://img.example.com:8080/a.png"), ("img.example.com",))
    True
    >>> host_allowed(httpx.URL("http://127.0.0.1:9/a.png"), ("127.0.0.1:8080",))
    False
    >>> host_allowed(httpx.URL("http://[::1]:8080/a.png"), ("[::1]:8080",))
    True
    """
    host = (url.host or "").lower()
    if not host:
        return False
    # httpx gives an IPv6 host without its brackets; the setting writes it as a URL does
    name = f"[{host}]" if ":" in host else host
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return name in hosts or host in hosts or f"{name}:{port}" in hosts


class HttpFetcher:
    """GETs images from allow-listed hosts; one httpx client, made on first use."""

    def __init__(self, hosts: tuple[str, ...], timeout: float, max_bytes: int):
        self.hosts = hosts
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._client = None

    def _url(self, uri: str):
        import httpx

        try:
            url = httpx.URL(uri)
        except (httpx.InvalidURL, TypeError, ValueError) as e:
            raise InvalidInput("unsupported_uri", f"{uri!r} is not a valid URL ({e})") from e
        if url.scheme not in _DEFAULT_PORTS or not url.host:
            raise InvalidInput("unsupported_uri", f"{uri!r} is not an http(s) URL with a host")
        if not host_allowed(url, self.hosts):
            raise InvalidInput("host_not_allowed", f"{uri}: host {url.host!r} is not allow-listed; add it to "
                                                   "ACTIVESTREAM_FETCH_HOSTS if images may come from it")
        return url

    async def get(self, uri: str) -> bytes:
        """The body of ``uri``; ``InvalidInput`` with the reason when it cannot be had."""
        import httpx

        url = self._url(uri)
        if self._client is None:
            # trust_env off: a proxy or .netrc credentials from the environment must not apply to
            # URIs that arrive in messages
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(self.timeout),
                                             trust_env=False)
        try:
            for _ in range(MAX_REDIRECTS + 1):
                # identity: the cap applies to the bytes sent, never to an inflated body
                async with self._client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as reply:
                    if not reply.is_redirect:
                        return await self._body(uri, reply)
                    url = self._redirect(uri, url, reply.headers.get("location", ""))
        except httpx.TimeoutException as e:
            raise InvalidInput("fetch_timeout", f"{uri}: no answer within {self.timeout:g} s "
                                                "(ACTIVESTREAM_FETCH_TIMEOUT)") from e
        except httpx.HTTPError as e:
            raise InvalidInput("fetch_failed", f"{uri}: {type(e).__name__}: {e}") from e
        raise InvalidInput("redirect_refused", f"{uri}: more than {MAX_REDIRECTS} redirects")

    def _redirect(self, uri: str, url, location: str):
        target = url.join(location)
        if (target.host or "").lower() != (url.host or "").lower() or (url.scheme, target.scheme) == ("https", "http"):
            raise InvalidInput("redirect_refused", f"{uri}: redirected to {target}, another host (or from https "
                                                   "to http); link the image where it lives")
        if not host_allowed(target, self.hosts):
            raise InvalidInput("redirect_refused", f"{uri}: redirected to {target}, whose port is not allow-listed")
        return target

    async def _body(self, uri: str, reply) -> bytes:
        if reply.status_code in (404, 410):
            raise InvalidInput("image_not_found", f"{uri}: the server answered {reply.status_code}")
        if not 200 <= reply.status_code < 300:
            raise InvalidInput("fetch_failed", f"{uri}: the server answered {reply.status_code}")
        declared = reply.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise InvalidInput("too_large", f"{uri} holds {declared} bytes, over the limit of {self.max_bytes} "
                                            "(ACTIVESTREAM_MAX_IMAGE_BYTES)")
        chunks, size = [], 0
        async for chunk in reply.aiter_raw():
            size += len(chunk)
            if size > self.max_bytes:
                raise InvalidInput("too_large", f"{uri} sent over {self.max_bytes} bytes "
                                                "(ACTIVESTREAM_MAX_IMAGE_BYTES)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
