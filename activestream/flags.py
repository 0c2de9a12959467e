"""Argument types and help shared by the commands' parsers."""

from __future__ import annotations

import argparse

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def store_url(text: str) -> str:
    """``--store-url``: a SQLAlchemy URL without a password.

    A command line shows in every user's process list and in shell history, so the
    password goes where only the process reads it.

    >>> store_url("postgresql+psycopg://loop@db:5432/activestream")
    'postgresql+psycopg://loop@db:5432/activestream'
    >>> store_url("postgresql+psycopg://loop:secret@db/activestream")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: a password on the command line shows in the process list; ...
    """
    try:
        url = make_url(text)
    except ArgumentError:
        return text  # not a URL at all: the store says what is wrong with it, naming the setting
    if url.password:
        raise argparse.ArgumentTypeError(
            "a password on the command line shows in the process list; drop it from --store-url and set "
            "ACTIVESTREAM_STORE_URL in the environment instead, or PGPASSWORD / ~/.pgpass for PostgreSQL")
    return text


def with_default(text: str, default) -> str:
    """A flag's help with its default shown, unless the text already says what it is.

    >>> with_default("share of traffic sent to labelers", 0.05)
    'share of traffic sent to labelers (default: 0.05)'
    >>> with_default("your own images", None), with_default("paced", True)
    ('your own images (default: none)', 'paced (default: true)')
    >>> with_default("Kafka servers (default: start the embedded broker)", None)
    'Kafka servers (default: start the embedded broker)'
    """
    if "default:" not in text:
        shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        text = f"{text} (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help with %
