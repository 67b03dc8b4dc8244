"""A validated model straight to JSON bytes.

A route that returns a Pydantic model has FastAPI dump it, validate the dump against the
response model again and encode it once more. Our models are built by our own code and already
valid, so the hot routes return `model_response(model)`: one `model_dump_json`, same JSON. The
route keeps `response_model=` for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel
from starlette.responses import Response


def model_response(
    model: BaseModel, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json(by_alias=True),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )
