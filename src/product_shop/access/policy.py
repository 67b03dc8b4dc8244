"""Who may do what: spec §9 as one table. Every route names its Action; nothing else decides."""

from __future__ import annotations

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


_P, _C, _PA, _F, _S, _CA, _SV = (
    Role.PATIENT,
    Role.CLINICIAN,
    Role.PRACTICE_ADMIN,
    Role.FINANCE,
    Role.STAFF,
    Role.CATALOGUE_ADMIN,
    Role.SERVICE,
)

PERMISSIONS: dict[Action, frozenset[Role]] = {
    # Patients browse their practice's catalogue; practice staff see it with cost and settings;
    # the Primoro catalogue team manages it; other modules (Hygiene Subscriptions) read it.
    Action.BROWSE_CATALOGUE: frozenset({_P, _C, _PA, _F, _S, _CA, _SV}),
    Action.CONFIGURE_PRACTICE_CATALOGUE: frozenset({_PA}),
    Action.MANAGE_PRODUCTS: frozenset({_CA}),
    Action.CHECKOUT: frozenset({_P}),
    Action.VIEW_OWN_ORDERS: frozenset({_P}),
    Action.VIEW_PRACTICE_ORDERS: frozenset({_PA, _C}),
    # "Named, authenticated staff member" with fresh MFA (checked where the refund is made).
    Action.INITIATE_REFUND: frozenset({_PA, _S, _F}),
    Action.VIEW_DASHBOARDS: frozenset({_PA, _F}),
    # An optional enrichment reference (spec §5.2), recorded by the practice's admin or finance.
    Action.SET_PMS_INVOICE_REF: frozenset({_PA, _F}),
}


def allowed(actor: Actor, action: Action) -> bool:
    return actor.role in PERMISSIONS[action]


def require(actor: Actor, action: Action) -> None:
    if not allowed(actor, action):
        raise Forbidden(f"The role '{actor.role.value}' may not perform {action.value}.")
