"""Catalogue use cases. Each change adds its row, its audit entry and its outbox events to the
caller's session; the caller (the request) commits them together or not at all. How rows are
shown (views, snapshots, the page cursor) is in `catalogue.views`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from product_shop.access.actor import Actor
from product_shop.access.policy import Action, require
from product_shop.audit.log import AuditLog
from product_shop.catalogue import repository, views
from product_shop.catalogue.model import AvailabilityStatus, check_availability_transition
from product_shop.catalogue.ports import NoOpenCheckouts, OpenCheckouts
from product_shop.catalogue.schemas import (
    Catalogue,
    CatalogueItem,
    PracticeSettingsIn,
    ProductCreate,
    ProductPatch,
)
from product_shop.catalogue.schemas import Product as ProductOut
from product_shop.catalogue.tables import PracticeProductSetting, Product
from product_shop.core.clock import Clock, SystemClock
from product_shop.core.errors import BadRequest, Conflict, NotFound, PreconditionFailed
from product_shop.core.ids import new_id
from product_shop.events import types as ev
from product_shop.events.outbox import Outbox

DEFAULT_CATALOGUE_PAGE = 50
MAX_CATALOGUE_PAGE = 200
# Active order ids per deprecation audit entry and `product.deprecated` event.
DEPRECATION_BATCH = 500


class ProductReferences(Protocol):
    """Finds what references a product, for the deprecation workflow (spec §3.1)."""

    def active_order_batches(
        self, session: Session, product_id: uuid.UUID, *, batch_size: int
    ) -> Iterator[list[uuid.UUID]]:
        """The ids of active orders containing the product, ascending, in non-empty batches of
        at most `batch_size` (each read on demand: memory is bounded by one batch)."""
        ...


class NoActiveOrders:
    def active_order_batches(
        self, session: Session, product_id: uuid.UUID, *, batch_size: int
    ) -> Iterator[list[uuid.UUID]]:
        return iter(())


class CatalogueService:
    def __init__(
        self,
        *,
        audit: AuditLog,
        outbox: Outbox,
        clock: Clock | None = None,
        references: ProductReferences | None = None,
        open_checkouts: OpenCheckouts | None = None,
    ) -> None:
        self._audit = audit
        self._outbox = outbox
        self._clock = clock or SystemClock()
        self._references = references or NoActiveOrders()
        self._open_checkouts = open_checkouts or NoOpenCheckouts()

    # ---- reading -------------------------------------------------------------------------

    def catalogue(
        self,
        session: Session,
        actor: Actor,
        *,
        practice_id: uuid.UUID | None = None,
        category: str | None = None,
        limit: int = DEFAULT_CATALOGUE_PAGE,
        cursor: str | None = None,
    ) -> Catalogue:
        """One page in display order; `next_cursor` names the next (None on the last page).
        What the view may not see is filtered in the query, so a page is full while more
        items exist."""
        require(actor, Action.BROWSE_CATALOGUE)
        view, practice = views.view_for(actor, practice_id)
        after = views.decode_cursor(cursor) if cursor is not None else None
        limit = max(1, min(limit, MAX_CATALOGUE_PAGE))
        rows = repository.catalogue_page(
            session,
            practice,
            limit=limit + 1,
            after=after,
            category=category,
            offered_only=view in ("patient", "service"),
            visible_only=view == "patient",
        )
        page, more = rows[:limit], len(rows) > limit
        items = [
            item
            for product, setting in page
            if (item := views.item(view, product, setting)) is not None
        ]
        next_cursor = views.encode_cursor(page[-1][0]) if more else None
        return Catalogue(practice_id=practice, view=view, items=items, next_cursor=next_cursor)

    def catalogue_item(
        self,
        session: Session,
        actor: Actor,
        product_id: uuid.UUID,
        *,
        practice_id: uuid.UUID | None = None,
    ) -> CatalogueItem:
        require(actor, Action.BROWSE_CATALOGUE)
        view, practice = views.view_for(actor, practice_id)
        rows = repository.products_with_settings(session, practice, product_ids=[product_id])
        item = views.item(view, *rows[0]) if rows else None
        if item is None:
            raise NotFound("No such product in this catalogue.")
        return item

    # ---- the Primoro catalogue team ------------------------------------------------------

    def create_product(self, session: Session, actor: Actor, data: ProductCreate) -> ProductOut:
        require(actor, Action.MANAGE_PRODUCTS)
        now = self._clock.now()
        product = Product(
            product_id=new_id(),
            name=data.name,
            description=data.description,
            imagery_ref=data.imagery_ref,
            category=data.category,
            fulfilment_type=data.fulfilment_type.value,
            cost_price_minor=data.cost_price_minor,
            currency=data.currency,
            availability_status=data.availability_status.value,
            version=1,
            created_at=now,
            created_by=actor.actor_id,
            updated_at=now,
            updated_by=actor.actor_id,
        )
        session.add(product)
        snapshot = views.product_snapshot(product)
        self._audit.record(
            session,
            stream_type="product",
            stream_id=product.product_id,
            action="product.created",
            actor=actor.audit_actor(),
            after=snapshot,
            at=now,
        )
        self._outbox.emit(
            session,
            ev.PRODUCT_CREATED,
            aggregate_id=product.product_id,
            data={"product": snapshot, "changed_by": views.changed_by(actor)},
            at=now,
        )
        return ProductOut.model_validate(snapshot)

    def get_product(self, session: Session, actor: Actor, product_id: uuid.UUID) -> ProductOut:
        require(actor, Action.MANAGE_PRODUCTS)
        product = repository.get_product(session, product_id)
        if product is None:
            raise NotFound("No such product.")
        return ProductOut.model_validate(views.product_snapshot(product))

    def update_product(
        self,
        session: Session,
        actor: Actor,
        product_id: uuid.UUID,
        patch: ProductPatch,
        *,
        expected_version: int | None = None,
    ) -> ProductOut:
        require(actor, Action.MANAGE_PRODUCTS)
        product = repository.get_product(session, product_id, for_update=True)
        if product is None:
            raise NotFound("No such product.")
        _check_version(expected_version, product.version)
        requested = {name: getattr(patch, name) for name in patch.model_fields_set}
        nullable = {"imagery_ref"}
        if any(value is None and name not in nullable for name, value in requested.items()):
            raise BadRequest(
                "Only imagery_ref may be cleared with null.", code="field_not_nullable"
            )
        before = views.product_snapshot(product)
        if "availability_status" in requested:
            check_availability_transition(
                AvailabilityStatus(product.availability_status),
                AvailabilityStatus(requested["availability_status"]),
            )
        elif product.availability_status == AvailabilityStatus.DEPRECATED:
            raise Conflict(
                "A deprecated product can no longer be edited.", code="product_deprecated"
            )
        changes: dict[str, dict[str, Any]] = {}
        for name, value in requested.items():
            stored = value.value if isinstance(value, AvailabilityStatus) else value
            if getattr(product, name) != stored:
                changes[name] = {"before": getattr(product, name), "after": stored}
                setattr(product, name, stored)
        if not changes:
            return ProductOut.model_validate(before)
        now = self._clock.now()
        product.version += 1
        product.updated_at = now
        product.updated_by = actor.actor_id
        after = views.product_snapshot(product)
        self._audit.record(
            session,
            stream_type="product",
            stream_id=product.product_id,
            action="product.updated",
            actor=actor.audit_actor(),
            before=before,
            after=after,
            at=now,
        )
        changed_by = views.changed_by(actor)
        self._outbox.emit(
            session,
            ev.PRODUCT_UPDATED,
            aggregate_id=product.product_id,
            data={
                "product_id": product.product_id,
                "changes": changes,
                "product": after,
                "changed_by": changed_by,
            },
            at=now,
        )
        if "availability_status" in changes:
            self._availability_changed(session, product, changes["availability_status"], actor)
            if product.availability_status != AvailabilityStatus.AVAILABLE:
                self._open_checkouts.product_unpurchasable(
                    session, product.product_id, practice_id=None, actor=actor, at=now
                )
        return ProductOut.model_validate(after)

    def _availability_changed(
        self, session: Session, product: Product, change: dict[str, Any], actor: Actor
    ) -> None:
        now = self._clock.now()
        self._outbox.emit(
            session,
            ev.PRODUCT_AVAILABILITY_CHANGED,
            aggregate_id=product.product_id,
            data={
                "product_id": product.product_id,
                "before": change["before"],
                "after": change["after"],
                "purchasable": change["after"] == AvailabilityStatus.AVAILABLE,
                "changed_by": views.changed_by(actor),
            },
            at=now,
        )
        if change["after"] != AvailabilityStatus.DEPRECATED:
            return
        self._deprecated(session, product, actor, now)

    def _deprecated(self, session: Session, product: Product, actor: Actor, now: datetime) -> None:
        """Name the active orders containing the product: one audit entry and one
        `product.deprecated` event per batch of DEPRECATION_BATCH ids (read a batch at a time),
        numbered from 1; the last says `last_batch` and carries the totals. A product in no
        active order still gets one (empty) batch."""
        batches = self._references.active_order_batches(
            session, product.product_id, batch_size=DEPRECATION_BATCH
        )
        announced = 0
        for number, (order_ids, last) in enumerate(_flag_last(batches), start=1):
            announced += len(order_ids)
            affected = {
                "active_order_ids": [str(order_id) for order_id in order_ids],
                "hygiene_subscriptions": {
                    "product_id": str(product.product_id),
                    "action": "check_plans_referencing_product",
                },
            }
            batch: dict[str, Any] = {"batch": number, "last_batch": last}
            if last:
                batch |= {"batch_count": number, "active_order_count": announced}
            self._audit.record(
                session,
                stream_type="product",
                stream_id=product.product_id,
                action="product.deprecated",
                actor=actor.audit_actor(),
                after={"affected": affected, **batch},
                at=now,
            )
            self._outbox.emit(
                session,
                ev.PRODUCT_DEPRECATED,
                aggregate_id=product.product_id,
                data={
                    "product_id": product.product_id,
                    "affected": affected,
                    "notify_module_owners": ["product_shop", "hygiene_subscriptions"],
                    "changed_by": views.changed_by(actor),
                    **batch,
                },
                at=now,
            )

    # ---- practice admins -----------------------------------------------------------------

    def set_practice_settings(
        self,
        session: Session,
        actor: Actor,
        product_id: uuid.UUID,
        data: PracticeSettingsIn,
        *,
        expected_version: int | None = None,
    ) -> CatalogueItem:
        require(actor, Action.CONFIGURE_PRACTICE_CATALOGUE)
        practice_id = actor.practice_id
        assert practice_id is not None  # practice roles always carry one (access.tokens)
        product = repository.get_product(session, product_id)
        if product is None:
            raise NotFound("No such product in this catalogue.")
        if product.availability_status == AvailabilityStatus.DEPRECATED:
            raise Conflict("This product has been deprecated.", code="product_deprecated")
        setting = repository.get_setting(session, practice_id, product_id, for_update=True)
        _check_version(expected_version, setting.version if setting else 0)
        before = views.settings_snapshot(setting, product.currency) if setting else None
        now = self._clock.now()
        if setting is None:
            setting = PracticeProductSetting(
                practice_id=practice_id, product_id=product_id, version=0
            )
            session.add(setting)
        setting.retail_price_minor = data.retail_price_minor
        setting.practice_note = data.practice_note or None
        setting.visible = data.visible
        setting.in_clinic_stock_available = data.in_clinic_stock_available
        after = views.settings_snapshot(setting, product.currency)
        if after == before:
            item = views.item("practice", product, setting)
            assert item is not None
            return item
        setting.version += 1
        setting.updated_at = now
        setting.updated_by = actor.actor_id
        self._audit.record(
            session,
            stream_type="practice_catalogue",
            stream_id=practice_id,
            action="practice_product.settings_changed",
            actor=actor.audit_actor(),
            practice_id=practice_id,
            before={"product_id": str(product_id), "settings": before},
            after={"product_id": str(product_id), "settings": after},
            at=now,
        )
        item = views.item("practice", product, setting)
        assert item is not None
        if not item.purchasable:  # hidden, or no in-clinic stock: stop unpaid checkouts here
            self._open_checkouts.product_unpurchasable(
                session, product_id, practice_id=practice_id, actor=actor, at=now
            )
        self._outbox.emit(
            session,
            ev.PRACTICE_PRODUCT_SETTINGS_CHANGED,
            aggregate_id=practice_id,
            data={
                "practice_id": practice_id,
                "product_id": product_id,
                "before": before,
                "after": after,
                "purchasable": item.purchasable,
                "changed_by": views.changed_by(actor),
            },
            at=now,
        )
        return item


def _flag_last(
    batches: Iterator[list[uuid.UUID]],
) -> Iterator[tuple[list[uuid.UUID], bool]]:
    """Each batch with whether it is the last (reading one batch ahead); a single empty batch
    when there are none."""
    current = next(batches, None)
    if current is None:
        yield [], True
        return
    for following in batches:
        yield current, False
        current = following
    yield current, True


def _check_version(expected: int | None, actual: int) -> None:
    if expected is not None and expected != actual:
        raise PreconditionFailed(
            f"The record changed since you read it (version {actual}, If-Match {expected}).",
            code="version_mismatch",
        )
