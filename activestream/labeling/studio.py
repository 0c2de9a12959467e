"""Label Studio's ML-backend protocol, served under ``/ml-backend`` of the labeling app.

Label Studio calls ``GET /health``, ``POST /setup`` (its project, labeling config,
address and an API token), ``POST /predict`` (tasks; we answer with the serving
version's guesses) and ``POST /webhook`` (project events; annotations become labels
on ``labels``, by the Label Studio user who made them).

Every endpoint but ``/health`` takes HTTP basic auth: the user name of an activestream
labeler and that labeler's token (``activestream label token create NAME``) as the
password, entered as the ML backend's "Basic Auth" in Label Studio; ``doors.py``
checks it before the body is read. Label Studio sends them on ``/setup`` and
``/predict`` itself; for ``/webhook`` they must be an ``Authorization`` header of the
webhook Label Studio creates for the backend, which ``activestream label
studio-connect`` sets (see docs/label-studio.md). ``/setup`` is refused for any
Label Studio not listed in ``ACTIVESTREAM_LABEL_STUDIO_URLS``: we send its token
back there and fetch images from it.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.security import HTTPBasicCredentials

from activestream.errors import InvalidInput, NotFound
from activestream.labeling.doors import basic, signed_in
from activestream.labeling.studio_backend import StudioBackend, project_id
from activestream.labeling.studio_client import StudioError, StudioNotAllowed
from activestream.storage.queue import LeaseConflict

log = logging.getLogger(__name__)

router = APIRouter(tags=["Label Studio ML backend"])
_create = threading.Lock()


def backend(request: Request) -> StudioBackend:
    """The app's ML-backend state, made on first use from ``app.state.service``."""
    state = request.app.state
    with _create:
        if getattr(state, "studio", None) is None:
            state.studio = StudioBackend(state.service)
    return state.studio


def authenticated(request: Request, _creds: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> str:
    """The Label Studio account the doors let in; any other labeler gets 403."""
    name = signed_in(request, "basic")
    account = request.app.state.service.settings.label_studio_user
    if name != account:
        # The webhook records labels in the names of Label Studio's users: only the one
        # account set up for the integration may speak for them, not any page labeler.
        raise HTTPException(403, f"the ML backend takes only the Label Studio account "
                                 f"(ACTIVESTREAM_LABEL_STUDIO_USER={account!r})")
    return name


Backend = Annotated[StudioBackend, Depends(backend)]
Who = Annotated[str, Depends(authenticated)]
Payload = Annotated[dict, Body()]


@router.get("/health", summary="Liveness, and the version that would predict")
def health(studio: Backend) -> dict:
    return {"status": "UP", "model_class": "activestream", "model_version": _version(studio)}


@router.post("/setup", summary="Label Studio connects a project")
def setup(payload: Payload, studio: Backend, who: Who) -> dict:
    try:
        studio.remember(payload)
    except StudioNotAllowed as e:
        log.error("Label Studio /setup refused: %s", e)
        raise HTTPException(403, str(e)) from e
    return {"model_version": _version(studio)}


@router.post("/predict", summary="Pre-annotations from the serving model version")
def predict(payload: Payload, studio: Backend, who: Who) -> dict:
    tasks = payload.get("tasks")
    if not isinstance(tasks, list):
        raise HTTPException(422, "the request needs 'tasks': a list of Label Studio tasks")
    results, version = studio.predict(tasks, project_id(payload.get("project")))
    return {"results": results, "model_version": str(version)}


@router.post("/webhook", summary="Annotation events become labels")
def webhook(payload: Payload, studio: Backend, who: Who) -> dict:
    try:
        label = studio.record_event(payload)
    except StudioError as e:
        log.error("Label Studio event %s not recorded: %s", payload.get("action"), e)
        raise HTTPException(502, str(e)) from e
    except (InvalidInput, NotFound, LeaseConflict) as e:  # answered 422/404/409 by the app; Label Studio only logs it
        log.error("Label Studio event %s not recorded: %s", payload.get("action"), e)
        raise
    if label is None:
        return {"status": "ignored", "action": payload.get("action")}
    return {"status": "recorded", "id": label.item_id, "label": label.label, "labeler": label.labeler}


def _version(studio: StudioBackend) -> str | None:
    version = studio.serving_version()
    return None if version is None else str(version)
