"""One root exception for everything activestream raises on purpose.

Messages say how to fix the problem; causes are chained with ``raise ... from``.
"""


# Process exit codes: a supervisor restarts a crashed worker, never a misconfigured one.
EXIT_CRASH = 1
EXIT_CONFIG = 2


class ActivestreamError(Exception):
    """Root of every error activestream raises on purpose."""


class ConfigError(ActivestreamError):
    """A setting is missing or invalid."""


class InvalidInput(ActivestreamError):
    """An input (a message, an array, an image) is malformed.

    ``kind`` is a short machine-readable reason, used as the dead-letter
    ``error_kind`` and as a metric label.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class IntegrityError(ActivestreamError):
    """Stored data does not match its recorded checksum."""


class NotFound(ActivestreamError):
    """A requested sample, label or model version does not exist."""


class StorageUnavailable(ActivestreamError, ConnectionError):
    """Shared storage (an S3-compatible endpoint) cannot be reached; a ConnectionError, so
    a worker retries with backoff for as long as it lasts instead of dead-lettering."""
