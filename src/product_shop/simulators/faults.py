"""What the simulators share: problem bodies, and the faults the test controls queue per operation
(delays, errors) with the helpers that apply them around an operation."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


@dataclass
class Fault:
    mode: Literal["delay", "error", "delay_after"]
    seconds: float = 0.0
    status: int = 503
    times: int = 1


class FaultSource(Protocol):
    def take_fault(self, operation: str) -> Fault | None: ...


class FaultQueue:
    """`take_fault` for a simulator's state, which declares the `faults` and `lock` fields."""

    faults: dict[str, Fault]
    lock: threading.RLock

    def take_fault(self, operation: str) -> Fault | None:
        """The fault queued for `operation`, counting one use of it (gone after its last)."""
        with self.lock:
            found = self.faults.get(operation)
            if found is None:
                return None
            found.times -= 1
            if found.times <= 0:
                del self.faults[operation]
            return found


def problem(status: int, code: str, detail: str) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def parse_body(
    model: type[Model], raw: bytes, code: str, not_json: str = "The body is not a JSON object."
) -> Model | JSONResponse:
    """A request body as `model`, or a 422 problem `code` naming the first field at fault."""
    try:
        return model.model_validate(json.loads(raw))
    except ValueError as exc:  # not JSON, or a pydantic ValidationError
        if isinstance(exc, ValidationError) and exc.errors():
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            detail = f"{where}: {first['msg']}" if where else str(first["msg"])
        else:
            detail = not_json
        return problem(422, code, detail)


def unauthorised() -> JSONResponse:
    return problem(401, "unauthorised", "Bad API key.")


# The simulators' own routes are coroutines (cheap under load: no thread hand-off); their
# simulated delays sleep without blocking other requests.
async def before(state: FaultSource, operation: str) -> tuple[JSONResponse | None, Fault | None]:
    """Apply the fault queued for `operation` before it runs: sleep ("delay"), answer with the
    fault's status ("error", returned first), or hand back a fault to apply after ("delay_after",
    returned second: the operation takes effect, its answer comes late)."""
    found = state.take_fault(operation)
    if found is None:
        return None, None
    if found.mode == "delay":
        await asyncio.sleep(found.seconds)
    if found.mode == "error":
        return problem(found.status, "simulated_failure", "Simulated failure."), None
    return None, found if found.mode == "delay_after" else None


async def after(found: Fault | None) -> None:
    if found is not None:
        await asyncio.sleep(found.seconds)
