"""What happens when an appointment ends (spec §7, §11.1): Appointment Manager tells us
(`integrations/appointments.py`), the context is stored for the practice, and an engine
(`recommendations/ai/`) ranks the practice's purchasable catalogue against its treatment codes
and reason. Each suggestion is stored **pending**, with the engine's name and version, its inputs
and its rationale, under the AI's own actor (`Actor.ai`), which may do nothing but that and write
summaries (access/policy.py). Receiving the context and creating each suggestion are audited.
What staff then do with a pending suggestion is in `suggestions.py`.

The engine is asked outside any transaction (`ask`): it may be a call to another service. The
web layer then records the outcome in one unit of work (`record_appointment`), with the inbox
row that makes a redelivered webhook a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditActor, AuditLog
from product_shop.catalogue import repository as catalogue
from product_shop.catalogue import views
from product_shop.core.clock import Clock
from product_shop.core.errors import Forbidden
from product_shop.core.ids import new_id
from product_shop.events import inbox
from product_shop.integrations.appointments import APPOINTMENT_ENDED, AppointmentEnded
from product_shop.logging import get_logger
from product_shop.recommendations.ai.port import (
    AppointmentFacts,
    CandidateProduct,
    EngineInfo,
    EngineSuggestion,
    SuggestionEngine,
    SuggestionEngineError,
)
from product_shop.recommendations.tables import AiSuggestion, AppointmentContext

# The logger keeps the name it had before intake moved out of suggestions.py.
log = get_logger("product_shop.recommendations.suggestions")

INBOX_SOURCE = "appointments"
# Appointment Manager, as the audit log names it for the context it sent.
APPOINTMENT_MANAGER = AuditActor(
    actor_id="appointment-manager", role="service", name="Appointment Manager"
)


@dataclass(frozen=True, slots=True)
class EngineOutcome:
    """What asking the engine gave: its suggestions, or why there are none."""

    status: str  # "suggested", "none", "engine_failed" or "off"
    engine: EngineInfo | None
    candidates: tuple[CandidateProduct, ...]
    suggestions: tuple[EngineSuggestion, ...]


class SuggestionIntake:
    def __init__(
        self,
        *,
        engine: SuggestionEngine | None,
        audit: AuditLog,
        clock: Clock,
        per_appointment: int,
        lifetime: timedelta,
    ) -> None:
        self.engine = engine
        self._audit = audit
        self._clock = clock
        self._per_appointment = per_appointment
        self._lifetime = lifetime

    @staticmethod
    def already_received(session: Session, message_id: str, event: AppointmentEnded) -> bool:
        """This message, or another about the same appointment, was recorded before."""
        return inbox.seen(session, INBOX_SOURCE, message_id) or _appointment_known(session, event)

    @staticmethod
    def candidates(session: Session, practice_id: uuid.UUID) -> tuple[CandidateProduct, ...]:
        """What an engine may suggest: the practice's catalogue as its patients see it, the
        products they could buy now, and nothing else (no other practice's, no hidden,
        unavailable or deprecated product)."""
        found = []
        for product, setting in catalogue.products_with_settings(session, practice_id):
            item = views.item("patient", product, setting)
            if item is None or not item.purchasable:
                continue
            found.append(
                CandidateProduct(
                    product_id=product.product_id,
                    name=product.name,
                    description=product.description,
                    category=product.category,
                    practice_note=setting.practice_note if setting else None,
                )
            )
        return tuple(found)

    def ask(self, event: AppointmentEnded, candidates: Sequence[CandidateProduct]) -> EngineOutcome:
        """Ask the engine (outside any transaction: it may be a remote call). Its answer is
        trusted for nothing: only candidates are kept, each once, at most the setting's number.
        A failing engine leaves the context stored with no suggestions (logged)."""
        if self.engine is None:
            return EngineOutcome("off", None, tuple(candidates), ())
        facts = AppointmentFacts(treatment_codes=event.treatment_codes, reason=event.reason)
        try:
            answer = self.engine.suggest(facts, candidates, limit=self._per_appointment)
        except SuggestionEngineError as exc:
            log.warning(
                "suggestion_engine_failed",
                engine=self.engine.info.name,
                appointment_id=event.appointment_id,
                error=str(exc),
            )
            return EngineOutcome("engine_failed", self.engine.info, tuple(candidates), ())
        allowed = {candidate.product_id for candidate in candidates}
        kept: dict[uuid.UUID, EngineSuggestion] = {}
        for suggestion in answer:
            usable = 0 <= suggestion.score <= 1000 and suggestion.rationale.strip()
            if usable and suggestion.product_id in allowed and suggestion.product_id not in kept:
                kept[suggestion.product_id] = suggestion
        chosen = tuple(list(kept.values())[: self._per_appointment])
        return EngineOutcome(
            "suggested" if chosen else "none", self.engine.info, tuple(candidates), chosen
        )

    def record_appointment(
        self,
        session: Session,
        message_id: str,
        event: AppointmentEnded,
        outcome: EngineOutcome,
    ) -> int | None:
        """Store the context and its pending suggestions; None when this message (or another
        message about the same appointment) was recorded before, so nothing happens twice."""
        now = self._clock.now()
        if not inbox.record(session, INBOX_SOURCE, message_id, APPOINTMENT_ENDED, now):
            return None
        if _appointment_known(session, event):
            return None
        context = AppointmentContext(
            appointment_context_id=new_id(),
            practice_id=event.practice_id,
            patient_id=event.patient_id,
            appointment_id=event.appointment_id,
            clinician_id=event.clinician_id,
            clinician_name=event.clinician_name,
            treatment_codes=list(event.treatment_codes),
            reason=event.reason,
            ended_at=event.ended_at,
            received_at=now,
            message_id=message_id,
            suggestions_status=outcome.status,
        )
        session.add(context)
        session.flush()  # its suggestions refer to it (no ORM relationship orders the inserts)
        self._audit.record(
            session,
            stream_type="appointment_context",
            stream_id=context.appointment_context_id,
            new_stream=True,
            action="appointment_context.received",
            actor=APPOINTMENT_MANAGER,
            practice_id=event.practice_id,
            after={
                "appointment_id": event.appointment_id,
                "patient_id": str(event.patient_id),
                "clinician_id": event.clinician_id,
                "treatment_codes": list(event.treatment_codes),
                "suggestions": outcome.status,
            },
            at=now,
        )
        if outcome.engine is None or not outcome.suggestions:
            return 0
        ai = Actor.ai(outcome.engine.name, outcome.engine.version, event.practice_id)
        inputs: dict[str, Any] = {
            "treatment_codes": list(event.treatment_codes),
            "reason": event.reason,
            "candidates": len(outcome.candidates),
        }
        for suggestion in outcome.suggestions:
            self._create_pending(session, ai, outcome.engine, context, suggestion, inputs, now)
        return len(outcome.suggestions)

    def _create_pending(
        self,
        session: Session,
        ai: Actor,
        engine: EngineInfo,
        context: AppointmentContext,
        suggestion: EngineSuggestion,
        inputs: dict[str, Any],
        now: datetime,
    ) -> None:
        """The one thing the AI may write: a pending suggestion, audited under its own name."""
        require(ai, Action.CREATE_AI_SUGGESTION)
        if ai.practice_id != context.practice_id:
            raise Forbidden("The AI acts for one practice only.")
        row = AiSuggestion(
            suggestion_id=new_id(),
            practice_id=context.practice_id,
            patient_id=context.patient_id,
            appointment_context_id=context.appointment_context_id,
            product_id=suggestion.product_id,
            engine=engine.name[:64],
            engine_version=engine.version[:32],
            inputs=inputs,
            rationale=suggestion.rationale,
            score=suggestion.score,
            status="pending",
            created_at=now,
            expires_at=now + self._lifetime,
        )
        session.add(row)
        self._audit.record(
            session,
            stream_type="ai_suggestion",
            stream_id=row.suggestion_id,
            new_stream=True,
            action="ai_suggestion.created",
            actor=ai.audit_actor(),
            practice_id=row.practice_id,
            after={
                "patient_id": str(row.patient_id),
                "product_id": str(row.product_id),
                "appointment_id": context.appointment_id,
                "engine": row.engine,
                "engine_version": row.engine_version,
                "score": row.score,
                "rationale": row.rationale,
                "status": "pending",
            },
            at=now,
        )


def _appointment_known(session: Session, event: AppointmentEnded) -> bool:
    return (
        session.scalar(
            select(AppointmentContext.appointment_context_id).where(
                AppointmentContext.practice_id == event.practice_id,
                AppointmentContext.appointment_id == event.appointment_id,
            )
        )
        is not None
    )
