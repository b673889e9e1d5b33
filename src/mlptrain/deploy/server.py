"""`mlp-serve`'s HTTP application (FastAPI on uvicorn): /predict with server-side
batching, /health, /metadata, the page at /, and the OpenAPI description at
/openapi.json (browsable at /docs).

Bad input is a 4xx with a JSON body {"error": "..."} naming what was wrong; nothing a
client sends reaches a traceback, and the next request is served as usual.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

import mlptrain
from mlptrain.deploy import request_images
from mlptrain.deploy.batching import Batcher
from mlptrain.deploy.request_images import BadInput
from mlptrain.deploy.served_model import ServedModel, load_served_model
from mlptrain.util.logs import get_logger

log = get_logger()
SETTINGS_VARIABLE = "MLPTRAIN_SERVE_SETTINGS"  # how --workers processes get the settings


@dataclass(frozen=True)
class ServeSettings:
    models: tuple[str, ...]  # one checkpoint or ONNX file, or an ensemble's checkpoints
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = 64  # images per model call
    max_wait_ms: float = 5.0
    max_body_mb: float = 10.0
    max_images: int = 256  # per request
    threads: int | None = None  # torch's threads per worker

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "format": "binary"},
                },
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {"type": "string", "description": "an image file, base64"},
                                    {
                                        "type": "array",
                                        "description": "H x W pixels 0-255",
                                        "items": {"type": "array", "items": {"type": "integer"}},
                                    },
                                ]
                            },
                        }
                    },
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "N x H x W uint8 pixels, row by row",
                },
            },
        },
    }
}


def create_app(model: ServedModel, settings: ServeSettings) -> FastAPI:
    batcher = Batcher(model.probabilities, settings.max_batch, settings.max_wait_ms)
    status = {"ready": False}
    invert = None if model.builtin_data else False  # as mlp-predict reads files

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        await batcher.predict(request_images.stack([_blank(model)], 1))  # the warm-up call
        status["ready"] = True
        log.info("ready: http://%s:%d/", settings.host, settings.port)
        yield
        status["ready"] = False
        await batcher.stop()

    app = FastAPI(
        title="mlptrain model server",
        version=mlptrain.__version__,
        description="Class probabilities of images from a model trained by mlptrain.",
        lifespan=lifespan,
    )

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("error answering %s %s: %r", request.method, request.url.path, exc)
        return JSONResponse({"error": "internal error; see the server's log"}, status_code=500)

    @app.get("/health", summary="ready once the model is loaded and answered a warm-up call")
    async def health() -> JSONResponse:
        code = 200 if status["ready"] else 503
        return JSONResponse({"status": "ready" if status["ready"] else "loading"}, code)

    @app.get("/metadata", summary="the model: classes, image size, engine, source, files")
    async def metadata() -> dict:
        served = {"batches": batcher.batches, "images": batcher.images}
        limits = {key: value for key, value in asdict(settings).items() if key.startswith("max_")}
        return {
            **model.metadata(),
            "limits": limits,
            "served": served,
            "mlptrain_version": mlptrain.__version__,
        }

    page_html = resources.files("mlptrain.deploy").joinpath("page.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)  # read once, not per request

    @app.post(
        "/predict",
        summary="class probabilities of one or many images",
        description=request_images.__doc__,
        openapi_extra=PREDICT_BODY,
    )
    async def predict(request: Request) -> dict:
        batcher.arriving += 1
        try:
            pixels = await _read_images(request, model, settings, invert)
        finally:
            batcher.arriving -= 1
        probabilities = await batcher.predict(pixels)
        names = model.class_names
        return {
            "classes": names,
            "predictions": [
                {
                    "class": names[int(row.argmax())],
                    "index": int(row.argmax()),
                    "probabilities": [float(p) for p in row],
                }
                for row in probabilities
            ],
        }

    return app


def _blank(model: ServedModel):
    import numpy as np

    return np.zeros(model.image_size, dtype=np.uint8)


async def _read_images(request: Request, model: ServedModel, settings: ServeSettings, invert):
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in request_images.CONTENT_TYPES:
        raise BadInput(
            415,
            f"content type {kind or '(none)'!r} is not taken; send "
            + ", ".join(request_images.CONTENT_TYPES),
        )
    body = await _body(request, settings.max_body_bytes)
    size = model.image_size
    if kind == "application/octet-stream":
        images = request_images.from_raw(body, size)
    elif kind == "application/json":
        images = request_images.from_json(body, size, invert)
    else:
        images = request_images.from_files(await _files(request, body), size, invert)
    return request_images.stack(images, settings.max_images)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = f"the body is larger than the server's limit of {limit / 2**20:g} MB"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadInput(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(413, too_large)
        chunks.append(chunk)
    if not size:
        raise BadInput(400, "the body is empty")
    return b"".join(chunks)


async def _files(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream()).parse()
    except Exception as exc:  # a malformed multipart body
        raise BadInput(400, f"the multipart body cannot be read ({exc})") from None
    files = []
    for field, value in form.multi_items():
        if isinstance(value, str):
            raise BadInput(400, f"field {field!r} is text; send image files")
        files.append((value.filename or field, await value.read()))
    return files


def app_from_environment() -> FastAPI:
    """The app of a --workers process (uvicorn's factory): settings from the parent."""
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_VARIABLE]))
    return create_app(load_served_model(settings.models, settings.threads), settings)


def serve(settings: ServeSettings, model: ServedModel) -> None:
    """Serve until SIGTERM or Ctrl-C; SIGTERM lets requests in flight finish (exit 0)."""
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "timeout_graceful_shutdown": 30,
    }
    if settings.workers > 1:
        os.environ[SETTINGS_VARIABLE] = json.dumps(asdict(settings))
        uvicorn.run(
            "mlptrain.deploy.server:app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,
        )
        return
    DrainingServer(uvicorn.Config(create_app(model, settings), **options)).run()


class DrainingServer(uvicorn.Server):
    """uvicorn's server (which lets requests in flight finish on SIGTERM), but a SIGTERM
    so handled is a clean exit, status 0, instead of the signal raised again."""

    def handle_exit(self, sig: int, frame) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and captured and captured[-1] == sig:
            captured.pop()
