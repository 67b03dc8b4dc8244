"""The AI of Product Shop (spec §7): engines that suggest catalogue products for an appointment
and write summaries for staff. It reads what it is given and returns text and rankings; it writes
nothing, and it imports no order, checkout, fulfilment, refund or payment code (the import
contract in pyproject.toml, `lint-imports`). What it returns becomes a *pending* suggestion that a
named clinician or staff member approves or rejects (recommendations/suggestions.py)."""
