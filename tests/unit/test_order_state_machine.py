"""The order and line-item state machine (spec §3.3), driven by random sequences of line events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from product_shop.catalogue.model import FulfilmentType
from product_shop.core.errors import InvalidTransition
from product_shop.orders.model import (
    LINE_TRANSITIONS,
    STAGE,
    LineState,
    OrderStatus,
    RefundStatus,
    advance_status,
    fulfilment_status,
    next_line_state,
    order_status,
    refund_status,
)

L = LineState
DROP_SHIP, IN_CLINIC, DIGITAL = (
    FulfilmentType.DROP_SHIP,
    FulfilmentType.IN_CLINIC,
    FulfilmentType.DIGITAL,
)
CREATED, IN_PROGRESS, COMPLETED, REFUNDED = (
    OrderStatus.CREATED,
    OrderStatus.FULFILMENT_IN_PROGRESS,
    OrderStatus.COMPLETED,
    OrderStatus.REFUNDED,
)
RANK = {CREATED: 0, IN_PROGRESS: 1, COMPLETED: 2}
FULFILLED = frozenset({L.DELIVERED, L.COLLECTED})
# Finished lines: fulfilled, or stopped after a refund (cancelled). The parent is Completed when
# every line is finished.
FINISHED = FULFILLED | {L.CANCELLED}

# The tables as the architecture describes them: the happy path, "exception" reachable from every
# unfinished state, recovery from an exception to a later step, no way out of a finished line, and
# "cancelled" (a refunded line stopped) from every state where the goods have not left: never
# once a parcel is dispatched, delivered or collected.
EXPECTED_TRANSITIONS: dict[FulfilmentType, dict[LineState, set[LineState]]] = {
    DROP_SHIP: {
        L.PENDING: {L.SENT_TO_SUPPLIER, L.EXCEPTION, L.CANCELLED},
        L.SENT_TO_SUPPLIER: {L.DISPATCHED, L.EXCEPTION, L.CANCELLED},
        L.DISPATCHED: {L.DELIVERED, L.EXCEPTION},
        L.EXCEPTION: {L.SENT_TO_SUPPLIER, L.DISPATCHED, L.DELIVERED, L.CANCELLED},
        L.DELIVERED: set(),
        L.CANCELLED: set(),
    },
    IN_CLINIC: {
        L.PENDING: {L.PREPARING, L.EXCEPTION, L.CANCELLED},
        L.PREPARING: {L.READY_FOR_COLLECTION, L.EXCEPTION, L.CANCELLED},
        L.READY_FOR_COLLECTION: {L.COLLECTED, L.EXCEPTION, L.CANCELLED},
        L.EXCEPTION: {L.PREPARING, L.READY_FOR_COLLECTION, L.CANCELLED},
        L.COLLECTED: set(),
        L.CANCELLED: set(),
    },
    DIGITAL: {
        L.PENDING: {L.DELIVERED, L.EXCEPTION, L.CANCELLED},
        L.EXCEPTION: {L.DELIVERED, L.CANCELLED},
        L.DELIVERED: set(),
        L.CANCELLED: set(),
    },
}
HAPPY_PATHS: dict[FulfilmentType, list[LineState]] = {
    DROP_SHIP: [L.PENDING, L.SENT_TO_SUPPLIER, L.DISPATCHED, L.DELIVERED],
    IN_CLINIC: [L.PENDING, L.PREPARING, L.READY_FOR_COLLECTION, L.COLLECTED],
    DIGITAL: [L.PENDING, L.DELIVERED],
}


# ---- the tables, exactly -----------------------------------------------------------------------


def test_transition_tables_match_the_architecture_for_every_fulfilment_type() -> None:
    actual = {
        kind: {state: set(targets) for state, targets in table.items()}
        for kind, table in LINE_TRANSITIONS.items()
    }
    assert actual == EXPECTED_TRANSITIONS


def test_every_line_state_has_a_stage_and_fulfilled_states_count_as_completed() -> None:
    assert set(STAGE) == set(LineState)
    assert {state for state, stage in STAGE.items() if stage is COMPLETED} == FINISHED
    assert {state for state, stage in STAGE.items() if stage is CREATED} == {L.PENDING}


@pytest.mark.parametrize("kind", list(FulfilmentType))
def test_the_happy_path_of_each_fulfilment_type_is_allowed_step_by_step(
    kind: FulfilmentType,
) -> None:
    # given a new line of that type
    path = HAPPY_PATHS[kind]
    state = path[0]
    # when it walks its happy path
    for target in path[1:]:
        state = next_line_state(kind, state, target)
        # then every step is accepted
        assert state is target
    assert state in FULFILLED


@pytest.mark.parametrize("kind", list(FulfilmentType))
def test_every_unfinished_line_can_raise_an_exception(kind: FulfilmentType) -> None:
    for state in HAPPY_PATHS[kind][:-1]:
        assert next_line_state(kind, state, L.EXCEPTION) is L.EXCEPTION


@pytest.mark.parametrize(
    ("kind", "current", "target"),
    [
        (DROP_SHIP, L.PENDING, L.DELIVERED),
        (DROP_SHIP, L.PENDING, L.DISPATCHED),
        (DROP_SHIP, L.SENT_TO_SUPPLIER, L.DELIVERED),
        (DROP_SHIP, L.PENDING, L.PREPARING),
        (DROP_SHIP, L.DISPATCHED, L.PENDING),
        (IN_CLINIC, L.PENDING, L.COLLECTED),
        (IN_CLINIC, L.PENDING, L.READY_FOR_COLLECTION),
        (IN_CLINIC, L.PREPARING, L.DELIVERED),
        (IN_CLINIC, L.EXCEPTION, L.COLLECTED),
        (DIGITAL, L.PENDING, L.SENT_TO_SUPPLIER),
        (DIGITAL, L.PENDING, L.COLLECTED),
        (DIGITAL, L.PENDING, L.PENDING),
    ],
)
def test_skipping_steps_or_borrowing_another_types_states_is_refused(
    kind: FulfilmentType, current: LineState, target: LineState
) -> None:
    with pytest.raises(InvalidTransition) as raised:
        next_line_state(kind, current, target)
    assert raised.value.code == "invalid_fulfilment_transition"
    assert raised.value.status == 409


@pytest.mark.parametrize(
    ("kind", "fulfilled"),
    [(DROP_SHIP, L.DELIVERED), (IN_CLINIC, L.COLLECTED), (DIGITAL, L.DELIVERED)],
)
def test_a_fulfilled_line_never_moves_again(kind: FulfilmentType, fulfilled: LineState) -> None:
    for target in LineState:
        with pytest.raises(InvalidTransition):
            next_line_state(kind, fulfilled, target)


def test_an_order_without_lines_has_no_status() -> None:
    with pytest.raises(ValueError, match="at least one line"):
        fulfilment_status([])


# ---- random sequences of line events -----------------------------------------------------------


@st.composite
def line_event(
    draw: st.DrawFn, kinds: list[FulfilmentType], states: list[LineState]
) -> tuple[int, LineState]:
    """A (line index, target) event: half the time a move the table allows, else any state."""
    index = draw(st.integers(min_value=0, max_value=len(kinds) - 1))
    allowed = sorted(LINE_TRANSITIONS[kinds[index]][states[index]])
    pick_an_allowed_move: bool = draw(st.booleans())
    if allowed and pick_an_allowed_move:
        return index, draw(st.sampled_from(allowed))
    return index, draw(st.sampled_from(list(LineState)))


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(list(FulfilmentType)), min_size=1, max_size=5),
    data=st.data(),
)
def test_random_line_events_keep_the_parent_at_the_least_advanced_lines_stage(
    kinds: list[FulfilmentType], data: st.DataObject
) -> None:
    # given a new order: every line pending, the order Created
    states = [L.PENDING] * len(kinds)
    parent = fulfilment_status(states)
    assert parent is CREATED
    completed_seen = False

    for _ in range(data.draw(st.integers(min_value=0, max_value=40), label="steps")):
        # when a random event hits a random line
        index, target = data.draw(line_event(kinds, states), label="event")
        before = list(states)
        allowed = target in LINE_TRANSITIONS[kinds[index]][states[index]]
        if allowed:
            states[index] = next_line_state(kinds[index], states[index], target)
            # then the line took exactly the requested state and no other line moved
            assert states[index] is target
        else:
            with pytest.raises(InvalidTransition):
                next_line_state(kinds[index], states[index], target)
            # then a refused event leaves the line (and the order) untouched
            assert states == before

        # then the parent is the least advanced line's stage
        status = fulfilment_status(states)
        assert status is min((STAGE[state] for state in states), key=RANK.__getitem__)
        # and the parent never goes backwards, so the Completed guard always accepts the move
        assert RANK[status] >= RANK[parent]
        parent = advance_status(parent, status)
        assert parent is status
        # and Completed exactly when every line is delivered, collected or cancelled
        assert (status is COMPLETED) == all(state in FINISHED for state in states)
        # and once Completed, always Completed
        if completed_seen:
            assert status is COMPLETED
        completed_seen = completed_seen or status is COMPLETED


@given(st.sampled_from(list(OrderStatus)))
def test_a_completed_order_cannot_go_back(after: OrderStatus) -> None:
    if after is COMPLETED:
        assert advance_status(COMPLETED, after) is COMPLETED
    else:
        with pytest.raises(InvalidTransition) as raised:
            advance_status(COMPLETED, after)
        assert raised.value.code == "order_completed"


@given(
    st.sampled_from([CREATED, IN_PROGRESS]),
    st.sampled_from([CREATED, IN_PROGRESS, COMPLETED]),
)
def test_the_completed_guard_lets_an_unfinished_order_move(
    before: OrderStatus, after: OrderStatus
) -> None:
    assert advance_status(before, after) is after


# ---- the refund overlay ------------------------------------------------------------------------


@given(
    captured=st.integers(min_value=1, max_value=10_000_000),
    refunded=st.integers(min_value=0, max_value=10_000_000),
)
def test_refund_status_is_none_partial_or_full_by_the_refunded_amount(
    captured: int, refunded: int
) -> None:
    expected = (
        RefundStatus.NONE
        if refunded == 0
        else RefundStatus.PARTIAL
        if refunded < captured
        else RefundStatus.FULL
    )
    assert refund_status(captured, refunded) is expected


@pytest.mark.parametrize(
    ("captured", "refunded", "expected"),
    [
        (5999, 0, RefundStatus.NONE),
        (5999, 1, RefundStatus.PARTIAL),
        (5999, 5998, RefundStatus.PARTIAL),
        (5999, 5999, RefundStatus.FULL),
    ],
)
def test_refund_status_boundaries(captured: int, refunded: int, expected: RefundStatus) -> None:
    assert refund_status(captured, refunded) is expected


@given(
    fulfilment=st.sampled_from([CREATED, IN_PROGRESS, COMPLETED]),
    captured=st.integers(min_value=1, max_value=10_000_000),
    refunded=st.integers(min_value=0, max_value=10_000_000),
)
def test_refunded_overlays_the_fulfilment_status_iff_anything_was_refunded(
    fulfilment: OrderStatus, captured: int, refunded: int
) -> None:
    # given an order at some fulfilment stage, when its refund state is overlaid
    shown = order_status(fulfilment, refund_status(captured, refunded))
    # then it shows Refunded iff money went back, otherwise exactly its fulfilment stage
    assert shown is (REFUNDED if refunded > 0 else fulfilment)


@settings(max_examples=100, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(list(FulfilmentType)), min_size=1, max_size=5),
    captured=st.integers(min_value=1, max_value=100_000),
    data=st.data(),
)
def test_refunds_do_not_change_line_states_or_the_fulfilment_status(
    kinds: list[FulfilmentType], captured: int, data: st.DataObject
) -> None:
    # given an order whose lines have progressed randomly
    states = [L.PENDING] * len(kinds)
    for _ in range(data.draw(st.integers(min_value=0, max_value=20), label="steps")):
        index, target = data.draw(line_event(kinds, states), label="event")
        if target in LINE_TRANSITIONS[kinds[index]][states[index]]:
            states[index] = next_line_state(kinds[index], states[index], target)
    fulfilment = fulfilment_status(states)
    lines_before = list(states)
    # when refunds accumulate
    refunded = 0
    for amount in data.draw(
        st.lists(st.integers(min_value=1, max_value=captured), max_size=5), label="refunds"
    ):
        refunded = min(captured, refunded + amount)
        shown = order_status(fulfilment_status(states), refund_status(captured, refunded))
        # then the order shows Refunded, while the lines and their fulfilment stage stay put
        assert shown is REFUNDED
        assert states == lines_before
        assert fulfilment_status(states) is fulfilment
