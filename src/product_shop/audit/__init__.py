"""Append-only, per-stream hash-chained audit log (spec §8)."""
