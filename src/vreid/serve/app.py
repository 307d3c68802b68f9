"""The FastAPI app of `vreid serve`: JSON routes under /api, the web page at /, images by gallery id.

Authentication (when a token is set): `Authorization: Bearer TOKEN`, the cookie `vreid_token`, or `?token=TOKEN`.
Opening the page as `/?token=TOKEN` sets the cookie, so the page's own requests and <img> tags carry it."""
from __future__ import annotations

import hmac
import json
import mimetypes
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from vreid.gallery.base import Embedder, GalleryItem, GalleryStore, Hit
from vreid.gallery.search import format_time
from vreid.serve.body_limit import BodyLimit
from vreid.serve.service import MAX_TOP_K, GalleryService, ServiceLimits
from vreid.serve.uploads import (DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, RequestError, decode_image,
                                 parse_cameras, parse_time, read_limited)

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "vreid_token"
#: Room for the multipart framing and form fields around the image itself.
MULTIPART_SLACK = 64 * 1024


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def item_json(item_id: int, item: GalleryItem, distance: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item_id, "name": Path(item.path).name, "camera": item.camera, "time": item.time,
                           "time_iso": None, "vehicle_id": item.vehicle_id, "image": f"/api/images/{item_id}"}
    if item.time is not None:
        out["time_iso"] = format_time(item.time)
    if distance is not None:
        out["distance"] = float(distance)
    return out


def hits_json(hits: list[Hit]) -> list[dict[str, Any]]:
    return [{"rank": rank, **item_json(h.id, h.item, h.distance)} for rank, h in enumerate(hits, start=1)]


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        if e.get("type") == "missing" and where == "image":
            parts.append("missing the image: send it as the multipart form field 'image'")
        else:
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed request"


def create_app(store: GalleryStore, embedder: Embedder, *, token: str | None = None,
               upload_dir: str | Path | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> FastAPI:
    """The service for `store`, embedding queries with `embedder` (which must match the store's dim)."""
    service = GalleryService(store, embedder, upload_dir, ServiceLimits(max_upload_bytes, max_image_pixels))
    app = FastAPI(title="vreid search service", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + MULTIPART_SLACK,
                       message=f"larger than the limit of {max_upload_bytes} bytes per upload; send a smaller image")

    def given_token(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token")

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = given_token(request)
        if given is None:
            raise RequestError(401, "this service needs a token: send 'Authorization: Bearer TOKEN', or open "
                                    "the page as /?token=TOKEN")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestError(401, "wrong token; use the one `vreid serve --token` was started with")

    def upload(image: UploadFile) -> tuple[bytes, Any]:
        data = read_limited(image.file, max_upload_bytes)
        return data, decode_image(data, max_image_pixels)

    auth = [Depends(authorized)]

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Up and able to answer (no token needed; says nothing of the gallery)."""
        return {"status": "ok"}

    @app.get("/api/stats", dependencies=auth)
    def stats() -> JSONResponse:
        return JSONResponse(json.loads(json.dumps(service.stats(), default=str)))  # numpy / Path values as text

    @app.post("/api/search", dependencies=auth)
    def search(image: UploadFile = File(..., description="the query image (JPEG, PNG, ...)"),
               top: int = Query(10, description=f"results to return, 1..{MAX_TOP_K}"),
               cameras: str | None = Query(None, description="only these cameras, e.g. 1,3"),
               after: str | None = Query(None, description="only images taken at or after (epoch s or ISO 8601)"),
               before: str | None = Query(None, description="only images taken at or before"),
               camera: int | None = Query(None, description="the query's own camera, for models that use it"),
               ) -> dict[str, Any]:
        """Rank the gallery against an uploaded image."""
        cams, t0, t1 = parse_cameras(cameras), parse_time(after, "after"), parse_time(before, "before")
        _, img = upload(image)
        hits = service.search(img, top_k=top, cameras=cams, after=t0, before=t1, camera=camera)
        return {"results": hits_json(hits), "metric": store.info.metric}

    @app.post("/api/gallery", dependencies=auth)
    def add(image: UploadFile = File(..., description="the image to add"),
            camera: int | None = Query(None), time: str | None = Query(None, description="epoch s or ISO 8601"),
            vehicle_id: int | None = Query(None)) -> dict[str, Any]:
        """Add an uploaded image (with its camera and time) to the gallery; answers its new id."""
        when = parse_time(time, "time")
        data, img = upload(image)
        new_id, item = service.add(data, img, camera=camera, time=when, vehicle_id=vehicle_id)
        return item_json(new_id, item)

    @app.delete("/api/gallery/{item_id}", dependencies=auth)
    def delete(item_id: int) -> dict[str, Any]:
        service.delete(item_id)
        return {"deleted": item_id}

    @app.get("/api/images/{item_id}", dependencies=auth)
    def image_file(item_id: int) -> FileResponse:
        """The file of a gallery item the service has returned; clients never name paths."""
        path = Path(service.item(item_id).path)
        if not path.is_file():
            raise RequestError(404, f"gallery image {item_id} is in the store but its file is gone")
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    @app.get("/", include_in_schema=False)
    def page(request: Request):
        given = request.query_params.get("token")
        if token is not None and given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error(401, "wrong token; use the one `vreid serve --token` was started with")
            response = RedirectResponse("/", status_code=303)  # the token leaves the address bar
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
