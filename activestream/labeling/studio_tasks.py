"""Label Studio's JSON formats, both ways: pure functions, no I/O.

Our queue goes out as Label Studio tasks, each with the serving model's guess as a
prediction; Label Studio annotations (from its JSON export or its webhook) come back
as ``(item id, class index, labeler)``. One labeling config ties them together: an
``Image`` named ``image`` and single ``Choices`` named ``label`` whose values are our
class names, in class-index order.

Images travel as ``data:image/png;base64,...`` URIs inside the task: the queue holds
small images, and an inline image needs no storage connection, authentication or
cross-origin setup in Label Studio. Our item id rides in ``data.activestream_id``;
tasks without it are not ours and are skipped on the way back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from activestream.errors import InvalidInput

FROM_NAME = "label"
TO_NAME = "image"
ID_FIELD = "activestream_id"
LABELER_PREFIX = "labelstudio."
HASHED_PREFIX = "labelstudio-"
PNG_URI = "data:image/png;base64,"
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def label_config(classes: Sequence[str]) -> str:
    """The Label Studio labeling config for our classes (one image, one choice).

    >>> print(label_config(["cat", 'say "hi"']))
    <View>
      <Image name="image" value="$image"/>
      <Choices name="label" toName="image" choice="single-radio" showInline="true">
        <Choice value="cat"/>
        <Choice value='say "hi"'/>
      </Choices>
    </View>
    """
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single-radio" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>"
    )


def choice_result(class_name: str) -> dict:
    """One ``choices`` region of a prediction or annotation result."""
    return {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [class_name]}}


def prediction(version: int, top: Sequence[tuple[int, float]], classes: Sequence[str]) -> dict:
    """A Label Studio prediction from the model's top guesses ``[(class index, probability), ...]``.

    The best guess becomes the pre-selected choice and its probability the score;
    ``model_version`` is our registry version number as a string.

    >>> prediction(3, [(1, 0.7), (0, 0.2)], ["cat", "dog"])["result"][0]["value"]
    {'choices': ['dog']}
    """
    if not top:
        raise InvalidInput("bad_prediction", "a prediction needs at least one (class, probability) guess")
    best, prob = max(top, key=lambda guess: guess[1])
    return {"model_version": str(version), "score": float(prob), "result": [choice_result(classes[int(best)])]}


def png_data_uri(png: bytes) -> str:
    return PNG_URI + base64.b64encode(png).decode("ascii")


def image_from_uri(uri: object) -> bytes | None:
    """The bytes of a ``data:image/...;base64,`` URI; ``None`` for any other kind of URI."""
    if not isinstance(uri, str) or not uri.startswith("data:image/") or ";base64," not in uri:
        return None
    try:
        return base64.b64decode(uri.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput("bad_base64", f"task image is not valid base64 ({e})") from e


def to_task(item_id: str, png: bytes, prediction_: dict | None = None, extra: Mapping | None = None) -> dict:
    """One Label Studio task: the image inline, our id, and optionally the model's guess.

    ``extra`` adds columns to the task data (why it was picked, its score ...).

    >>> task = to_task("img-1", b"\\x89PNG", extra={"reason": "audit"})
    >>> task["data"]["activestream_id"], task["data"]["reason"], task["data"]["image"][:22]
    ('img-1', 'audit', 'data:image/png;base64,')
    """
    data = {**dict(extra or {}), "image": png_data_uri(png), ID_FIELD: item_id}
    task: dict = {"data": data}
    if prediction_ is not None:
        task["predictions"] = [prediction_]
    return task


@dataclass(frozen=True)
class StudioLabel:
    """One Label Studio annotation, translated: our item, our class index, our labeler name."""

    item_id: str
    label: int
    labeler: str
    annotation_id: int | None = None


@dataclass
class ImportReport:
    """What an export held: the labels to record, and how many annotations were passed over and why."""

    labels: list[StudioLabel] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def labeler_name(user: str | int) -> str:
    """Our labeler name for a Label Studio user (email, username or id); never the same for two users.

    Labeler names are 1-64 of ``A-Z a-z 0-9 . _ -``. A user that fits is
    ``labelstudio.`` plus the name with ``@`` written ``_at_`` and ``_`` written ``__``
    (so the name can be read back unambiguously); any other user gets ``labelstudio-``,
    a readable part and a hash of the original.

    >>> labeler_name("ann@example.com"), labeler_name("ann_lee@example.com")
    ('labelstudio.ann_at_example.com', 'labelstudio.ann__lee_at_example.com')
    >>> labeler_name("Zoë Ng")
    'labelstudio-Zo__Ng-3c6416a77013'
    """
    original = str(user)
    readable = "".join("__" if c == "_" else "_at_" if c == "@" else c for c in original)
    if re.fullmatch(r"[A-Za-z0-9._-]+", readable) and len(LABELER_PREFIX) + len(readable) <= 64:
        return LABELER_PREFIX + readable
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", original.replace("@", "_at_"))
    digest = hashlib.sha256(original.encode()).hexdigest()[:12]
    return f"{HASHED_PREFIX}{safe[:64 - len(HASHED_PREFIX) - 13]}-{digest}"


def user_of(completed_by: object, users: Callable[[int], str | None] | None = None) -> str:
    """The Label Studio user behind an annotation's ``completed_by``.

    Exports expanded with ``completed_by`` give ``{"id", "email", ...}``; the plain
    export and the webhook give only the numeric id, which ``users`` resolves
    (for example through Label Studio's ``/api/users/{id}``). Every path must name a
    person the same way, or one person would count as two labelers: an id that
    cannot be resolved is refused rather than guessed.
    """
    if isinstance(completed_by, Mapping):
        for key in ("email", "username"):
            if completed_by.get(key):
                return str(completed_by[key])
        completed_by = completed_by.get("id")
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        name = users(completed_by) if users is not None else None
        if name:
            return name
        raise InvalidInput("unknown_user", f"annotation by Label Studio user id {completed_by} whose email is unknown: "
                                           "export with completed_by expanded (serialization option "
                                           "annotations__completed_by only_id=false) or give the Label Studio URL "
                                           "and an API token so ids can be resolved")
    raise InvalidInput("unknown_user", f"annotation has no usable completed_by ({completed_by!r})")


def chosen_class(result: object, classes: Sequence[str]) -> int | None:
    """The class index an annotation result chose; ``None`` if it chose nothing.

    >>> chosen_class([{"type": "choices", "from_name": "label", "value": {"choices": ["dog"]}}], ["cat", "dog"])
    1
    """
    if not isinstance(result, list):
        raise InvalidInput("bad_annotation", f"annotation result must be a list, got {type(result).__name__}")
    values = [r.get("value") for r in result if isinstance(r, Mapping) and r.get("type") == "choices"]
    lists = [v.get("choices") for v in values if isinstance(v, Mapping)]
    picked = [c for choices in lists if isinstance(choices, list) for c in choices if isinstance(c, str)]
    if not picked:
        return None
    if len(set(picked)) > 1:
        raise InvalidInput("bad_annotation", f"annotation chose several classes {picked}; use a single choice")
    try:
        return list(classes).index(picked[0])
    except ValueError as e:
        raise InvalidInput("unknown_class", f"annotation chose {picked[0]!r}, not one of our classes "
                                            f"{list(classes)}; label with the config from `label export`") from e


def item_id_of(task: object) -> str | None:
    """Our item id carried in a task's data; ``None`` for tasks that are not ours."""
    data = task.get("data") if isinstance(task, Mapping) else None
    value = data.get(ID_FIELD) if isinstance(data, Mapping) else None
    return value if isinstance(value, str) and value else None


def annotation_label(item_id: str, annotation: Mapping, classes: Sequence[str],
                     users: Callable[[int], str | None] | None = None) -> StudioLabel | None:
    """Translate one annotation; ``None`` when it gives no label (cancelled/skipped or empty)."""
    if annotation.get("was_cancelled"):
        return None
    label = chosen_class(annotation.get("result") or [], classes)
    if label is None:
        return None
    labeler = labeler_name(user_of(annotation.get("completed_by"), users))
    return StudioLabel(item_id, label, labeler, annotation.get("id"))


def labels_from_export(tasks: object, classes: Sequence[str],
                       users: Callable[[int], str | None] | None = None) -> ImportReport:
    """Labels in a Label Studio JSON export (a list of tasks with ``annotations``).

    Annotations are taken oldest first (by id), so when a user annotated a task twice
    the newer one is recorded last and wins. Tasks that are not ours, skipped
    annotations and empty ones are counted in ``skipped``; a class we do not know or
    an unknown user raises :class:`InvalidInput` before anything is recorded.

    >>> export = [{"data": {"activestream_id": "img-1"}, "annotations": [
    ...     {"id": 5, "completed_by": {"id": 1, "email": "ann@example.com"},
    ...      "result": [{"type": "choices", "value": {"choices": ["dog"]}}]}]}]
    >>> labels_from_export(export, ["cat", "dog"]).labels
    [StudioLabel(item_id='img-1', label=1, labeler='labelstudio.ann_at_example.com', annotation_id=5)]
    """
    if not isinstance(tasks, list):
        raise InvalidInput("bad_export", "a Label Studio JSON export is a list of tasks; export with type JSON")
    report = ImportReport()
    for task in tasks:
        item_id = item_id_of(task)
        annotations = (task.get("annotations") or []) if isinstance(task, Mapping) else []
        if item_id is None:
            report.skipped["not_ours"] += len(annotations)
            continue
        for annotation in sorted(annotations, key=lambda a: (a.get("id") is None, a.get("id") or 0)):
            label = annotation_label(item_id, annotation, classes, users)
            if label is None:
                report.skipped["skipped" if annotation.get("was_cancelled") else "empty"] += 1
            else:
                report.labels.append(label)
    return report


def label_from_event(event: Mapping, classes: Sequence[str],
                     users: Callable[[int], str | None] | None = None) -> StudioLabel | None:
    """The label a Label Studio webhook event carries; ``None`` for events that carry none.

    Only ``ANNOTATION_CREATED`` and ``ANNOTATION_UPDATED`` on our tasks give labels.
    The annotator is the user id only, resolved by ``users`` (the project's Label
    Studio): an email written into the payload would let whoever sends the event
    name any labeler.

    >>> event = {"action": "ANNOTATION_CREATED", "task": {"id": 9, "data": {"activestream_id": "img-1"}},
    ...          "annotation": {"id": 4, "completed_by": 2, "result": [
    ...              {"type": "choices", "value": {"choices": ["cat"]}}]}}
    >>> label_from_event(event, ["cat", "dog"], users={2: "bo"}.get)
    StudioLabel(item_id='img-1', label=0, labeler='labelstudio.bo', annotation_id=4)
    """
    if event.get("action") not in ANNOTATION_ACTIONS:
        return None
    item_id = item_id_of(event.get("task"))
    annotation = event.get("annotation")
    if item_id is None or not isinstance(annotation, Mapping):
        return None
    by = annotation.get("completed_by")
    by_id = by.get("id") if isinstance(by, Mapping) else by
    return annotation_label(item_id, {**annotation, "completed_by": by_id}, classes, users)


def task_images(tasks: Iterable[object]) -> list[tuple[str | None, bytes | None, str | None]]:
    """``(our item id, inline image bytes, image reference)`` of each task of a ``/predict`` call.

    The reference is ``data.image`` when it is not inline (a URL, or a path on Label
    Studio such as ``/data/upload/...``); any of the three may be ``None``.
    """
    out = []
    for task in tasks:
        data = task.get("data") if isinstance(task, Mapping) else None
        image = data.get("image") if isinstance(data, Mapping) else None
        try:
            png = image_from_uri(image)
        except InvalidInput:
            png = None
        ref = image if isinstance(image, str) and png is None and not image.startswith("data:") else None
        out.append((item_id_of(task), png, ref))
    return out
