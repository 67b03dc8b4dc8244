"""The Order aggregate: line items with per-line fulfilment state, the derived parent status and
the refund overlay (spec §3.2, §3.3)."""
