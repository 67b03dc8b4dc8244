"""Who may do what: spec §9 as one table. Every route names its Action; nothing else decides."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from enum import StrEnum

from product_shop.access.actor import Actor, Role
from product_shop.core.errors import Forbidden


class Action(StrEnum):
    BROWSE_CATALOGUE = "catalogue.browse"
    CONFIGURE_PRACTICE_CATALOGUE = "catalogue.configure_practice"
    MANAGE_PRODUCTS = "catalogue.manage_products"
    CHECKOUT = "checkout.create"
    VIEW_OWN_ORDERS = "orders.view_own"
    VIEW_PRACTICE_ORDERS = "orders.view_practice"
    INITIATE_REFUND = "refunds.initiate"
    VIEW_DASHBOARDS = "dashboards.view"
    SET_PMS_INVOICE_REF = "orders.set_pms_invoice_ref"
    MANAGE_FULFILMENT = "fulfilment.manage"
    VIEW_REFUNDS = "refunds.view"
    REQUEST_CANCELLATION = "orders.request_cancellation"
    VIEW_CANCELLATION_REQUESTS = "orders.view_cancellation_requests"
    MANAGE_EVENT_DELIVERY = "events.manage_delivery"
    VIEW_OPS_STATUS = "ops.view_status"
    EXPORT_AUDIT_LOG = "audit.export"
    RECOMMEND_PRODUCTS = "recommendations.recommend"
    VIEW_RECOMMENDATIONS = "recommendations.view_practice"
    VIEW_OWN_RECOMMENDATIONS = "recommendations.view_own"
    CREATE_AI_SUGGESTION = "ai.create_pending_suggestion"
    WRITE_AI_SUMMARY = "ai.write_summary"
    VIEW_AI_SUGGESTIONS = "ai_suggestions.view"
    DECIDE_AI_SUGGESTIONS = "ai_suggestions.decide"
    VIEW_AI_SUMMARIES = "ai_summaries.view"
    READ_FINANCE_DATA = "finance.read"


_P, _C, _PA, _F, _S, _CA = (
    Role.PATIENT,
    Role.CLINICIAN,
    Role.PRACTICE_ADMIN,
    Role.FINANCE,
    Role.STAFF,
    Role.CATALOGUE_ADMIN,
)

PERMISSIONS: dict[Action, frozenset[Role]] = {
    # Patients browse their practice's catalogue; practice staff see it with cost and settings;
    # the Primoro catalogue team manages it. Other modules: SERVICE_PERMISSIONS below.
    Action.BROWSE_CATALOGUE: frozenset({_P, _C, _PA, _F, _S, _CA}),
    Action.CONFIGURE_PRACTICE_CATALOGUE: frozenset({_PA}),
    Action.MANAGE_PRODUCTS: frozenset({_CA}),
    Action.CHECKOUT: frozenset({_P}),
    Action.VIEW_OWN_ORDERS: frozenset({_P}),
    Action.VIEW_PRACTICE_ORDERS: frozenset({_PA, _C}),
    # "Named, authenticated staff member" (spec §9): practice staff only, never a patient, a
    # service or the AI. The setting `refund_roles` narrows it (default practice admin and
    # finance), and every refund also needs a fresh MFA step-up (`require_refunder`).
    Action.INITIATE_REFUND: frozenset({_PA, _F, _S, _C}),
    # The refund list and the payment exceptions (spec §15.4): practice admin and finance.
    Action.VIEW_REFUNDS: frozenset({_PA, _F}),
    # The right to cancel (distance selling, spec §16 Privacy): the patient who owns the order.
    Action.REQUEST_CANCELLATION: frozenset({_P}),
    Action.VIEW_CANCELLATION_REQUESTS: frozenset({_PA, _F, _S}),
    Action.VIEW_DASHBOARDS: frozenset({_PA, _F}),
    # An optional enrichment reference (spec §5.2), recorded by the practice's admin or finance.
    Action.SET_PMS_INVOICE_REF: frozenset({_PA, _F}),
    # In-clinic collection, tracking by hand, the exception queue: the practice's care team.
    Action.MANAGE_FULFILMENT: frozenset({_PA, _C, _S}),
    # Event delivery to the other modules spans every practice: Primoro's operations team only
    # (the backlog per destination, parked deliveries queued again).
    Action.MANAGE_EVENT_DELIVERY: frozenset({Role.OPERATOR}),
    # The service's health detail (spec §16): database, migrations, integrations, event
    # delivery, jobs. No patient or practice data in it.
    Action.VIEW_OPS_STATUS: frozenset({Role.OPERATOR}),
    # The audit log leaves through Audit & Compliance only (spec §8): its service identity.
    Action.EXPORT_AUDIT_LOG: frozenset(),
    # Recommendations (spec §4.1, §10.3): a named clinician recommends (and withdraws) for a
    # patient of the practice; the care team reads them; a patient reads their own.
    Action.RECOMMEND_PRODUCTS: frozenset({_C}),
    Action.VIEW_RECOMMENDATIONS: frozenset({_PA, _C, _S}),
    Action.VIEW_OWN_RECOMMENDATIONS: frozenset({_P}),
    # AI (spec §7; docs/architecture.md, invariant 10): the AI actor may create a pending suggestion
    # and write a summary for staff, and nothing else in this table. A named clinician or staff
    # member of the practice sees and decides suggestions (approval makes a recommendation
    # attributed to them); summaries are for the practice's staff, never for patients.
    Action.CREATE_AI_SUGGESTION: frozenset({Role.AI}),
    Action.WRITE_AI_SUMMARY: frozenset({Role.AI}),
    Action.VIEW_AI_SUGGESTIONS: frozenset({_PA, _C, _S}),
    Action.DECIDE_AI_SUGGESTIONS: frozenset({_PA, _C, _S}),
    Action.VIEW_AI_SUMMARIES: frozenset({_PA, _C, _S, _F}),
    # Order-level revenue and refund data across every practice (spec §11.2): the Finance
    # module's service identity only, never a practice role (practice finance staff included).
    Action.READ_FINANCE_DATA: frozenset(),
}


# Other modules' service identities (the token's subject, role "service") get only what their
# module needs. Hygiene Subscriptions reads the live catalogue price and availability of a
# practice (spec §3.1). Audit & Compliance exports the audit log (spec §8). Finance reads
# order-level revenue and refund data for reconciliation and VAT reporting (spec §11.2).
# Integrated Payments, Rewards Manager and the supplier network call our signed webhooks and
# hold no token permissions. Any other service identity may do nothing.
HYGIENE_SUBSCRIPTIONS = "hygiene-subscriptions"
AUDIT_COMPLIANCE = "audit-compliance"
FINANCE = "finance"  # also its event destination's name (events/routing.py)
SERVICE_PERMISSIONS: dict[str, frozenset[Action]] = {
    HYGIENE_SUBSCRIPTIONS: frozenset({Action.BROWSE_CATALOGUE}),
    AUDIT_COMPLIANCE: frozenset({Action.EXPORT_AUDIT_LOG}),
    FINANCE: frozenset({Action.READ_FINANCE_DATA}),
}


def allowed(actor: Actor, action: Action) -> bool:
    if actor.role is Role.SERVICE:
        return action in SERVICE_PERMISSIONS.get(actor.actor_id, frozenset())
    return actor.role in PERMISSIONS[action]


def require(actor: Actor, action: Action) -> None:
    if not allowed(actor, action):
        if actor.role is Role.SERVICE:
            raise Forbidden(f"The service '{actor.actor_id}' may not perform {action.value}.")
        raise Forbidden(f"The role '{actor.role.value}' may not perform {action.value}.")


def require_refunder(
    actor: Actor,
    *,
    roles: Collection[Role],
    now: datetime,
    mfa_max_age: timedelta,
) -> None:
    """Spec §3.3, §5.3, §9: a refund is made only by a named, authenticated staff member whose
    role the practice lets refund (`roles`, from settings) and whose token shows MFA performed
    within `mfa_max_age` (`amr` has `mfa`, `auth_time` recent). A missing or stale step-up is
    403 `mfa_required`, so the portal can ask for one."""
    require(actor, Action.INITIATE_REFUND)
    if actor.role not in roles:
        raise Forbidden(f"The role '{actor.role.value}' may not refund at this practice.")
    if not actor.actor_id or not actor.name:
        raise Forbidden("Refunds are made by a named staff member; the token names nobody.")
    if not actor.has_fresh_mfa(now, mfa_max_age):
        raise Forbidden(
            "Refunds need multi-factor authentication within the last "
            f"{int(mfa_max_age.total_seconds())} seconds: sign in again with MFA.",
            code="mfa_required",
            max_age_seconds=int(mfa_max_age.total_seconds()),
        )
