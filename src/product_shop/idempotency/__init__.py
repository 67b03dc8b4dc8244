"""Idempotency keys for creating POSTs (docs/architecture.md, invariant 3)."""
