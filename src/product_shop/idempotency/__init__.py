"""Idempotency keys for creating POSTs (ARCHITECTURE.md invariant 3)."""
