"""Checks a command makes before it starts anything: the dataset and its folder, the store's
database and the broker.

Each failure is one :class:`~activestream.errors.ConfigError` that names the flag (and
variable) at fault, raised within seconds instead of after the broker and the workers
have started and failed one by one.
"""

from __future__ import annotations

import socket
import sys
import time

from activestream.config import Settings
from activestream.errors import ConfigError

STORE_KINDS = ("sqlite", "postgresql")  # the dialects the store writes (ON CONFLICT in each)
FIX_STORE = "fix --store-url (ACTIVESTREAM_STORE_URL), e.g. postgresql://USER@HOST:5432/DB or sqlite:///FILE"


def check_store(url: str, timeout: float = 5.0) -> None:
    """Whether the store URL names a database activestream can write and that answers.

    SQLite is only parsed: the store creates its folder and file on first use.

    >>> check_store("sqlite:///var/x/store.db")
    >>> check_store("postgres://db/x")
    Traceback (most recent call last):
    ...
    activestream.errors.ConfigError: --store-url scheme 'postgres' is unknown to SQLAlchemy, which spells it postgresql://; fix --store-url (ACTIVESTREAM_STORE_URL), e.g. postgresql://USER@HOST:5432/DB or sqlite:///FILE
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except NoSuchModuleError as e:
        scheme = url.partition(":")[0]
        hint = ", which spells it postgresql://" if scheme.split("+")[0] == "postgres" else ""
        raise ConfigError(f"--store-url scheme {scheme!r} is unknown to SQLAlchemy{hint}; {FIX_STORE}") from e
    except (ArgumentError, ValueError) as e:
        raise ConfigError(f"--store-url {url!r} is not a database URL; {FIX_STORE}") from e
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() not in STORE_KINDS:
        raise ConfigError(f"--store-url {shown}: the store runs on SQLite or PostgreSQL only; {FIX_STORE}")
    if parsed.get_backend_name() == "sqlite":
        return
    try:
        engine = create_engine(parsed, poolclass=NullPool, connect_args={"connect_timeout": max(1, round(timeout))})
    except ImportError as e:
        raise ConfigError(f"--store-url {shown}: its driver is not installed ({e}); {FIX_STORE}") from e
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as e:
        reason = " ".join(str(getattr(e, "orig", None) or e).split())  # psycopg's message spans lines
        raise ConfigError(f"cannot open the store {shown}: {_clip(reason)}; {FIX_STORE}") from e
    finally:
        engine.dispose()


def shown_url(url: str) -> str:
    """A database URL without its password, for messages.

    >>> shown_url("postgresql://ann:secret@db/x")
    'postgresql://ann:***@db/x'
    """
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing in it to hide
        return url


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port[,host:port ...]`` as pairs.

    >>> bootstrap_addresses("127.0.0.1:9092, kafka:9093")
    [('127.0.0.1', 9092), ('kafka', 9093)]
    """
    found = []
    for part in (p.strip() for p in bootstrap.split(",")):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"--bootstrap {bootstrap!r}: {part!r} is not host:port; fix --bootstrap "
                              "(ACTIVESTREAM_BOOTSTRAP)")
        found.append((host.strip("[]"), int(port)))
    return found


def check_broker(bootstrap: str, wait: float, hint: str = "") -> None:
    """Whether some broker of ``bootstrap`` accepts a connection within ``wait`` seconds."""
    addresses = bootstrap_addresses(bootstrap)
    deadline = time.monotonic() + wait
    while True:
        for address in addresses:
            left = deadline - time.monotonic()
            try:
                with socket.create_connection(address, timeout=min(2.0, max(0.1, left))):
                    return
            except OSError as e:
                last = e
        if time.monotonic() >= deadline:
            why = getattr(last, "strerror", None) or str(last) or type(last).__name__
            raise ConfigError(f"no broker answers at {bootstrap} within {wait:g} s ({why}); check --bootstrap "
                              f"(ACTIVESTREAM_BOOTSTRAP){hint}, or wait longer with --broker-wait SECONDS")
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))


def check_run(settings: Settings) -> None:
    """What ``activestream run`` needs before it starts the broker and the workers."""
    if settings.simulate:
        from activestream.simulation.datasets import check_dataset

        if check_dataset(settings.dataset, settings.data_dir) == "digits" and settings.dataset == "auto":
            print("dataset: scikit-learn's bundled 8x8 digits (no data folder; --data-dir names one for "
                  "Fashion-MNIST)", file=sys.stderr)
    check_store(settings.store)
    if settings.bootstrap:
        check_broker(settings.bootstrap, settings.broker_wait, " or leave it unset for the embedded broker")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
