"""Message formats on every topic: version 1, JSON, one pydantic model per topic.

Each message carries ``"v": 1``; a consumer rejects versions it does not know (to
the dead-letter topic), so formats can evolve without silent misreads. Image bytes
travel base64-encoded inside the JSON.
"""

from __future__ import annotations

import base64
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from activestream.errors import InvalidInput

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class ImageV1(Message):
    """``images``: one production image. ``truth`` exists only in simulated streams and
    is read by nobody but the simulated labeler and the evaluator."""

    v: Literal[1]
    id: Id
    ts: float = Field(default_factory=time.time, description="seconds since the epoch")
    source: str = ""
    image: str | None = Field(None, description="encoded PNG or JPEG, base64")
    uri: str | None = Field(None, description="where a large image can be fetched instead")
    meta: dict = Field(default_factory=dict)
    truth: int | None = None

    @model_validator(mode="after")
    def _one_image(self) -> "ImageV1":
        if (self.image is None) == (self.uri is None):
            raise ValueError("exactly one of 'image' (base64 bytes) or 'uri' is required")
        return self

    def image_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.image, validate=True)
        except ValueError as e:
            raise InvalidInput("bad_base64", f"field 'image' is not valid base64: {e}") from e


class PredictionV1(Message):
    """``predictions``: what a model version said about an image."""

    v: Literal[1] = 1
    id: Id
    model: str
    version: int
    label: int
    confidence: float
    probs: list[float]
    scores: dict[str, float] = Field(description="uncertainty scores, higher = more worth a label")
    image: str | None = Field(None, description="the image inline (base64) when small")
    uri: str | None = None
    ts: float = Field(description="the image's timestamp")
    predicted_at: float
    embedding: list[float] | None = Field(None, description="penultimate-layer features, when the selector's diversity filter is on")

    @model_validator(mode="after")
    def _one_image(self) -> "PredictionV1":
        if (self.image is None) == (self.uri is None):
            raise ValueError("exactly one of 'image' (base64 bytes) or 'uri' is required, "
                             "so a selected image can be shown to labelers")
        return self


class LabelRequestV1(Message):
    """``labeling.requests``: an image worth a human label, and why."""

    v: Literal[1] = 1
    id: Id
    uri: str = Field(description="where the labeler gets the image (blob:<key> or the source URI)")
    reason: str = Field(description="uncertain, audit, drift or disagreement")
    score: float
    probability: float = Field(gt=0, le=1, description="probability with which the item was selected")
    model: str
    version: int
    top: list[tuple[int, float]] = Field(description="the model's top guesses: (class, probability)")
    priority: float
    ts: float


class LabelV1(Message):
    """``labels``: a human (or gold) answer for an image."""

    v: Literal[1] = 1
    id: Id
    label: int = Field(ge=0)
    labeler: str = Field(min_length=1, max_length=128)
    kind: Literal["human", "gold"] = "human"
    ts: float = Field(default_factory=time.time)


class ModelVersionV1(Message):
    """``model.versions`` (key: model name): a version announced for serving."""

    v: Literal[1] = 1
    name: str
    version: int
    parent: int | None = None
    uri: str
    sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    status: str
    train_size: int = 0
    ts: float = Field(default_factory=time.time)


class DeadLetterV1(Message):
    """``deadletter``: a message no stage could process, with the reason."""

    v: Literal[1] = 1
    topic: str
    partition: int
    offset: int
    key: str | None = None
    error_kind: str
    error: str
    raw: str = Field(description="base64 of at most the first 4 KiB of the original value")
    raw_size: int
    worker: str
    ts: float = Field(default_factory=time.time)


RAW_KEEP = 4096


def parse(model: type[Message], raw: bytes | None) -> Message:
    """Decode and validate one message, raising :class:`InvalidInput` with a short kind.

    >>> parse(LabelV1, b'{"v": 1, "id": "a1", "label": 3, "labeler": "ann"}').label
    3
    >>> parse(LabelV1, b'{"v": 2, "id": "a1"}')
    Traceback (most recent call last):
    ...
    activestream.errors.InvalidInput: unsupported message version 2 (this worker reads v1)
    """
    if not raw:
        raise InvalidInput("empty", "message has no value")
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        kind, text = _classify(e)
        raise InvalidInput(kind, text) from e


def _classify(e: ValidationError) -> tuple[str, str]:
    errors = e.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return "bad_json", f"not valid JSON: {first['msg']}"
    if first["type"] == "model_type":
        return "bad_envelope", "message is not a JSON object"
    if first["loc"] == ("v",):
        return "bad_version", f"unsupported message version {first.get('input')!r} (this worker reads v1)"
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return "bad_envelope", f"{where}: {first['msg']}"


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, raw: bytes | None,
                error: InvalidInput, worker: str) -> bytes:
    raw = raw or b""
    return DeadLetterV1(
        topic=topic, partition=partition, offset=offset,
        key=key.decode("utf-8", "replace") if key else None,
        error_kind=error.kind, error=str(error)[:1000],
        raw=base64.b64encode(raw[:RAW_KEEP]).decode(), raw_size=len(raw), worker=worker,
    ).encode()
