"""How a command fails: one line that says what is wrong and names the flag or setting at
fault, a non-zero exit, and the traceback only with ``--debug``."""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback

from pydantic import ValidationError

from activestream.errors import EXIT_CONFIG, EXIT_CRASH, ActivestreamError, ConfigError

# Settings whose flag is not simply --<name with dashes>.
FLAG_ALIASES = {"label_port": ("--port",), "label_host": ("--host",), "model_name": ("--model",)}


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong flag is one line pointing at --help, not the whole usage block
    (subcommands' parsers are of the same class)."""

    def error(self, message: str):
        print(f"{self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def setting_name(field: str, argv: list[str]) -> str:
    """The flag the user typed for ``field`` (if any) and its environment variable.

    >>> setting_name("budget", ["run", "--budget=2"]), setting_name("budget", ["run"])
    ('--budget (ACTIVESTREAM_BUDGET)', 'ACTIVESTREAM_BUDGET')
    """
    env = f"ACTIVESTREAM_{field.upper()}"
    for flag in (f"--{field.replace('_', '-')}", *FLAG_ALIASES.get(field, ())):
        if any(a == flag or a.startswith(f"{flag}=") for a in argv):
            return f"{flag} ({env})"
    return env


def invalid_settings(e: ValidationError, argv: list[str]) -> ConfigError:
    """pydantic's block of errors as one line, each naming its flag or variable.

    >>> from activestream.config import Settings
    >>> try:
    ...     Settings(budget=2)
    ... except ValidationError as e:
    ...     print(invalid_settings(e, ["--budget", "2"]))
    invalid setting --budget (ACTIVESTREAM_BUDGET): Input should be less than or equal to 1 (got 2)
    """
    parts = []
    for err in e.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{setting_name(field, argv)}: {message} (got {_clip(repr(err.get('input')), 60)})")
    return ConfigError("invalid setting " + "; ".join(parts))


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextlib.contextmanager
def failing(argv: list[str], debug: bool, catch_all: bool = True):
    """Turn what a command raises into one line on stderr and an exit code: 2 for a
    configuration error, 1 for anything else. ``catch_all`` False leaves unexpected
    exceptions (bugs) to Python, as a worker whose log wants the traceback does."""
    try:
        yield
    except ValidationError as e:
        _exit(invalid_settings(e, argv), debug, e)
    except ActivestreamError as e:
        _exit(e, debug, e)
    except Exception as e:
        if not catch_all:
            raise
        _exit(RuntimeError(f"{type(e).__name__}: {_clip(_one_line(str(e)))} (rerun with --debug for the "
                           "traceback)"), debug, e)


def _exit(shown: Exception, debug: bool, cause: BaseException) -> None:
    if debug:
        traceback.print_exception(cause)
    print(f"activestream: {_one_line(str(shown))}", file=sys.stderr)
    sys.exit(EXIT_CONFIG if isinstance(shown, ConfigError) else EXIT_CRASH)


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
