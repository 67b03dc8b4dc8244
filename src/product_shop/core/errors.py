"""The one error tree. Domain and service code raise these; the web layer renders problem+json.

Every error carries an HTTP status and a stable machine `code` that clients may branch on.
`detail` is written for a person and never contains stack traces or secrets.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ProductShopError(Exception):
    """Base of every error this service reports to a caller."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra = extra


class BadRequest(ProductShopError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class Unauthenticated(ProductShopError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class InvalidToken(Unauthenticated):
    code = "invalid_token"
    title = "Invalid access token"


class Forbidden(ProductShopError):
    status = 403
    code = "forbidden"
    title = "Not permitted"


class NotFound(ProductShopError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ProductShopError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PreconditionFailed(ProductShopError):
    status = 412
    code = "precondition_failed"
    title = "Precondition failed"


class Unprocessable(ProductShopError):
    status = 422
    code = "unprocessable"
    title = "Unprocessable request"


class InvalidTransition(Conflict):
    code = "invalid_transition"
    title = "Transition not allowed"


class ServiceUnavailable(ProductShopError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class BadGateway(ProductShopError):
    status = 502
    code = "bad_gateway"
    title = "Upstream module error"
