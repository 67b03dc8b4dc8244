"""The SuggestionEngine port: what an engine is given and what it returns.

An engine ranks a practice's purchasable catalogue against one appointment's context (its
treatment codes and reason) and explains each product it suggests. It is given only the candidate
products (never another patient's data, never what anyone bought) and returns at most `limit`
suggestions, best first, each drawn from the candidates."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AppointmentFacts:
    """What ended: the treatment codes and the free-text reason, as Appointment Manager sent
    them. No patient identity: an engine needs none."""

    treatment_codes: tuple[str, ...]
    reason: str | None


@dataclass(frozen=True, slots=True)
class CandidateProduct:
    """One product the practice offers and a patient could buy now."""

    product_id: uuid.UUID
    name: str
    description: str
    category: str
    practice_note: str | None = None


@dataclass(frozen=True, slots=True)
class EngineSuggestion:
    product_id: uuid.UUID
    # 0..1000, higher is more relevant (an integer, so it compares and stores exactly).
    score: int
    # Plain words a clinician can check: which terms or rules matched.
    rationale: str


@dataclass(frozen=True, slots=True)
class EngineInfo:
    name: str
    version: str


class SuggestionEngineError(Exception):
    """The engine could not answer (down, timed out, answered nonsense)."""


class SuggestionEngine(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def suggest(
        self,
        facts: AppointmentFacts,
        candidates: Sequence[CandidateProduct],
        *,
        limit: int,
    ) -> list[EngineSuggestion]:
        """At most `limit` suggestions, best first, each for a product among `candidates` and
        none twice; an empty list when nothing is relevant. Raises SuggestionEngineError."""
        ...


@dataclass(frozen=True, slots=True)
class ActivityFigures:
    """A practice's recommendation and order activity over a period, counted by the
    recommendations service (not by the AI): what a summary rests on. Money in minor units."""

    period_from: str  # ISO 8601 dates or times, as asked
    period_to: str
    currency: str | None
    recommendations_made: int
    recommendations_withdrawn: int
    patients_recommended: int
    recommendations_purchased: int
    orders: int
    orders_from_recommendations: int
    revenue_minor: int
    suggestions_pending: int
    suggestions_approved: int
    suggestions_rejected: int
    suggestions_expired: int
    top_categories: tuple[tuple[str, int], ...]  # (category, recommendations made), most first


class SummaryWriter(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def summarise(self, figures: ActivityFigures) -> str:
        """Plain sentences for staff that state the figures and nothing beyond them: no advice
        to patients, no promise or commitment on the practice's behalf."""
        ...
