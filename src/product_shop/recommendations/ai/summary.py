"""The default summary writer: a few plain sentences that state a period's figures for staff.

Spec §7 lets AI summarise order and recommendation activity for staff review, and forbids it to
make commitments on the practice's behalf. A template is the safest writer of such text: every
sentence is a figure the recommendations service counted (ActivityFigures), put into words, and
nothing else. There is no advice, no forecast and no promise, because no sentence here can say one;
a language model could, so this writer is the default and any other must meet the same test
(tests/unit/test_ai_summary.py).

Money arrives in integer minor units and is shown in major units with its currency code
("GBP 1,234.50"); currencies are assumed to have two decimal places."""

from __future__ import annotations

from product_shop.recommendations.ai.port import ActivityFigures, EngineInfo


class PlainSummaryWriter:
    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="plain-summary", version="1")

    def summarise(self, figures: ActivityFigures) -> str:
        f = figures
        period = f"from {f.period_from} to {f.period_to}"
        if _no_activity(f):
            return f"There was no recommendation, suggestion or order activity {period}."

        sentences = [f"Activity {period}."]
        if f.recommendations_made or f.patients_recommended:
            sentences.append(
                f"{_count(f.recommendations_made, 'recommendation')} "
                f"{_was(f.recommendations_made)} made for "
                f"{_count(f.patients_recommended, 'patient')}."
            )
        else:
            sentences.append("No recommendations were made.")
        if f.recommendations_withdrawn:
            sentences.append(
                f"{_count(f.recommendations_withdrawn, 'recommendation')} "
                f"{_was(f.recommendations_withdrawn)} withdrawn."
            )
        if f.recommendations_made > 0:
            rate = f.recommendations_purchased * 100 / f.recommendations_made
            sentences.append(
                f"{_count(f.recommendations_purchased, 'recommendation')} "
                f"{_was(f.recommendations_purchased)} purchased, a conversion rate of {rate:.1f}%."
            )
        elif f.recommendations_purchased:
            sentences.append(
                f"{_count(f.recommendations_purchased, 'recommendation')} "
                f"{_was(f.recommendations_purchased)} purchased."
            )
        if f.orders or f.revenue_minor:
            sentences.append(
                f"{_count(f.orders, 'order')} {_was(f.orders)} placed, "
                f"{f.orders_from_recommendations} of them from recommendations, "
                f"with revenue of {format_money(f.revenue_minor, f.currency)}."
            )
        else:
            sentences.append("No orders were placed.")
        reviewed = (
            f.suggestions_pending
            + f.suggestions_approved
            + f.suggestions_rejected
            + f.suggestions_expired
        )
        if reviewed:
            sentences.append(
                f"Suggestions: {f.suggestions_pending} pending review, "
                f"{f.suggestions_approved} approved, {f.suggestions_rejected} rejected and "
                f"{f.suggestions_expired} expired."
            )
        if f.top_categories:
            listed = ", ".join(f"{name} ({count})" for name, count in f.top_categories)
            sentences.append(f"Categories by recommendations made: {listed}.")
        return " ".join(sentences)


def format_money(minor: int, currency: str | None) -> str:
    """Minor units as major units with thousands separators: 123450, "GBP" -> "GBP 1,234.50"."""
    sign = "-" if minor < 0 else ""
    major, cents = divmod(abs(minor), 100)
    amount = f"{sign}{major:,}.{cents:02d}"
    return f"{currency} {amount}" if currency else amount


def _no_activity(f: ActivityFigures) -> bool:
    counts = (
        f.recommendations_made,
        f.recommendations_withdrawn,
        f.patients_recommended,
        f.recommendations_purchased,
        f.orders,
        f.orders_from_recommendations,
        f.revenue_minor,
        f.suggestions_pending,
        f.suggestions_approved,
        f.suggestions_rejected,
        f.suggestions_expired,
    )
    return not any(counts) and not f.top_categories


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n:,} {noun}s"


def _was(n: int) -> str:
    return "was" if n == 1 else "were"
