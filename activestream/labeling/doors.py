"""The doors of ``label serve``: who is asking is settled from the headers, before any body is read.

FastAPI reads a request's body before it solves the dependencies that authenticate,
so a dependency cannot spare us reading (and parsing) the body of a stranger. This
middleware stands in front instead:

* ``/api/...`` takes a labeler's Bearer token; ``/ml-backend/...`` (but ``/health``)
  HTTP basic auth, a labeler's name and token. The page, its assets, the OpenAPI
  document, its pages (``/docs``, ``/redoc``) with their assets, and Label Studio's
  health check are open.
* A request without valid credentials gets 401 and its body is never read; each
  wrong credential costs the client address one try of :class:`FailedSignIns`, and
  an address out of tries gets 429 with ``Retry-After``.
* The labeler let in rides in ``request.state.labeler``, where the routes'
  dependencies (:func:`signed_in`) pick it up.

How large a body may be is FastAPI's own ``max_body_size`` (set in ``app.py``): it
refuses a too-large ``Content-Length`` before reading and counts a streamed body as
it arrives.
"""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBearer
from starlette._utils import get_route_path  # how Starlette's routing strips a root path
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from activestream.labeling.signins import FailedSignIns

bearer = HTTPBearer(auto_error=False, description="a labeler token from `activestream label token create NAME`")
basic = HTTPBasic(auto_error=False, description="an activestream labeler name and its token")

#: Path prefixes behind a door and the credentials each takes; everything else is open.
DOORS = (("/api/", "bearer"), ("/ml-backend/", "basic"))
OPEN = frozenset({"/ml-backend/health"})
CHALLENGE = {"bearer": "Bearer", "basic": 'Basic realm="activestream"'}
REFUSAL = {
    "bearer": "a valid labeler token is required (Authorization: Bearer <token>)",
    "basic": "HTTP basic auth with an activestream labeler name and its token is required; "
             "set them as the ML backend's Basic Auth in Label Studio",
}


def door(path: str) -> str | None:
    """The credentials ``path`` takes, or ``None`` when it is open.

    >>> door("/api/next"), door("/ml-backend/webhook"), door("/ml-backend/health"), door("/docs")
    ('bearer', 'basic', None, None)
    >>> door("/static-offline-docs/swagger-ui-bundle.js") is None
    True
    """
    if path in OPEN:
        return None
    return next((kind for prefix, kind in DOORS if path.startswith(prefix)), None)


def signed_in(request: Request, kind: str) -> str:
    """The labeler the doors let in; 401 if none did (a route outside every door)."""
    name = getattr(request.state, "labeler", None)
    if not name:
        raise HTTPException(401, REFUSAL[kind], headers={"WWW-Authenticate": CHALLENGE[kind]})
    return name


class Doors:
    """ASGI middleware: authenticate from the headers, then let the request (and its body) in."""

    def __init__(self, app: ASGIApp, service, signins: FailedSignIns):
        self.app = app
        self.service = service
        self.signins = signins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = door(get_route_path(scope)) if scope["type"] == "http" else None  # as routing sees it
        if kind is None:
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.signins.retry_after(address)
        if wait:
            refusal = JSONResponse({"detail": f"too many wrong credentials from {address}; try again in {wait} s"},
                                   status_code=429, headers={"Retry-After": str(wait)})
            return await refusal(scope, receive, send)
        presented, name = await self._labeler(kind, Request(scope))
        if name is None:
            if presented:
                self.signins.failed(address)
            refusal = JSONResponse({"detail": REFUSAL[kind]}, status_code=401,
                                   headers={"WWW-Authenticate": CHALLENGE[kind]})
            return await refusal(scope, receive, send)
        scope.setdefault("state", {})["labeler"] = name
        await self.app(scope, receive, send)

    async def _labeler(self, kind: str, request: Request) -> tuple[bool, str | None]:
        """Whether credentials came, and whose they are (``None``: nobody's)."""
        try:
            creds = await (bearer if kind == "bearer" else basic)(request)
        except HTTPException:  # basic auth that does not decode: presented, and wrong
            return True, None
        if creds is None:
            return False, None
        token = creds.credentials if kind == "bearer" else creds.password
        name = await run_in_threadpool(self.service.labeler_for, token)  # SQL on a cache miss
        if kind == "basic" and name and not secrets.compare_digest(name.encode(), creds.username.encode()):
            name = None
        return True, name
