"""`product-shop demo`: the embedded default on one laptop: SQLite, every simulator in-process,
demo data, and what to try printed at start."""

from __future__ import annotations

import argparse
import threading

import uvicorn

from product_shop.logging import configure_logging


def run_demo(args: argparse.Namespace) -> int:
    from product_shop.demo.runtime import (
        default_data_dir,
        demo_settings,
        end_demo_appointments,
        prepare,
        start_access_simulator,
        start_appointments_simulator,
        start_payments_simulator,
        start_receivers_simulator,
        start_rewards_simulator,
        start_suppliers_simulator,
    )
    from product_shop.web.app import create_app

    configure_logging("INFO", json=True)
    base = f"http://{args.host}:{args.port}"
    data_dir = (args.data_dir or default_data_dir()).resolve()  # as demo-users resolves it
    simulator = start_payments_simulator(demo_settings(data_dir), base)
    suppliers = start_suppliers_simulator(demo_settings(data_dir), base)
    rewards = start_rewards_simulator(demo_settings(data_dir), base)
    receivers = start_receivers_simulator(demo_settings(data_dir))
    appointments = start_appointments_simulator(demo_settings(data_dir), base)
    data_dir.mkdir(parents=True, exist_ok=True)
    access = start_access_simulator(data_dir, base)
    context = prepare(
        data_dir,
        payments_url=simulator.url,
        suppliers_url=suppliers.url,
        rewards_url=rewards.url,
        receivers_url=receivers.url,
        access_url=access.url,
        portal_url=base,
    )
    app = create_app(context=context)
    print(
        f"""
Product Shop demo — data in {data_dir}
  API            {base}/v1/catalogue
  API docs       {base}/docs   (OpenAPI: {base}/openapi.json)
  Health         {base}/healthz   {base}/readyz
  Staff portal   {base}/portal   (sign in at the Access Manager simulator, {access.url}: pick
                 a demo user; a refund asks for an authentication code, shown on the page)
  Patient app    {base}/app   (a preview of the mobile app: sign in as a demo patient, buy
                 what their clinician recommended on the simulator's card page, track it)

Get a token (every seeded user, fresh tokens; add --mfa for MFA tokens):
  .venv/bin/product-shop demo-users --json --data-dir {data_dir}
For example, as a patient of Harbour Dental Care:
  TOKEN=$(.venv/bin/product-shop demo-users --json --data-dir {data_dir} \\
    | python3 -c 'import json,sys; print([u for u in json.load(sys.stdin) \\
      if u["handle"]=="harbour-patient-amelia"][0]["token"])')
  curl -H "Authorization: Bearer $TOKEN" {base}/v1/catalogue

Buy something (Integrated Payments simulator at {simulator.url}):
  POST {base}/v1/checkouts  (Idempotency-Key header, {{"lines": [...], "delivery_address": ...}})
  POST <payment_url> {{"card_number": "4242424242424242"}}   (4000000000000002 is declined)
  POST {base}/v1/checkouts/<id>/complete   -> the order
Redeem points (Harbour patients; Rewards Manager simulator at {rewards.url}):
  GET  {base}/v1/me/rewards;  add "redeem_points": 500 to the checkout, then wait for
  `awaiting_payment` (or the order, when the points cover it all)
Drop-ship lines go to the supplier network simulator at {suppliers.url}
  (dispatched with tracking a few seconds after the order, delivered a little later).
What the other modules received (signed webhooks; receivers simulator at {receivers.url}):
  GET {receivers.url}/_simulator/communication_hub/received?order_id=<order id>
  GET {receivers.url}/_simulator/received   (counts per module)
  .venv/bin/product-shop events status   (backlog per destination; as platform_operator:
  GET {base}/v1/event-deliveries)
AI suggestions (Appointment Manager simulator at {appointments.url} ends three appointments):
  GET  {base}/v1/ai-suggestions?status=pending   (as harbour-staff or harbour-clinician)
  POST {base}/v1/ai-suggestions/<id>/approve  {{"note": "..."}}   -> the patient sees it in
  GET  {base}/v1/me/recommendations;   .../reject {{"reason": "..."}} keeps it from them
""",
        flush=True,
    )
    threading.Thread(
        target=end_demo_appointments,
        args=(appointments.url, base),
        name="demo-appointments",
        daemon=True,
    ).start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        simulator.stop()
        suppliers.stop()
        rewards.stop()
        receivers.stop()
        appointments.stop()
        access.stop()
        context.close()
    return 0
