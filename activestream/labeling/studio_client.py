"""A small client of Label Studio's REST API (``Authorization: Token ...``), on the standard library.

activestream calls Label Studio for two things: the email of a user the webhook
names only by id, and connecting a project to our ML backend (which also puts our
credentials on the webhook Label Studio creates for it).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from activestream.errors import ActivestreamError, ConfigError, NotFound

SCHEMES = {"http": 80, "https": 443}


class StudioError(ActivestreamError):
    """Label Studio refused a request or could not be reached."""


class StudioNotAllowed(ActivestreamError):
    """A Label Studio address that is not one of ``ACTIVESTREAM_LABEL_STUDIO_URLS``."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Requests stay on Label Studio: a redirect elsewhere would carry its token there."""

    def redirect_request(self, *args, **kwargs):
        return None


def _opener() -> urllib.request.OpenerDirector:
    """HTTP(S) only: urllib's default opener also reads ``file:``, ``ftp:`` and ``data:`` URLs."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(), _NoRedirect()):
        opener.add_handler(handler)
    return opener


_http = _opener()


def base_url(url: str) -> str:
    """``url`` as one spelling (``scheme://host:port/path``), so two spellings of one Label Studio compare equal.

    >>> base_url("HTTP://LocalHost/ls/")
    'http://localhost:80/ls'
    """
    parts = urlsplit(url.strip())
    try:
        port = parts.port or SCHEMES.get(parts.scheme.lower())
    except ValueError:
        port = None
    if (parts.scheme.lower() not in SCHEMES or not parts.hostname or port is None or "@" in parts.netloc
            or parts.query or parts.fragment):
        raise ConfigError(f"{url[:200]!r} is not a Label Studio base URL: give http(s)://host[:port][/path], "
                          "without user, query or fragment")
    return f"{parts.scheme.lower()}://{parts.hostname}:{port}{parts.path.rstrip('/')}"


def studio_urls(setting: str) -> list[str]:
    """The Label Studio base URLs of a comma-separated setting (``ACTIVESTREAM_LABEL_STUDIO_URLS``).

    >>> studio_urls("http://127.0.0.1:8080, https://ls.example.com")
    ['http://127.0.0.1:8080', 'https://ls.example.com:443']
    """
    return [base_url(u) for u in setting.split(",") if u.strip()]


def allowed_url(url: object, setting: str) -> str | None:
    """The entry of ``setting`` (comma-separated base URLs) that ``url`` names, as configured; else ``None``.

    >>> allowed_url("HTTP://127.0.0.1:8080/", "http://127.0.0.1:8080"), allowed_url("file:///etc", "")
    ('http://127.0.0.1:8080', None)
    """
    try:
        wanted = base_url(url) if isinstance(url, str) else None
    except ConfigError:
        return None
    entries = [u.strip().rstrip("/") for u in setting.split(",") if u.strip()]
    return next((u for u in entries if base_url(u) == wanted), None)


@dataclass(frozen=True)
class StudioClient:
    """Label Studio at ``url`` (e.g. ``http://127.0.0.1:8080``) with a user's API token."""

    url: str
    token: str
    timeout: float = 10.0

    def __post_init__(self):
        base_url(self.url)  # http(s) only: never a file or any other kind of URL

    def request(self, method: str, path: str, body: object = None) -> object:
        """JSON in, JSON out; ``NotFound`` on 404, :class:`StudioError` on any other failure."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with _http.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode(errors="replace")
            if e.code == 404:
                raise NotFound(f"Label Studio has no {path} ({detail})") from e
            raise StudioError(f"Label Studio answered {e.code} to {method} {path}: {detail}; "
                              "check the URL and that the token belongs to a user of this project") from e
        except (urllib.error.URLError, OSError) as e:
            raise StudioError(f"cannot reach Label Studio at {self.url} ({e}); is it running there?") from e
        try:
            return json.loads(raw) if raw else None
        except ValueError as e:  # a login page, say, when the token is not accepted
            raise StudioError(f"Label Studio's answer to {method} {path} is not JSON ({e}); check the URL and token") from e

    def download(self, ref: str, max_bytes: int) -> bytes:
        """A file Label Studio serves (``/data/upload/...`` or a full URL on this Label Studio).

        Only this Label Studio is asked, with its token: a task cannot make us fetch
        from anywhere else.
        """
        base = self.url.rstrip("/")
        if ref.startswith(base + "/"):
            ref = ref[len(base):]
        if not ref.startswith("/") or ref.startswith("//"):
            raise StudioError(f"image {ref[:100]!r} is not on Label Studio at {self.url}; it is not fetched")
        req = urllib.request.Request(base + ref, headers={"Authorization": f"Token {self.token}"})
        try:
            with _http.open(req, timeout=self.timeout) as resp:
                data = resp.read(max_bytes + 1)
        except (urllib.error.URLError, OSError) as e:
            raise StudioError(f"cannot fetch {ref} from Label Studio at {self.url} ({e})") from e
        if len(data) > max_bytes:
            raise StudioError(f"image {ref} is over {max_bytes} bytes")
        return data

    def user_email(self, user_id: int) -> str | None:
        """The email (else username) of a Label Studio user; ``None`` if it has neither."""
        user = self.request("GET", f"/api/users/{int(user_id)}/")
        return (user.get("email") or user.get("username") or None) if isinstance(user, dict) else None

    def connect_backend(self, project: int, backend_url: str, user: str, password: str,
                        title: str = "activestream") -> int:
        """Connect ``project`` to our ML backend with HTTP basic auth; returns the ML backend's id.

        Label Studio creates a webhook to ``<backend_url>/webhook`` for every new ML
        backend, without the backend's credentials; this adds them to that webhook as
        an ``Authorization`` header, so annotation events pass our authentication too.
        """
        backend = self.request("POST", "/api/ml", {
            "url": backend_url, "project": project, "title": title, "is_interactive": False,
            "auth_method": "BASIC_AUTH", "basic_auth_user": user, "basic_auth_pass": password})
        hook_url = backend_url.rstrip("/") + "/webhook"
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        hooks = self.request("GET", f"/api/webhooks/?project={project}") or []
        ours = [h for h in hooks if isinstance(h, dict) and h.get("url") == hook_url]
        if not ours:
            ours = [self.request("POST", "/api/webhooks/", {
                "project": project, "url": hook_url, "send_payload": True, "send_for_all_actions": True})]
        for hook in ours:
            self.request("PATCH", f"/api/webhooks/{hook['id']}/", {"headers": {"Authorization": basic}})
        return int(backend["id"])
