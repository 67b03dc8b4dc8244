"""The Primoro-managed catalogue and per-practice settings: the single source of price and
availability for Product Shop and Hygiene Subscriptions (spec §3.1, §4.2, §15.3)."""
