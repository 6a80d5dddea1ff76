"""The HTTP side: a FastAPI app over a `TranslationService`, and the web page it ships.

    POST /v1/translate   sentences (+ options) -> translations with scores, attention, gates
    GET  /v1/health      {"status": "ok", "queued_sentences": n}
    GET  /v1/info        model, languages, vocabularies, checkpoint step, decoding defaults, limits
    GET  /               the live page (lstm_mt/serve/static/: plain HTML, JS and CSS)
    GET  /docs           the OpenAPI schema, browsable, with examples

Every refusal is a JSON `ErrorResponse` naming the field: 400 for a body that is not JSON or
not UTF-8, 413 for a body over ``limits.max_body_bytes``, 415 for a body sent as another media
type, 422 for a field of the wrong type or out of range, 503 with ``Retry-After`` when the queue
is full, 500 if decoding itself fails. None of them stops the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lstm_mt.serve.schemas import ErrorResponse, TranslateRequest, TranslateResponse
from lstm_mt.serve.service import RequestError, TranslationService

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "The body is not JSON or not UTF-8."),
        (413, "The body is larger than the server's limit."),
        (415, "The body is not sent as application/json."),
        (422, "A field has the wrong type or is out of range; `field` names it."),
        (503, "The queue is full; retry after the `Retry-After` seconds."),
    )
}


def create_app(service: TranslationService) -> FastAPI:
    """The app: routes, error handlers and the body-size limit; ``service`` starts and stops with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:  # the server has answered every request in flight by now
            await asyncio.get_running_loop().run_in_executor(None, service.close)

    app = FastAPI(
        title="lstm-mt",
        summary="Translation with an explicit, gate-by-gate LSTM: n-best lists, attention and gate traces.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=service.config.limits.max_body_bytes)
    add_error_handlers(app)

    @app.post("/v1/translate", response_model=TranslateResponse, responses=ERROR_RESPONSES)
    async def translate(request: TranslateRequest) -> JSONResponse:
        """Translate the sentences, in order; sentences of concurrent requests are decoded together."""
        future = service.submit(request)
        try:
            result = await asyncio.wrap_future(future)
        except Exception as error:
            log.exception("decoding failed")
            return error_response(500, "sentences", f"decoding failed: {type(error).__name__}: {error}")
        return JSONResponse(result)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        """``ok`` while the server answers, with the number of sentences waiting to be decoded."""
        return {"status": "ok", "queued_sentences": service.batcher.queued}

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        """The model (parameters, config), languages, vocabulary sizes, checkpoint, decoding defaults, limits."""
        return service.info()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def error_response(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON of a refusal: ``{"error": "<field>: <message>", "field": "<field>"}``."""
    return JSONResponse({"error": f"{field}: {message}", "field": field}, status, headers)


def add_error_handlers(app: FastAPI) -> None:
    """Answer refused requests with an `ErrorResponse` naming the field, never a traceback."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.field, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error_response(error.errors())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        cause = error.__cause__
        if isinstance(cause, UnicodeDecodeError):
            byte = cause.object[cause.start : cause.start + 1].hex()
            return error_response(400, "body", f"not valid UTF-8 (byte 0x{byte} at offset {cause.start})")
        field = "body" if error.status_code in (400, 413) else "path"
        return error_response(error.status_code, field, str(error.detail), dict(error.headers or {}))


def validation_error_response(errors: Any) -> JSONResponse:
    """The first of pydantic's errors as an `ErrorResponse` (400 for broken JSON, 415 for a non-JSON body)."""
    first = errors[0]
    location = list(first["loc"])
    if location[:1] == ["body"]:
        location = location[1:]
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "JSON decode error")
        where = f" at offset {location[0]}" if location else ""
        return error_response(400, "body", f"invalid JSON{where}: {reason}")
    if not location and isinstance(first.get("input"), bytes):
        return error_response(415, "body", "send a JSON object with Content-Type: application/json")
    field = field_path(location) or "body"
    message = str(first["msg"]).removeprefix("Value error, ")
    return error_response(422, field, message)


def field_path(location: list[Any]) -> str:
    """``["sentences", 2]`` -> ``sentences[2]``; ``["beam_size"]`` -> ``beam_size``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


class BodyTooLarge(HTTPException):
    """The body passed the limit: 413, raised while the app reads it."""


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` (by Content-Length, or counted as they arrive)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = error_response(413, "body", f"{declared.decode('latin-1')} bytes; at most {self.max_bytes}")
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge(413, f"more than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)
