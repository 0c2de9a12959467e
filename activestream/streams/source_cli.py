"""``activestream source WHERE``: stream a folder or an S3 prefix of your own images into a
running loop (see :mod:`activestream.streams.source` for what is sent, skipped and
dead-lettered). Registering it imports nothing heavy: ``activestream --help`` stays quick."""

from __future__ import annotations

import argparse
import asyncio

from activestream.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``activestream source``; its parser sets ``handler`` (args -> exit code)."""
    p = sub.add_parser("source", help="stream your own images (a folder or s3://bucket/prefix) into a running loop")
    p.add_argument("where", help="a folder (read recursively) or s3://bucket/prefix (endpoint and credentials from AWS_*)")
    p.add_argument("--by", choices=("value", "reference"), default="value",
                   help="value: the bytes ride in each message (default); reference: its file:// or s3:// URI, "
                        "fetched by the predictors (a folder must be under their ACTIVESTREAM_FETCH_ROOTS)")
    p.add_argument("--rate", type=float, default=0.0, help="images per second (default 0: as fast as the broker takes them)")
    p.add_argument("--repeat", type=int, default=1, help="passes over the images, later ones with new ids (-r1, -r2 "
                                                         "...); 0: until Ctrl-C")
    p.add_argument("--id-prefix", help="start of every image id (default: the folder's or the prefix's last name)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers of the running loop (ACTIVESTREAM_BOOTSTRAP); "
                                       "`activestream run` prints its embedded broker's")
    p.set_defaults(handler=run_source)


def run_source(args: argparse.Namespace) -> int:
    from activestream.config import Settings
    from activestream.streams.source import Source, check_reference, describe, open_source, stream_source
    from activestream.streams.stage import make_producer
    from activestream.streams.topics import ensure_topics

    settings = Settings(**({"bootstrap": args.bootstrap} if args.bootstrap else {}))
    if not settings.bootstrap:
        raise ConfigError("give the broker of the running loop: --bootstrap HOST:PORT or ACTIVESTREAM_BOOTSTRAP "
                          "(`activestream run` prints its embedded broker's address)")
    if args.repeat < 0:
        raise ConfigError("--repeat must be 0 (until Ctrl-C) or more")
    source = Source(args.where, args.by, args.id_prefix, args.repeat)
    check_reference(source, settings)
    opened = open_source(source)
    ensure_topics(settings, settings.bootstrap)

    async def send():
        producer = make_producer(settings.bootstrap)
        await producer.start()
        try:
            return await stream_source(producer, settings, opened, args.rate)
        finally:
            await producer.stop()

    try:
        sent, skipped = asyncio.run(send())
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 130
    print(f"sent {sent} images from {source.where} by {source.by} to {settings.topic_images} at "
          f"{settings.bootstrap}; {describe(skipped)}")
    return 0
