"""Rewards Manager simulator (patients' loyalty points, spec §5.4, §11.1, §11.2).

Contract (what `integrations.rewards_http` speaks; see `integrations.rewards`; Bearer API key on
every route):
- GET  /v1/accounts/{patient_id}?practice_id=  -> the account: `enabled`, `balance_points`,
  `value_minor_per_point`, `currency` (GBP). A practice in `enabled_practices` has rewards at its
  value per point, and a patient first seen there starts with `default_balance_points`; any other
  practice has none (`enabled` false, 0 points, value 0).
- POST /v1/redemptions (Idempotency-Key) -> 202 the redemption, `pending` (ref `RM-RD-...`); the
  points are deducted at once. With `auto_confirm` it becomes `confirmed` (settlement ref
  `RM-ST-...`) `confirm_delay_seconds` later, when its signed `redemption.confirmed` callback is
  sent. Refusals (422): `rewards_disabled`, `amount_mismatch`, `insufficient_points`.
- POST /v1/redemptions/{ref}/reversals (Idempotency-Key) -> 202 the reversal, `pending` (ref
  `RM-RV-...`): min(points asked, points redeemed - already reversed) reinstated at once, then a
  signed `redemption.reversed` callback. 404 `redemption_not_found`.
- GET  /v1/redemptions/{ref} -> the redemption with `points_reversed`.
A repeated Idempotency-Key answers the first result; with another body it is 422
`idempotency_key_reused`. Callbacks (Standard Webhooks, their own secret) go to the configured
URL, sometimes twice (`duplicate_callback_rate`), as real modules send them.

Test controls under /_simulator (no API key): faults per operation (`account`, `redeem`,
`reverse`, `get_redemption`), configuration, balances, inspect redemptions and reversals,
confirm a redemption now (when auto_confirm is off), reset.

Layout: `state` (configuration, accounts, redemptions, reversals, keys, faults), `manager` (the
API), `callbacks` (confirmation and signed delivery), `controls` (/_simulator). Routes reach the
state through `common.Sim` (the app's `state.sim`), never through closures.
"""

from __future__ import annotations

from fastapi import FastAPI

from product_shop.core.signing import decode_secret
from product_shop.simulators.rewards import controls, manager
from product_shop.simulators.rewards.state import (
    CURRENCY,
    RedemptionRecord,
    ReversalRecord,
    RewardsSimulatorConfig,
    State,
)

__all__ = [
    "CURRENCY",
    "RedemptionRecord",
    "ReversalRecord",
    "RewardsSimulatorConfig",
    "State",
    "create_rewards_simulator",
]


def create_rewards_simulator(config: RewardsSimulatorConfig | None = None) -> FastAPI:
    config = config or RewardsSimulatorConfig()
    decode_secret(config.webhook_secret)  # ValueError now rather than at the first callback
    if not 0 <= config.duplicate_callback_rate <= 1:
        raise ValueError("duplicate_callback_rate must be between 0 and 1")
    if config.confirm_delay_seconds < 0:
        raise ValueError("confirm_delay_seconds may not be negative")
    if config.default_balance_points < 0:
        raise ValueError("default_balance_points may not be negative")
    for practice_id, value in config.enabled_practices.items():
        if type(value) is not int or value < 1:
            raise ValueError(
                f"the value per point of practice {practice_id!r} must be a whole number of "
                f"minor units, at least 1 (not {value!r})"
            )
    app = FastAPI(title="Rewards Manager simulator", docs_url=None, redoc_url=None)
    app.state.sim = State(config=config)
    app.include_router(manager.router)
    app.include_router(controls.router)
    return app
