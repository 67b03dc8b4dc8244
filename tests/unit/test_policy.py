"""Spec §9's access table, pinned."""

import uuid

import pytest

from product_shop.access.actor import Actor, Role
from product_shop.access.policy import (
    AUDIT_COMPLIANCE,
    FINANCE,
    HYGIENE_SUBSCRIPTIONS,
    PERMISSIONS,
    SERVICE_PERMISSIONS,
    Action,
    allowed,
    require,
)
from product_shop.core.errors import Forbidden

R = Role
EXPECTED = {
    Action.BROWSE_CATALOGUE: {
        R.PATIENT,
        R.CLINICIAN,
        R.PRACTICE_ADMIN,
        R.FINANCE,
        R.STAFF,
        R.CATALOGUE_ADMIN,
    },
    Action.CONFIGURE_PRACTICE_CATALOGUE: {R.PRACTICE_ADMIN},
    Action.MANAGE_PRODUCTS: {R.CATALOGUE_ADMIN},
    Action.CHECKOUT: {R.PATIENT},
    Action.VIEW_OWN_ORDERS: {R.PATIENT},
    Action.VIEW_PRACTICE_ORDERS: {R.PRACTICE_ADMIN, R.CLINICIAN},
    Action.INITIATE_REFUND: {R.PRACTICE_ADMIN, R.STAFF, R.FINANCE, R.CLINICIAN},
    Action.VIEW_REFUNDS: {R.PRACTICE_ADMIN, R.FINANCE},
    Action.REQUEST_CANCELLATION: {R.PATIENT},
    Action.VIEW_CANCELLATION_REQUESTS: {R.PRACTICE_ADMIN, R.FINANCE, R.STAFF},
    Action.VIEW_DASHBOARDS: {R.PRACTICE_ADMIN, R.FINANCE},
    Action.SET_PMS_INVOICE_REF: {R.PRACTICE_ADMIN, R.FINANCE},
    Action.MANAGE_FULFILMENT: {R.PRACTICE_ADMIN, R.CLINICIAN, R.STAFF},
    Action.MANAGE_EVENT_DELIVERY: {R.OPERATOR},
    Action.VIEW_OPS_STATUS: {R.OPERATOR},
    Action.EXPORT_AUDIT_LOG: set(),  # Audit & Compliance's service identity only
    Action.RECOMMEND_PRODUCTS: {R.CLINICIAN},
    Action.VIEW_RECOMMENDATIONS: {R.PRACTICE_ADMIN, R.CLINICIAN, R.STAFF},
    Action.VIEW_OWN_RECOMMENDATIONS: {R.PATIENT},
    Action.CREATE_AI_SUGGESTION: {R.AI},
    Action.WRITE_AI_SUMMARY: {R.AI},
    Action.VIEW_AI_SUGGESTIONS: {R.PRACTICE_ADMIN, R.CLINICIAN, R.STAFF},
    Action.DECIDE_AI_SUGGESTIONS: {R.PRACTICE_ADMIN, R.CLINICIAN, R.STAFF},
    Action.VIEW_AI_SUMMARIES: {R.PRACTICE_ADMIN, R.CLINICIAN, R.STAFF, R.FINANCE},
    Action.READ_FINANCE_DATA: set(),  # the Finance module's service identity only
}


def test_the_ai_actor_may_only_suggest_and_summarise() -> None:
    """Spec §7: everything but a pending suggestion and a summary is refused to the AI."""
    ai = Actor.ai("local-tfidf", "1", uuid.uuid4())
    assert {action for action in Action if allowed(ai, action)} == {
        Action.CREATE_AI_SUGGESTION,
        Action.WRITE_AI_SUMMARY,
    }


def _actor(role: Role, actor_id: str = "x") -> Actor:
    return Actor(actor_id, "X", role, uuid.uuid4(), mfa=False, auth_time=None)


def test_permission_table_is_spec_section_9() -> None:
    assert {action: set(roles) for action, roles in PERMISSIONS.items()} == EXPECTED


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("role", list(Role))
def test_require_refuses_every_role_outside_the_table(action: Action, role: Role) -> None:
    actor = _actor(role)
    if role in EXPECTED[action]:
        require(actor, action)
        assert allowed(actor, action)
    else:
        with pytest.raises(Forbidden):
            require(actor, action)


def test_service_identities_get_only_what_their_module_needs() -> None:
    """Issue 8 item 6: Hygiene Subscriptions reads the catalogue and nothing else; Audit &
    Compliance exports the audit log and nothing else (issue 14); Finance reads order and
    refund data and nothing else (issue 19); any other service identity (Integrated Payments
    signs webhooks instead) may do nothing."""
    expected = {
        HYGIENE_SUBSCRIPTIONS: {Action.BROWSE_CATALOGUE},
        AUDIT_COMPLIANCE: {Action.EXPORT_AUDIT_LOG},
        FINANCE: {Action.READ_FINANCE_DATA},
    }
    assert expected == SERVICE_PERMISSIONS
    hygiene = _actor(Role.SERVICE, HYGIENE_SUBSCRIPTIONS)
    audit = _actor(Role.SERVICE, AUDIT_COMPLIANCE)
    finance = _actor(Role.SERVICE, FINANCE)
    for action in Action:
        assert allowed(hygiene, action) is (action is Action.BROWSE_CATALOGUE)
        assert allowed(audit, action) is (action is Action.EXPORT_AUDIT_LOG)
        assert allowed(finance, action) is (action is Action.READ_FINANCE_DATA)
    for other in ("integrated-payments", "financial-insights", "rewards-manager", "x"):
        stranger = _actor(Role.SERVICE, other)
        for action in Action:
            with pytest.raises(Forbidden):
                require(stranger, action)
