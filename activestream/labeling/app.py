"""The HTTP API (``/api``, Bearer tokens, documented at ``/docs`` and ``/openapi.json``) and the page (``/``).

Status codes: 401 without a valid token, 404 for an unknown item, 409 when the item
is leased to someone else (or already has its labels), 422 for an invalid label.
Endpoints are plain functions: FastAPI runs them in worker threads, because the
service does blocking SQL.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from activestream.errors import InvalidInput, NotFound
from activestream.labeling.service import LabelingService
from activestream.storage.queue import LeaseConflict, QueueItem

STATIC = resources.files("activestream.labeling") / "static"
bearer = HTTPBearer(auto_error=False, description="a labeler token from `activestream label token create NAME`")


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


class SkipRequest(BaseModel):
    unsure: bool = Field(False, description="true: the labeler cannot tell (counted apart from plain skips)")


class ConfigResponse(BaseModel):
    labeler: str
    classes: list[str]
    guesses: Literal["show", "hide", "after"]


def _guesses(service: LabelingService, item: QueueItem) -> list[Guess]:
    names = service.classes
    return [Guess(label=c, name=names[c] if c < len(names) else str(c), p=p) for c, p in item.top]


def _item(service: LabelingService, item: QueueItem) -> Item:
    show = service.settings.label_guesses == "show"
    return Item(id=item.id, image=f"/api/items/{item.id}/image", guesses=_guesses(service, item) if show else None)


def get_service(request: Request) -> LabelingService:
    return request.app.state.service


def labeler(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    name = creds and request.app.state.service.labeler_for(creds.credentials)
    if not name:
        raise HTTPException(401, "a valid labeler token is required (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    return name


Svc = Annotated[LabelingService, Depends(get_service)]
Who = Annotated[str, Depends(labeler)]


def create_app(service: LabelingService) -> FastAPI:
    """The FastAPI app over ``service`` (also reachable as ``app.state.service``)."""
    from activestream.labeling.studio import router as studio

    app = FastAPI(title="activestream labeling", version="1",
                  description="Labelers' API: next item, submit, skip, undo, stats.")
    app.state.service = service

    @app.exception_handler(NotFound)
    def _not_found(_request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(LeaseConflict)
    def _conflict(_request, exc: LeaseConflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(InvalidInput)
    def _invalid(_request, exc: InvalidInput):
        return JSONResponse({"detail": str(exc), "kind": exc.kind}, status_code=422)

    @app.get("/api/config", response_model=ConfigResponse, summary="Who I am, the classes and the guesses mode")
    def config(svc: Svc, who: Who):
        return ConfigResponse(labeler=who, classes=svc.classes, guesses=svc.settings.label_guesses)

    @app.post("/api/next", response_model=NextResponse, summary="Lease the next item (or get the one I hold)")
    def next_item(svc: Svc, who: Who):
        item = svc.next_item(who)
        return NextResponse(item=_item(svc, item) if item else None)

    @app.get("/api/items/{item_id}/image", summary="The item's image (PNG)",
             responses={200: {"content": {"image/png": {}}}})
    def image(item_id: str, svc: Svc, who: Who):
        return Response(svc.image_png(item_id), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/items/{item_id}/label", response_model=SubmitResponse, summary="Submit a class for an item")
    def submit(item_id: str, body: Submit, svc: Svc, who: Who):
        svc.record_label(item_id, body.label, who)
        after = svc.settings.label_guesses == "after"
        return SubmitResponse(id=item_id, label=body.label, guesses=_guesses(svc, svc.item(item_id)) if after else None)

    @app.post("/api/items/{item_id}/skip", status_code=204, summary="Give an item back without a label")
    def skip(item_id: str, svc: Svc, who: Who, body: SkipRequest | None = None):
        svc.skip(item_id, who, unsure=bool(body and body.unsure))
        return Response(status_code=204)

    @app.post("/api/undo", response_model=NextResponse, summary="Reopen my last answer; label it again to correct it")
    def undo(svc: Svc, who: Who):
        return NextResponse(item=_item(svc, svc.undo(who)))

    @app.get("/api/stats", summary="Queue depth, my count and pace, gold accuracy, kappa, rubber-stamp rate")
    def stats(svc: Svc, who: Who) -> dict:
        return svc.stats(who)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(studio, prefix="/ml-backend")
    return app
