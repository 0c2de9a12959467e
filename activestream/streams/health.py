"""Health and readiness of a worker process, served with its metrics on one port.

* ``/healthz`` answers 200 while the worker's event loop runs: a loop blocked by
  synchronous work or a dead process does not answer, and an orchestrator restarts it.
* ``/readyz`` answers 200 once the worker consumes (the predictor: once it serves a
  model) and while nothing it needs is away; 503 with the reasons otherwise.
* ``/metrics`` is the Prometheus exposition.

Served by aiohttp on the worker's own event loop, so a probe measures that loop.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)


class Health:
    """Whether this process is ready, and what keeps it from being so.

    >>> h = Health()
    >>> h.ready()
    (False, ['starting'])
    >>> h.started(); h.trouble("store", "connection refused"); h.ready()
    (False, ['store: connection refused'])
    >>> h.fine("store"); h.ready()
    (True, [])
    """

    def __init__(self):
        self._started = False
        self._troubles: dict[str, str] = {}

    def started(self) -> None:
        self._started = True

    def trouble(self, what: str, why: str) -> None:
        self._troubles[what] = why

    def fine(self, what: str) -> None:
        self._troubles.pop(what, None)

    def ready(self) -> tuple[bool, list[str]]:
        reasons = ([] if self._started else ["starting"]) + [f"{k}: {v}" for k, v in self._troubles.items()]
        return not reasons, reasons


HEALTH = Health()  # one per process: the stage, the serving model and the probes share it


def app(health: Health = HEALTH, registry=REGISTRY) -> web.Application:
    async def healthz(_request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request) -> web.Response:
        ok, reasons = health.ready()
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "\n".join(reasons) + "\n")

    async def exposition(_request) -> web.Response:
        # In a thread: a collector may query a database (label serve's queue), and the
        # loop it would block is the one /healthz measures.
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    application = web.Application()
    application.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", exposition)])
    return application


async def serve(host: str, port: int, health: Health = HEALTH, registry=REGISTRY) -> web.AppRunner | None:
    """Serve the probes and metrics on ``host:port`` (port 0: not at all); returns the runner to clean up."""
    if not port:
        return None
    runner = web.AppRunner(app(health, registry), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("health, readiness and metrics on http://%s:%d/{healthz,readyz,metrics}", host, port)
    return runner
