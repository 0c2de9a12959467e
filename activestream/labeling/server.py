"""``activestream label serve``: the API and page (uvicorn) and the requests consumer, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import threading

from activestream.config import Settings
from activestream.errors import ConfigError

log = logging.getLogger(__name__)


def uvicorn_config(settings: Settings, app):
    """Where and how uvicorn serves ``app``.

    X-Forwarded-For is believed only from ``label_trusted_proxies`` (uvicorn would
    believe it from 127.0.0.1): the client address is what failed sign-ins are counted
    by, and a header anyone can write would reset the count.
    """
    import uvicorn

    proxies = [p.strip() for p in settings.label_trusted_proxies.split(",") if p.strip()]
    try:
        loopback = ipaddress.ip_address(settings.label_host).is_loopback
    except ValueError:
        loopback = settings.label_host == "localhost"
    if not loopback:
        log.warning("label serve binds %s: tokens travel in clear text unless a TLS proxy is in front",
                    settings.label_host)
    return uvicorn.Config(app, host=settings.label_host, port=settings.label_port, log_level=settings.log_level,
                          access_log=False, proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)


async def serve(settings: Settings, owner: int | None = None) -> None:
    """Serve on ``label_host:label_port`` until SIGINT/SIGTERM, or until the process ``owner``
    (a PID) is gone; a consumer failure stops the server loudly."""
    import uvicorn

    from activestream.labeling.app import create_app
    from activestream.labeling.consumer import WORKER, RequestsHandler
    from activestream.labeling.outbox import OutboxSink
    from activestream.labeling.service import KafkaSink, LabelingService
    from activestream.storage.decisions import in_force
    from activestream.streams.stage import BatchStage, make_consumer, make_producer
    from activestream.streams.topics import ensure_topics

    bootstrap = settings.bootstrap
    if not bootstrap:
        raise ConfigError("label serve joins a running loop: set ACTIVESTREAM_BOOTSTRAP (or --bootstrap) to its broker")
    await asyncio.to_thread(ensure_topics, settings, bootstrap)
    async with contextlib.AsyncExitStack() as opened:  # whatever started is stopped, even if a later start fails
        sink = await asyncio.to_thread(KafkaSink, bootstrap, settings.topic_labels)
        opened.push_async_callback(asyncio.to_thread, sink.close)
        service = await asyncio.to_thread(LabelingService.open, settings, sink)
        opened.callback(service.close)
        if await asyncio.to_thread(in_force, service.registry, settings.model_name) is None:
            log.warning("no version of %s is in force in %s yet: the page turns labelers away until one is "
                        "(a running loop's seed, `activestream seed ...` or `activestream models import ...`)",
                        settings.model_name, settings.home)
        service.producer = outbox = await asyncio.to_thread(OutboxSink, service.store, sink)
        delivering = asyncio.ensure_future(_deliver(outbox))
        opened.callback(delivering.cancel)
        producer = make_producer(bootstrap)
        await producer.start()
        opened.push_async_callback(producer.stop)
        consumer = make_consumer(settings, bootstrap, settings.group(WORKER), settings.topic_requests)
        await consumer.start()
        opened.push_async_callback(consumer.stop)
        server = uvicorn.Server(uvicorn_config(settings, create_app(service)))
        stage = BatchStage(WORKER, consumer, producer, RequestsHandler(service), settings.batch_size,
                           settings.batch_wait_ms)
        await _probes(settings, service, opened)
        with _stop_on_signals(server):
            await _until_stopped(server, stage, owner)
    log.info("label serve stopped")


async def _deliver(outbox, every: float = 2.0) -> None:
    """Send the answers kept while the broker was away (and any left by a stopped server)."""
    while True:
        try:
            if (await asyncio.to_thread(outbox.state)).waiting:
                await asyncio.to_thread(outbox.drain)
        except Exception as e:  # noqa: BLE001 - the store away: the answers stay kept, try again
            log.warning("could not read the kept answers: %s", e)
        await asyncio.sleep(every)


def metrics_port(settings: Settings) -> int:
    """Where label serve's ``/metrics``, ``/healthz`` and ``/readyz`` are: the port after
    every worker process's (see ``activestream.streams.worker.port_offset``); 0 disables.

    >>> metrics_port(Settings(metrics_port=9400)), metrics_port(Settings(metrics_port=9400, predictors=3))
    (9404, 9406)
    >>> metrics_port(Settings())
    0
    """
    if not settings.metrics_port:
        return 0
    return settings.metrics_port + settings.predictors + settings.selectors + settings.ingesters + 1


async def _probes(settings: Settings, service, opened: contextlib.AsyncExitStack) -> None:
    """Metrics and probes on their own port, beside the workers' and apart from the labelers':
    Prometheus needs no labeler token, and the public port shows no labeler names."""
    from prometheus_client import REGISTRY

    from activestream.labeling.metrics import QueueCollector
    from activestream.streams import health

    collector = QueueCollector(service.queue, service.clock)
    REGISTRY.register(collector)
    opened.callback(REGISTRY.unregister, collector)
    state = health.Health()
    runner = await health.serve(settings.metrics_host, metrics_port(settings), state)
    if runner is not None:
        opened.push_async_callback(runner.cleanup)
    state.started()


@contextlib.contextmanager
def _stop_on_signals(server):
    """SIGINT and SIGTERM stop ``server`` and nothing else.

    uvicorn raises a signal it caught again once it has stopped; with the default handler
    that ends the process before the consumer, the producer and the store are closed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _until_stopped(server, stage, owner: int | None) -> None:
    """Serve and consume until uvicorn is signalled, the consumer fails or ``owner`` is gone; then stop both."""
    stop = asyncio.Event()
    consuming = asyncio.ensure_future(stage.run(stop))
    serving = asyncio.ensure_future(server.serve())
    watching = asyncio.ensure_future(owner_gone(owner))
    await asyncio.wait({consuming, serving, watching}, return_when=asyncio.FIRST_COMPLETED)
    watching.cancel()
    stop.set()
    # should_exit rather than SIGTERM to ourselves: uvicorn raises a caught signal again once it
    # has stopped, which would end the process before the consumer and the store are closed.
    server.should_exit = True
    await asyncio.gather(serving, watching, return_exceptions=True)
    await consuming  # re-raises a consumer failure


async def owner_gone(owner: int | None, interval: float = 1.0) -> None:
    """Return once the process ``owner`` is gone; never without one.

    A ``label serve`` that ``activestream run`` started must not outlive it: a SIGKILLed
    run cannot stop it, and it would keep the port and a consumer group member.
    """
    from activestream.streams.reaper import orphaned

    if owner is None:
        await asyncio.Event().wait()
    while not orphaned(owner):
        await asyncio.sleep(interval)
    log.error("owner process %d is gone; stopping", owner)
