"""The HTTP API (``/api``, Bearer tokens, documented at ``/docs`` and ``/openapi.json``) and the page (``/``).

The documentation pages (``/docs``, Swagger UI; ``/redoc``) load their scripts from
files packaged with ``fastapi-offline``, not from a CDN, so they work offline.

Status codes: 401 without a valid token (checked before the body is read, see
``doors.py``), 429 after too many wrong ones from one address, 413 for a body over
``label_max_body_bytes``, 403 for the image of an item that is not yours, 404 for an
unknown item, 409 when the item is not leased to you (or already has its labels),
422 for an invalid label. Endpoints are plain functions: FastAPI runs them in worker
threads, because the service does blocking SQL.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from activestream.errors import InvalidInput, NotFound
from activestream.labeling.access import standing
from activestream.labeling.doors import Doors, bearer, signed_in
from activestream.labeling.service import LabelingService
from activestream.labeling.signins import FailedSignIns
from activestream.storage.queue import LeaseConflict, QueueItem

STATIC = resources.files("activestream.labeling") / "static"


class Guess(BaseModel):
    label: int
    name: str
    p: float


class Item(BaseModel):
    """An item handed to a labeler. Why it was picked is not shown: that would anchor the answer."""

    id: str
    image: str = Field(description="URL of the image (PNG); send the same Authorization header")
    guesses: list[Guess] | None = Field(None, description="the model's top guesses, unless the project hides them")


class NextResponse(BaseModel):
    item: Item | None = Field(description="null when nothing waits")


class Submit(BaseModel):
    label: int = Field(description="class index, 0-based, as in /api/config")


class SubmitResponse(BaseModel):
    id: str
    label: int
    guesses: list[Guess] | None = Field(None, description="in 'after' mode: the model's guesses, shown once answered")


class Previous(BaseModel):
    label: int
    name: str


class UndoResponse(NextResponse):
    previous: Previous | None = Field(
        None, description="the class the caller gave the item before; it stays in force until they answer again. "
                          "null when the undone answer was a skip or unsure (those are forgotten)")


class SkipRequest(BaseModel):
    unsure: bool = Field(False, description="true: the labeler cannot tell (counted apart from plain skips)")


class ConfigResponse(BaseModel):
    labeler: str
    classes: list[str]
    guesses: Literal["show", "hide", "after"]


def _name(names: list[str], label: int) -> str:
    """A class's name; its index as text when the model in force has fewer classes."""
    return names[label] if label < len(names) else str(label)


def _guesses(service: LabelingService, item: QueueItem) -> list[Guess]:
    names = service.classes
    return [Guess(label=c, name=_name(names, c), p=p) for c, p in item.top]


def _item(service: LabelingService, item: QueueItem) -> Item:
    show = service.settings.label_guesses == "show"
    return Item(id=item.id, image=f"/api/items/{item.id}/image", guesses=_guesses(service, item) if show else None)


def get_service(request: Request) -> LabelingService:
    return request.app.state.service


def labeler(request: Request, _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The labeler the doors let in; ``bearer`` is here to document the scheme in OpenAPI."""
    return signed_in(request, "bearer")


Svc = Annotated[LabelingService, Depends(get_service)]
Who = Annotated[str, Depends(labeler)]


router = APIRouter(prefix="/api", tags=["labelers"])


@router.get("/config", response_model=ConfigResponse, summary="Who I am, the classes and the guesses mode")
def config(svc: Svc, who: Who):
    return ConfigResponse(labeler=who, classes=svc.classes, guesses=svc.settings.label_guesses)


@router.post("/next", response_model=NextResponse, summary="Lease the next item (or get the one I hold)")
def next_item(svc: Svc, who: Who):
    item = svc.next_item(who)
    return NextResponse(item=_item(svc, item) if item else None)


@router.get("/items/{item_id}/image", summary="The item's image (PNG), if it is leased to me or I answered it",
            responses={200: {"content": {"image/png": {}}}})
def image(item_id: str, svc: Svc, who: Who):
    if not svc.may_see(item_id, who):
        raise HTTPException(403, f"item {item_id!r} is not yours: only items leased to you (POST /api/next) "
                                 "or answered by you show their image")
    return Response(svc.image_png(item_id), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/items/{item_id}/label", response_model=SubmitResponse,
             summary="Submit a class for the item leased to me")
def submit(item_id: str, body: Submit, svc: Svc, who: Who):
    svc.submit(item_id, body.label, who)
    after = svc.settings.label_guesses == "after"
    return SubmitResponse(id=item_id, label=body.label, guesses=_guesses(svc, svc.item(item_id)) if after else None)


@router.post("/items/{item_id}/skip", status_code=204, summary="Give an item back without a label")
def skip(item_id: str, svc: Svc, who: Who, body: SkipRequest | None = None):
    svc.skip(item_id, who, unsure=bool(body and body.unsure))
    return Response(status_code=204)


@router.post("/undo", response_model=UndoResponse, summary="Reopen my last answer; label it again to correct it")
def undo(svc: Svc, who: Who):
    item = svc.undo(who)
    # An undone label stays in the queue's answers until replaced; an undone skip is deleted.
    held = standing(svc.queue, item.id, who, svc.clock())
    previous = Previous(label=held.label, name=_name(svc.classes, held.label)) if held.outcome == "labeled" else None
    return UndoResponse(item=_item(svc, item), previous=previous)


@router.get("/stats", summary="Queue depth, my count and pace, gold accuracy, kappa, rubber-stamp rate")
def stats(svc: Svc, who: Who) -> dict:
    return svc.stats(who)


def _too_large(request: Request, _exc) -> JSONResponse:
    setting = "LABEL_STUDIO_MAX_BODY_BYTES" if request.url.path.startswith("/ml-backend/") else "LABEL_MAX_BODY_BYTES"
    return JSONResponse({"detail": f"the request body is too large; the limit is ACTIVESTREAM_{setting}"},
                        status_code=413)


#: Our errors as HTTP answers (status, and whether the body names the error's kind).
ERRORS = {NotFound: (404, False), LeaseConflict: (409, False), InvalidInput: (422, True)}


def _answer(status: int, with_kind: bool):
    def handler(_request, exc) -> JSONResponse:
        return JSONResponse({"detail": str(exc), **({"kind": exc.kind} if with_kind else {})}, status_code=status)

    return handler


def create_app(service: LabelingService, signins: FailedSignIns | None = None) -> FastAPI:
    """The FastAPI app over ``service`` (also reachable as ``app.state.service``).

    ``signins`` counts wrong credentials per client address; by default on the
    service's clock, with the settings' burst and window. Body limits sit on the
    routers, inside the doors: a stranger's body is refused with 401, unread.
    """
    from activestream.labeling.studio import router as studio

    settings = service.settings
    app = FastAPIOffline(title="activestream labeling", version="1",
                         description="Labelers' API: next item, submit, skip, undo, stats.",
                         # no badge from Swagger's online validator: it would send the spec's URL away
                         swagger_ui_parameters={"validatorUrl": None})
    app.state.service = service
    app.add_middleware(Doors, service=service, signins=signins or FailedSignIns(
        settings.label_signin_failures, settings.label_signin_window, clock=service.clock))
    app.add_exception_handler(413, _too_large)
    for error, (status, with_kind) in ERRORS.items():
        app.add_exception_handler(error, _answer(status, with_kind))

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(router, max_body_size=settings.label_max_body_bytes)
    app.include_router(studio, prefix="/ml-backend", max_body_size=settings.label_studio_max_body_bytes)
    return app
