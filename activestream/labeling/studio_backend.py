"""What the Label Studio ML backend does: predict with the serving version, turn events into labels.

One :class:`StudioBackend` per labeling service. It keeps the serving classifier
(the registry's newest promoted version, reloaded when that changes) and, per Label
Studio project, the address and token Label Studio sent to ``/setup``: the webhook
names users only by id, and those let us ask Label Studio for the email. Only
addresses in ``ACTIVESTREAM_LABEL_STUDIO_URLS`` are taken, and checked again on each
use. They are also written to ``<home>/labelstudio.json`` (mode 0600) so events that
arrive after a restart, before Label Studio calls ``/setup`` again, still resolve.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from activestream.errors import InvalidInput, NotFound
from activestream.labeling import studio_tasks as st
from activestream.labeling.studio_client import StudioClient, StudioError, StudioNotAllowed, allowed_url
from activestream.learners.classifier import Classifier
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import decode_image
from activestream.storage.decisions import in_force

log = logging.getLogger(__name__)

CONNECTIONS_FILE = "labelstudio.json"


def project_id(value: object) -> int | None:
    """Label Studio's project id from ``/setup``'s ``"3.1763900000"`` or a webhook's ``{"id": 3}``.

    >>> project_id("3.1763900000"), project_id({"id": 3}), project_id(None)
    (3, 3, None)
    """
    if isinstance(value, Mapping):
        value = value.get("id")
    try:
        return int(str(value).split(".")[0])
    except ValueError:
        return None


class StudioBackend:
    """The ML backend's state for one :class:`~activestream.labeling.service.LabelingService`."""

    def __init__(self, service):
        self.service = service
        self.classifier_: Classifier | None = None
        self.connections_: dict[int, dict] | None = None
        self.users_: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    # -- the serving model --------------------------------------------------------------------
    def serving_version(self) -> int | None:
        meta = in_force(self.service.registry, self.service.settings.model_name)
        return None if meta is None else meta.version

    def classifier(self) -> Classifier:
        """The version in force, loaded (sha256-checked) once per version."""
        name = self.service.settings.model_name
        meta = in_force(self.service.registry, name)
        if meta is None:
            raise NotFound(f"model {name!r} has no promoted version yet; nothing can predict")
        with self._lock:
            if self.classifier_ is None or self.classifier_.version != meta.version:
                arrays, meta = self.service.registry.load(name, meta.version)
                self.classifier_ = Classifier.from_arrays(ModelSpec.from_dict(meta.spec), arrays, meta.version,
                                                          self.service.settings.device)
                log.info("Label Studio backend predicts with %s v%d", name, meta.version)
            return self.classifier_

    def _image(self, item_id: str | None, inline: bytes | None, ref: str | None, project: int | None) -> bytes | None:
        """Our stored image for our items, else the image inline in the task, else one Label Studio hosts."""
        if item_id is not None:
            try:
                return self.service.image_png(item_id)
            except (NotFound, InvalidInput):
                pass
        if inline is not None or ref is None:
            return inline
        try:
            client = self._client(project)
            return client.download(ref, self.service.settings.max_image_bytes) if client else None
        except (StudioError, StudioNotAllowed, NotFound) as e:
            log.warning("cannot fetch %s from Label Studio: %s", ref, e)
            return None

    def predict(self, tasks: Sequence[object], project: int | None = None) -> tuple[list[dict], int]:
        """One Label Studio prediction per task (in order) and the version that made them.

        Images come from our blob store (our tasks), the task itself (``data:`` URIs) or
        the Label Studio of ``project`` (files uploaded there). A task whose image we
        cannot read (a URL elsewhere, a wrong size) gets an empty result, so answers
        still line up with tasks.
        """
        clf = self.classifier()
        arrays, rows = [], []
        for row, (item_id, inline, ref) in enumerate(st.task_images(tasks)):
            png = self._image(item_id, inline, ref, project)
            if png is None:
                continue
            try:
                arrays.append(decode_image(png, clf.spec, self.service.settings.max_pixels))
                rows.append(row)
            except InvalidInput as e:
                log.warning("Label Studio task %d: cannot predict (%s)", row, e)
        empty = {"model_version": str(clf.version), "score": 0.0, "result": []}
        results = [dict(empty) for _ in tasks]
        if arrays:
            probs = clf.predict_proba(np.stack(arrays))  # float32 [n, classes]
            for row, p in zip(rows, probs):
                top = [(int(c), float(p[c])) for c in np.argsort(-p)[:3]]
                results[row] = st.prediction(clf.version, top, clf.spec.classes)
        return results, clf.version

    # -- Label Studio connections ---------------------------------------------------------------
    def _path(self) -> Path:
        return self.service.settings.home_path / CONNECTIONS_FILE

    def _connections(self) -> dict[int, dict]:
        if self.connections_ is None:
            try:
                self.connections_ = {int(k): v for k, v in json.loads(self._path().read_text()).items()}
            except FileNotFoundError:
                self.connections_ = {}
            except (ValueError, AttributeError) as e:
                log.error("ignoring unreadable %s (%s); Label Studio's next /setup rewrites it", self._path(), e)
                self.connections_ = {}
        return self.connections_

    def remember(self, setup: Mapping) -> None:
        """Keep the address and token of the Label Studio project that called ``/setup``.

        Raises :class:`StudioNotAllowed` for an address that is not a configured Label
        Studio: we would send its token there and fetch images from it.
        """
        project, host, token = project_id(setup.get("project")), setup.get("hostname"), setup.get("access_token")
        if project is None or not isinstance(host, str) or not isinstance(token, str) or not host or not token:
            return
        known_url = self._allowed(host)
        with self._lock:
            known = self._connections()
            if known.get(project) == {"hostname": known_url, "token": token}:
                return
            known[project] = {"hostname": known_url, "token": token}
            path = self._path()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({str(k): v for k, v in known.items()}, f)
            os.replace(path.with_suffix(".tmp"), path)

    def _allowed(self, host: object) -> str:
        """The configured spelling of ``host``; checked on every use, so removing a URL takes effect at once."""
        url = allowed_url(host, self.service.settings.label_studio_urls)
        if url is None:
            raise StudioNotAllowed(f"Label Studio at {str(host)[:200]!r} is not one this service may talk to; "
                                   "add its base URL to ACTIVESTREAM_LABEL_STUDIO_URLS (comma-separated)")
        return url

    def _client(self, project: int | None) -> StudioClient | None:
        """A client of the project's Label Studio (from its ``/setup``); ``None`` if it never called."""
        with self._lock:
            conn = self._connections().get(project) if project is not None else None
        return None if conn is None else StudioClient(self._allowed(conn["hostname"]), conn["token"])

    def user(self, project: int | None, user_id: int) -> str | None:
        """A Label Studio user's email, asked of the project's Label Studio; cached."""
        key = (project or 0, user_id)
        if key in self.users_:
            return self.users_[key]
        try:
            client = self._client(project)
        except StudioNotAllowed as e:
            raise StudioError(str(e)) from e
        if client is None:
            return None
        email = client.user_email(user_id)
        if email:
            self.users_[key] = email
        return email

    def record_event(self, event: Mapping) -> st.StudioLabel | None:
        """Record the label an ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` event carries."""
        project = project_id(event.get("project"))
        label = st.label_from_event(event, self.service.classes, lambda uid: self.user(project, uid))
        if label is not None:
            self.service.record_label(label.item_id, label.label, label.labeler)
        return label
