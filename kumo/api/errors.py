"""Error bodies of API.md: `{"error": "<short_code>", "message": "<what is wrong and how to fix it>"}`.

Bad input is never a 500: pydantic's complaints become 422s naming the field, malformed JSON a 400.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from kumo.topology.errors import KumoError
from kumo.topology.resources import SPECS

log = logging.getLogger("kumo.api")

# Fields clients may read but not write: request schemas leave them out, so pydantic calls them "extra".
_READ_ONLY = {f for spec in SPECS.values() for f in spec.read_only | spec.immutable} | {"id"}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": code, "message": message})


def _field(loc: tuple[object, ...]) -> str:
    where = [str(x) for x in loc]
    if where and where[0] in ("body", "path", "query"):
        where = where[1:]
    return ".".join(where)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KumoError)
    async def kumo_error(_: Request, exc: KumoError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return error_response(400, "malformed_json", f"the request body is not valid JSON: {detail}")
        parts = []
        code = "invalid_field"
        for e in errors[:5]:
            field = _field(tuple(e.get("loc", ())))
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden" and field in _READ_ONLY:
                msg, code = "read-only here (set by the server, or fixed at creation)", "read_only_field"
            elif e.get("type") == "extra_forbidden":
                msg = "unknown field; check its spelling against /openapi.json"
            elif e.get("type") == "missing" and not field:
                msg = "a JSON body is required"
            parts.append(f"{field}: {msg}" if field else msg)
        return error_response(422, code, "; ".join(parts))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "no such path; the API lives under /v1 (see /openapi.json)"
        return error_response(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")
