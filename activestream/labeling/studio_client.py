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

from activestream.errors import ActivestreamError, NotFound


class StudioError(ActivestreamError):
    """Label Studio refused a request or could not be reached."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Downloads stay on Label Studio: a redirect elsewhere is an error, not followed."""

    def redirect_request(self, *args, **kwargs):
        return None


_download = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class StudioClient:
    """Label Studio at ``url`` (e.g. ``http://127.0.0.1:8080``) with a user's API token."""

    url: str
    token: str
    timeout: float = 10.0

    def request(self, method: str, path: str, body: object = None) -> object:
        """JSON in, JSON out; ``NotFound`` on 404, :class:`StudioError` on any other failure."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers={
            "Authorization": f"Token {self.token}", "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
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
            with _download.open(req, timeout=self.timeout) as resp:
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
