"""The audit log for Audit & Compliance (spec §8: "exportable for inspection via the Audit &
Compliance module"): the same JSON lines as `product-shop audit export`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from product_shop.access.actor import Actor
from product_shop.access.policy import Action
from product_shop.audit.export import export_lines
from product_shop.core.moments import Timestamp
from product_shop.web.deps import ContextDep, permitted
from product_shop.web.problems import problem_responses

router = APIRouter(prefix="/v1", tags=["audit"])

AuditCompliance = Annotated[Actor, Depends(permitted(Action.EXPORT_AUDIT_LOG))]
NDJSON = "application/x-ndjson"


@router.get(
    "/audit/export",
    operation_id="exportAuditLog",
    summary="Audit log entries and checkpoints as JSON lines (Audit & Compliance only)",
    description=(
        "Every entry recorded at or after `since` (and before `until`), in log order, with its "
        "`prev_hash` and `entry_hash`; then the checkpoints taken in the range, the last with "
        "every stream head it holds. docs/audit.md gives the procedure to check it with "
        "sha256 alone. The export is itself recorded in the audit log."
    ),
    response_class=StreamingResponse,
    responses={
        200: {"content": {NDJSON: {"schema": {"type": "string"}}}},
        **problem_responses(401, 403, 422),
    },
)
def export_audit_log(
    context: ContextDep,
    actor: AuditCompliance,
    since: Annotated[Timestamp, Query(description="Entries recorded at or after this")],
    until: Annotated[Timestamp | None, Query(description="and before this")] = None,
) -> StreamingResponse:
    with context.database.unit_of_work() as session:
        context.audit.record(
            session,
            stream_type="audit_export",
            stream_id=actor.actor_id,
            action="audit.exported",
            actor=actor.audit_actor(),
            after={
                "since": since.isoformat(),
                "until": until.isoformat() if until else None,
            },
        )

    def lines() -> Iterator[bytes]:
        with context.database.reading() as session:
            for line in export_lines(session, since, until):
                yield (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    return StreamingResponse(lines(), media_type=NDJSON)
