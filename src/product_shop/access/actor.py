"""The authenticated caller. Services receive an Actor, never raw token claims."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from product_shop.audit.log import AuditActor


class Role(StrEnum):
    PATIENT = "patient"
    CLINICIAN = "clinician"
    PRACTICE_ADMIN = "practice_admin"
    FINANCE = "finance"
    STAFF = "staff"
    CATALOGUE_ADMIN = "catalogue_admin"
    # Primoro's platform operations team: event delivery, not patients' or practices' data.
    OPERATOR = "platform_operator"
    SERVICE = "service"
    # The AI engines (spec §7): they may create pending suggestions and write summaries for
    # staff, nothing else (access/policy.py). Always bound to one practice.
    AI = "ai"


# Roles whose tokens must name the practice they work for.
PRACTICE_ROLES = frozenset(
    {Role.PATIENT, Role.CLINICIAN, Role.PRACTICE_ADMIN, Role.FINANCE, Role.STAFF, Role.AI}
)
PRACTICE_STAFF_ROLES = frozenset({Role.CLINICIAN, Role.PRACTICE_ADMIN, Role.FINANCE, Role.STAFF})


@dataclass(frozen=True, slots=True)
class Actor:
    actor_id: str
    name: str | None
    role: Role
    practice_id: uuid.UUID | None
    mfa: bool
    auth_time: datetime | None

    @property
    def is_patient(self) -> bool:
        return self.role is Role.PATIENT

    @property
    def is_practice_staff(self) -> bool:
        return self.role in PRACTICE_STAFF_ROLES

    @property
    def patient_id(self) -> uuid.UUID | None:
        """A patient's own id (the token subject); None for everyone else."""
        return uuid.UUID(self.actor_id) if self.is_patient else None

    def has_fresh_mfa(self, now: datetime, max_age: timedelta) -> bool:
        return self.mfa and self.auth_time is not None and now - self.auth_time <= max_age

    @classmethod
    def ai(cls, engine: str, version: str, practice_id: uuid.UUID) -> Actor:
        """The AI engine acting for a practice: its own actor, named by engine and version, so
        the audit log says which engine suggested or summarised what."""
        return cls(
            actor_id=f"ai:{engine}"[:64],
            name=f"{engine} {version}",
            role=Role.AI,
            practice_id=practice_id,
            mfa=False,
            auth_time=None,
        )

    def audit_actor(self) -> AuditActor:
        """Who did it, for an audit entry. A patient is named by their id only: personal data
        in the audit log is limited to ids (their name is the delivery recipient's, often);
        staff and services keep their name (a named staff member, spec §9)."""
        name = None if self.is_patient else self.name
        return AuditActor(actor_id=self.actor_id, role=self.role.value, name=name)
