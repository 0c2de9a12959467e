"""``activestream label serve``: the API and page (uvicorn) and the requests consumer, in one process."""

from __future__ import annotations

import asyncio
import contextlib

from activestream.config import Settings
from activestream.errors import ConfigError


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
    async with contextlib.AsyncExitStack() as opened:  # whatever started is stopped, even if a later start fails
        sink = await asyncio.to_thread(KafkaSink, bootstrap, settings.topic_labels)
        opened.push_async_callback(asyncio.to_thread, sink.close)
        service = await asyncio.to_thread(LabelingService.open, settings, sink)
        opened.callback(service.close)
        producer = make_producer(bootstrap)
        await producer.start()
        opened.push_async_callback(producer.stop)
        consumer = make_consumer(settings, bootstrap, settings.group(WORKER), settings.topic_requests)
        await consumer.start()
        opened.push_async_callback(consumer.stop)
        server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=settings.label_port,
                                               log_level=settings.log_level, access_log=False))
        stop = asyncio.Event()
        stage = BatchStage(WORKER, consumer, producer, RequestsHandler(service), settings.batch_size,
                           settings.batch_wait_ms)
        consuming = asyncio.ensure_future(stage.run(stop))
        serving = asyncio.ensure_future(server.serve())
        await asyncio.wait({consuming, serving}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await consuming  # re-raises a consumer failure
