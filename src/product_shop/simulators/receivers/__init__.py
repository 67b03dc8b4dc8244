"""The receiving modules simulator: Communication Hub, Finance, Financial Insights, Hygiene
Subscriptions and the module owners, as our relay reaches them (spec §11.2, §12): each a webhook
endpoint taking our events as signed, structured CloudEvents.

Contract (what `integrations.event_webhooks.WebhookSink` speaks):
- POST /{destination}, `content-type: application/cloudevents+json`, Standard Webhooks headers
  `webhook-id` (the event id), `webhook-timestamp`, `webhook-signature`, signed with that
  destination's own secret and checked within `tolerance_seconds` of the simulator's clock.
  200 `{"status": "received", "sequence": n}` records it; a webhook id already recorded at that
  destination answers 200 `{"status": "duplicate", "sequence": <the first's>}` and is counted,
  not recorded again. Refusals (problem+json, nothing recorded): 404 `unknown_destination`, 401
  `invalid_signature`, 415 `unsupported_media_type`, 400 `invalid_cloudevent` (not a JSON object
  with `specversion` "1.0" and string `id`, `source`, `type`) or `webhook_id_mismatch`.
- Faults per destination (see `controls`): `fail` (answer a status), `hang` (sleep, then answer
  a status), `slow` (sleep, then record), `down` (a status to everything). A failed or hung
  delivery is not recorded: the sender tries again, as it would against the real module.

Test controls under /_simulator (no secret): faults, what each destination received (filters
`type`, `subject`, `order_id`), counts per destination, clear.

Layout: `state` (configuration, inboxes, faults), `receiver` (the webhook endpoint), `controls`
(/_simulator). Routes reach the state through `common.Sim` (the app's `state.sim`).
"""

from __future__ import annotations

from fastapi import FastAPI

from product_shop.core.signing import LIBRARY_TOLERANCE_SECONDS, decode_secret
from product_shop.simulators.receivers import controls, receiver
from product_shop.simulators.receivers.state import (
    ReceivedEvent,
    ReceiverFault,
    ReceiversSimulatorConfig,
    State,
    demo_secrets,
)

__all__ = [
    "ReceivedEvent",
    "ReceiverFault",
    "ReceiversSimulatorConfig",
    "State",
    "create_receivers_simulator",
    "demo_secrets",
]


def create_receivers_simulator(config: ReceiversSimulatorConfig | None = None) -> FastAPI:
    config = config or ReceiversSimulatorConfig()
    if not 0 <= config.tolerance_seconds <= LIBRARY_TOLERANCE_SECONDS:
        raise ValueError(f"tolerance_seconds must be 0..{LIBRARY_TOLERANCE_SECONDS}")
    if not config.secrets:
        raise ValueError("give at least one destination's secret")
    for destination, secret in config.secrets.items():
        if not destination or "/" in destination or destination.startswith("_"):
            raise ValueError(f"{destination!r} cannot be a destination key")
        try:
            decode_secret(secret)  # ValueError now rather than a 401 at the first delivery
        except ValueError as exc:
            raise ValueError(f"the secret of {destination!r}: {exc}") from exc
    app = FastAPI(title="Receiving modules simulator", docs_url=None, redoc_url=None)
    app.state.sim = State(config=config)
    app.include_router(controls.router)
    app.include_router(receiver.router)
    return app
