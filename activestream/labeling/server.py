"""``activestream label serve``: the API and page (uvicorn) and the requests consumer, in one process."""

from __future__ import annotations

import asyncio
import logging

from activestream.config import Settings
from activestream.errors import ConfigError

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Serve on 127.0.0.1:``label_port`` until SIGINT/SIGTERM; a consumer failure stops the server loudly."""
    import uvicorn

    from activestream.labeling.app import create_app
    from activestream.labeling.consumer import WORKER, RequestsHandler
    from activestream.labeling.service import KafkaSink, LabelingService
    from activestream.streams.stage import BatchStage, make_consumer, make_producer
    from activestream.streams.topics import ensure_topics

    bootstrap = settings.bootstrap
    if not bootstrap:
        raise ConfigError("label serve joins a running loop: set ACTIVESTREAM_BOOTSTRAP (or --bootstrap) to its broker")
    await asyncio.to_thread(ensure_topics, settings, bootstrap)
    sink = await asyncio.to_thread(KafkaSink, bootstrap, settings.topic_labels)
    service = await asyncio.to_thread(LabelingService.open, settings, sink)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=settings.label_port,
                                           log_level=settings.log_level, access_log=False))
    consumer = make_consumer(settings, bootstrap, settings.group(WORKER), settings.topic_requests)
    producer = make_producer(bootstrap)
    stop = asyncio.Event()
    await producer.start()
    await consumer.start()
    try:
        stage = BatchStage(WORKER, consumer, producer, RequestsHandler(service), settings.batch_size,
                           settings.batch_wait_ms)
        consuming = asyncio.ensure_future(stage.run(stop))
        serving = asyncio.ensure_future(server.serve())
        await asyncio.wait({consuming, serving}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await consuming  # re-raises a consumer failure
    finally:
        await consumer.stop()
        await producer.stop()
        await asyncio.to_thread(sink.close)
        service.close()
