"""The relay's retry schedule: exponential backoff with jitter, a cap per wait, parked after the
horizon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from product_shop.events.delivery import RetryPolicy

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_waits_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(
        base=timedelta(seconds=10), cap=timedelta(minutes=5), horizon=timedelta(days=3)
    )
    for made in range(1, 12):
        at = policy.next_attempt(attempts=made, queued_at=NOW, now=NOW)
        assert at is not None
        longest = min(timedelta(seconds=10 * 2 ** (made - 1)), timedelta(minutes=5))
        assert longest == policy.longest_wait(made)
        assert longest / 2 <= at - NOW <= longest


def test_the_wait_is_jittered() -> None:
    policy = RetryPolicy()
    waits = {policy.next_attempt(attempts=3, queued_at=NOW, now=NOW) for _ in range(20)}
    assert len(waits) > 1


def test_a_try_that_would_fall_beyond_the_horizon_parks() -> None:
    policy = RetryPolicy(horizon=timedelta(days=3), jitter=lambda: 0.0)
    late = NOW + timedelta(days=3) - timedelta(seconds=1)
    assert policy.next_attempt(attempts=20, queued_at=NOW, now=late) is None
    early = NOW + timedelta(hours=1)
    assert policy.next_attempt(attempts=20, queued_at=NOW, now=early) is not None


def test_the_default_schedule_tries_for_about_three_days() -> None:
    """Stripe-like: minutes at first, hours later, given up after three days."""
    policy = RetryPolicy(jitter=lambda: 0.999999)
    now, made = NOW, 0
    while (at := policy.next_attempt(attempts=made + 1, queued_at=NOW, now=now)) is not None:
        now, made = at, made + 1
    assert timedelta(days=2) < now - NOW <= timedelta(days=3)
    assert 15 <= made <= 30
