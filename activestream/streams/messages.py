"""Message formats on every topic: version 1, JSON, one pydantic model per topic.

Each message carries ``"v": 1``; a consumer rejects versions it does not know (to
the dead-letter topic), so formats can evolve without silent misreads. Image bytes
travel base64-encoded inside the JSON.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from activestream.errors import InvalidInput

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]
# No text field may carry U+0000: PostgreSQL refuses it, and one such record in a batch
# used to fail the whole batch's insert on every redelivery.
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
# Every integer lands in a 32-bit SQL column somewhere.
Count = Annotated[int, Field(ge=0, lt=2**31)]
VersionNumber = Annotated[int, Field(ge=1, lt=2**31)]


def _exactly_one(value: Any) -> Any:
    # JSON's true and 1.0 equal 1 in Python, and Literal[1] accepts them even in strict mode.
    if type(value) is not int:
        raise ValueError(f"must be the integer 1, got {value!r}")
    return value


FormatVersion = Annotated[Literal[1], BeforeValidator(_exactly_one)]


def _finite_json(value: Any) -> Any:
    """Raise ValueError if ``value`` holds a NaN or an infinity anywhere (RFC 8259 has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (JSON has no NaN or Infinity)")
    if isinstance(value, dict):
        for item in value.values():
            _finite_json(item)
    elif isinstance(value, list):
        for item in value:
            _finite_json(item)
    return value


class Message(BaseModel):
    """Every message: strict JSON types at the boundary (see :func:`parse`), finite numbers."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class ImageV1(Message):
    """``images``: one production image. ``truth`` exists only in simulated streams and
    is read by nobody but the simulated labeler and the evaluator."""

    v: FormatVersion
    id: Id
    ts: float = Field(default_factory=time.time, description="seconds since the epoch")
    source: Text = ""
    image: str | None = Field(None, description="encoded PNG, JPEG or WebP, base64")
    uri: Text | None = Field(None, description="where a large image can be fetched instead")
    meta: Annotated[dict, BeforeValidator(_finite_json)] = Field(default_factory=dict)
    truth: Count | None = None

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

    v: FormatVersion = 1
    id: Id
    model: Text
    version: VersionNumber
    label: Count
    class_name: Text | None = Field(None, description="the name of class `label` in the version's spec")
    confidence: float
    probs: list[float]
    scores: dict[str, float] = Field(description="uncertainty scores, higher = more worth a label")
    image: str | None = Field(None, description="the image inline (base64) when small")
    uri: Text | None = None
    ts: float = Field(description="the image's timestamp")
    predicted_at: float
    embedding: list[float] | None = Field(None, description="penultimate-layer features, when the selector's diversity filter is on")

    @model_validator(mode="after")
    def _one_image(self) -> "PredictionV1":
        if (self.image is None) == (self.uri is None):
            raise ValueError("exactly one of 'image' (base64 bytes) or 'uri' is required, "
                             "so a selected image can be shown to labelers")
        return self

    @field_validator("image")
    @classmethod
    def _base64(cls, image: str | None) -> str | None:
        # Checked here, not when a selected image is stored: a bad one then failed the
        # selector's whole batch, on every restart.
        if image is not None:
            try:
                base64.b64decode(image, validate=True)
            except ValueError as e:
                raise ValueError(f"not valid base64: {e}") from e
        return image

    def image_bytes(self) -> bytes | None:
        return None if self.image is None else base64.b64decode(self.image)


class LabelRequestV1(Message):
    """``labeling.requests``: an image worth a human label, and why."""

    v: FormatVersion = 1
    id: Id
    uri: Text = Field(description="where the labeler gets the image (blob:<key> or the source URI)")
    reason: Text = Field(description="uncertain, audit, drift or disagreement")
    score: float
    probability: float = Field(gt=0, le=1, description="probability with which the item was selected")
    model: Text
    version: VersionNumber
    top: list[tuple[Count, float]] = Field(description="the model's top guesses: (class, probability)")
    priority: float
    ts: float


class LabelV1(Message):
    """``labels``: a human (or gold) answer for an image."""

    v: FormatVersion = 1
    id: Id
    label: Count
    labeler: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
                         description="who labeled it: no control characters")
    kind: Literal["human", "gold"] = "human"
    ts: float = Field(default_factory=time.time)


class ModelVersionV1(Message):
    """``model.versions`` (key: model name): a version announced for serving."""

    v: FormatVersion = 1
    name: Text
    version: VersionNumber
    parent: VersionNumber | None = None
    uri: Text
    sha256: Text
    metrics: dict[str, float] = Field(default_factory=dict)
    status: Text
    train_size: Count = 0
    ts: float = Field(default_factory=time.time)
    decision: Text | None = Field(None, description="a manual decision this announces: promote, rollback or retire")
    by: Text | None = Field(None, description="who made the decision")
    reason: Text | None = Field(None, description="why")


class DriftV1(Message):
    """``drift`` (key: model name): a drift detector fired on a serving version's signal."""

    v: FormatVersion = 1
    model: Text
    version: VersionNumber
    detector: Literal["adwin", "page_hinkley", "kswin"]
    signal: Literal["confidence", "class_mix", "embedding", "audit_error"]
    position: Count = Field(description="images the detecting selector had seen when it fired")
    statistic: float = Field(description="ADWIN: the shift of its mean estimate; Page-Hinkley: its cumulative "
                             "deviation; KSWIN: the test's p-value (all on the standardised signal)")
    threshold: float = Field(description="ADWIN delta, Page-Hinkley lambda or KSWIN alpha")
    selector: Text = Field("", description="which selector process detected it")
    ts: float = Field(default_factory=time.time)


class DeadLetterV1(Message):
    """``deadletter``: a message no stage could process, with the reason."""

    v: FormatVersion = 1
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

    Strict: JSON types must match exactly (``"3"``, ``true`` or ``3.0`` is not an
    integer), and NaN, Infinity or a number that overflows to it are refused.

    >>> parse(LabelV1, b'{"v": 1, "id": "a1", "label": 3, "labeler": "ann"}').label
    3
    >>> parse(LabelV1, b'{"v": 2, "id": "a1"}')
    Traceback (most recent call last):
    ...
    activestream.errors.InvalidInput: unsupported message version 2 (this worker reads v1)
    >>> parse(LabelV1, b'{"v": 1, "id": "a1", "label": "3", "labeler": "ann"}')
    Traceback (most recent call last):
    ...
    activestream.errors.InvalidInput: label: Input should be a valid integer
    """
    if not raw:
        raise InvalidInput("empty", "message has no value")
    try:
        return model.model_validate_json(raw, strict=True)
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
    if first["loc"] == ("image",) and "base64" in first["msg"]:
        return "bad_base64", f"field 'image' is {first['msg'].removeprefix('Value error, ')}"
    if first["type"] == "finite_number" or "finite" in first["msg"]:
        return "not_finite", f"{where}: numbers must be finite (JSON has no NaN or Infinity)"
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
