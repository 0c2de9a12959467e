"""The queue out to Label Studio as tasks, and Label Studio's JSON export back in as labels."""

from __future__ import annotations

from collections.abc import Callable

from activestream.errors import NotFound
from activestream.labeling import studio_tasks as st
from activestream.storage.queue import LeaseConflict


def export_tasks(service, limit: int = 1000) -> list[dict]:
    """Label Studio tasks for the items still waiting for labels, in queue order.

    Each task carries the image inline, our item id and the guess of the version that
    picked it as a prediction (``model_version`` is that version's number). Why it was
    picked (audit or uncertain) and its score stay out, as on our page: an annotator who
    knows an item is an audit may treat it differently, and the audit sample is only
    worth something while it is labeled like the rest.
    """
    classes = service.classes
    tasks = []
    for item in service.pending(limit):
        guess = st.prediction(item.version, item.top, classes) if item.top else None
        tasks.append(st.to_task(item.id, service.image_png(item.id), guess))
    return tasks


def import_labels(service, export: object, users: Callable[[int], str | None] | None = None) -> st.ImportReport:
    """Record the labels in a Label Studio JSON export; returns those recorded and what was passed over.

    The whole export is translated before the first label is recorded, so an unknown
    class or user stops the import with nothing half done. Recording is idempotent
    by item and labeler: importing the same export again changes nothing. The queue
    still decides who may label: an item that already has the labels it wants, or is
    leased to someone on our page right now, refuses a further labeler
    (``queue_refused``), and items this deployment does not know are ``unknown_item``.
    """
    found = st.labels_from_export(export, service.classes, users)
    report = st.ImportReport(skipped=found.skipped)
    for label in found.labels:
        try:
            service.record_label(label.item_id, label.label, label.labeler, resend=False)
        except LeaseConflict:
            report.skipped["queue_refused"] += 1
        except NotFound:
            report.skipped["unknown_item"] += 1
        else:
            report.labels.append(label)
    return report
